"""report: what the package's front returns for one text: `analyze` (an `AnalysisResult`), `lens` (a `LensResult`),
the original demo's computation, and comparisons of two models' results."""
