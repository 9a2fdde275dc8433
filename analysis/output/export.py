"""Write an AnalysisResult as tidy CSV files plus provenance.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.charts import verdict_chart
from analysis.definitions import EXPORT_FILES, LENS_FILES
from analysis.report.lens import LensResult
from analysis.report.result import AnalysisResult


def result_tables(result: AnalysisResult) -> dict[str, object]:
    """The exported tables by file name, each restricted to its documented columns in order."""
    frames = {"metrics.csv": result.metrics, "neighbors.csv": result.neighbors, "overlap.csv": result.overlap}
    return {name: frames[name][list(columns)] for name, columns in EXPORT_FILES.items()}


def lens_tables(result: LensResult) -> dict[str, pd.DataFrame]:
    """The lens's exported tables by file name, each restricted to its documented columns in order."""
    frames = {"lens.csv": result.metrics, "lens_top.csv": result.top}
    return {name: frames[name][list(columns)] for name, columns in LENS_FILES.items()}


def write_export(result: AnalysisResult, out_dir: Path, lens: LensResult | None = None) -> list[Path]:
    """Write metrics.csv, neighbors.csv, overlap.csv, with `lens` lens.csv and lens_top.csv, and provenance.json
    (the lens's settings added) into `out_dir` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {**result_tables(result), **(lens_tables(lens) if lens is not None else {})}
    for name, frame in tables.items():
        path = out_dir / name
        frame.to_csv(path, index=False)
        written.append(path)
    record = result.provenance
    if lens is not None:
        record = {**record, **{key: value for key, value in lens.provenance.items() if key.startswith("lens_")}}
    provenance = out_dir / "provenance.json"
    provenance.write_text(json.dumps(record, indent=2) + "\n")
    written.append(provenance)
    return written


def write_verdict(verdict: pd.DataFrame, summary: str, provenance: dict, out_dir: Path) -> list[Path]:
    """Write verdict.csv, verdict.png, verdict.txt (the summary sentence) and provenance.json into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("verdict.csv", "verdict.png", "verdict.txt", "provenance.json")]
    verdict.to_csv(paths[0], index=False)
    verdict_chart(verdict).save(paths[1])
    paths[2].write_text(summary + "\n")
    paths[3].write_text(json.dumps(provenance, indent=2) + "\n")
    return paths
