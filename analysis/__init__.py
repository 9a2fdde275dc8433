"""Token Trails analysis: how each token's encoding moves through a transformer, layer by layer.

import analysis
lm = analysis.load_model("roberta-base")
result = analysis.analyze(lm, "Time flies like an arrow.", stage="attn_residual", reference="position")
result.metrics  # layer, position, token, token_id, text, special, cosine, rank
analysis.lens(lm, "Time flies like an arrow.").metrics  # what each layer would predict: lens_rank, lens_prob, …

The names below load their modules (and torch) on first use, so `python -m analysis --help` and anything that
only needs `analysis.definitions` start at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from analysis.definitions import (
    BUNDLED_MODEL,
    GEOMETRIES,
    LENS_TARGETS,
    METHODS,
    REFERENCES,
    STAGES,
    Geometry,
    LensTarget,
    Method,
    Reference,
    Stage,
)
from analysis.settings import DEFAULTS, AnalysisSettings, SweepSettings
from analysis.version import __version__

if TYPE_CHECKING:  # what a type checker and an editor see; at run time __getattr__ below imports these
    from analysis.capture.heads import HeadDecomposition, decompose_heads
    from analysis.capture.trace import Trace, trace
    from analysis.model.architectures import UnsupportedModelError
    from analysis.model.capabilities import Capabilities, capabilities
    from analysis.model.checkpoint import ModelLoadError
    from analysis.model.loaded import LoadedModel, ModelInfo, wrap_model
    from analysis.model.loading import configure_model_cache, load_model, outline_model, release_models, resident_models
    from analysis.report.lens import LensResult, lens
    from analysis.report.original_demo import original_demo
    from analysis.report.result import AnalysisResult, analyze
    from analysis.scoring.geometry import Background, background

_LAZY = {
    "AnalysisResult": "analysis.report.result",
    "analyze": "analysis.report.result",
    "Background": "analysis.scoring.geometry",
    "background": "analysis.scoring.geometry",
    "Capabilities": "analysis.model.capabilities",
    "capabilities": "analysis.model.capabilities",
    "LoadedModel": "analysis.model.loaded",
    "ModelInfo": "analysis.model.loaded",
    "UnsupportedModelError": "analysis.model.architectures",
    "wrap_model": "analysis.model.loaded",
    "HeadDecomposition": "analysis.capture.heads",
    "decompose_heads": "analysis.capture.heads",
    "ModelLoadError": "analysis.model.checkpoint",
    "configure_model_cache": "analysis.model.loading",
    "load_model": "analysis.model.loading",
    "outline_model": "analysis.model.loading",
    "lens": "analysis.report.lens",
    "LensResult": "analysis.report.lens",
    "release_models": "analysis.model.loading",
    "resident_models": "analysis.model.loading",
    "original_demo": "analysis.report.original_demo",
    "Trace": "analysis.capture.trace",
    "trace": "analysis.capture.trace",
}


def __getattr__(name: str) -> object:
    """Load the module that defines `name` when it is first asked for (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BUNDLED_MODEL",
    "DEFAULTS",
    "GEOMETRIES",
    "LENS_TARGETS",
    "METHODS",
    "REFERENCES",
    "STAGES",
    "AnalysisResult",
    "AnalysisSettings",
    "Background",
    "Capabilities",
    "Geometry",
    "HeadDecomposition",
    "LensResult",
    "LensTarget",
    "LoadedModel",
    "Method",
    "ModelInfo",
    "ModelLoadError",
    "Reference",
    "Stage",
    "SweepSettings",
    "Trace",
    "UnsupportedModelError",
    "__version__",
    "analyze",
    "background",
    "capabilities",
    "configure_model_cache",
    "decompose_heads",
    "lens",
    "load_model",
    "original_demo",
    "outline_model",
    "release_models",
    "resident_models",
    "trace",
    "wrap_model",
]
