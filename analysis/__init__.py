"""Token Trails analysis: how each token's encoding moves through a transformer, layer by layer.

import analysis
encoder = analysis.load_model("roberta-base")
result = analysis.analyze(encoder, "Time flies like an arrow.", stage="attn_residual", reference="position")
result.metrics  # layer, position, token, token_id, text, special, cosine, rank
"""

from analysis.capabilities import Capabilities, capabilities
from analysis.capture import STAGES, Stage
from analysis.encoder import EncoderModel, ModelInfo, UnsupportedModelError, wrap_model
from analysis.geometry import GEOMETRIES, Background, Geometry, background
from analysis.heads import HeadDecomposition, decompose_heads
from analysis.loading import (
    BUNDLED_MODEL,
    ModelLoadError,
    configure_model_cache,
    load_model,
    release_models,
    resident_models,
)
from analysis.original_demo import original_demo
from analysis.references import REFERENCES, Reference
from analysis.trace import AnalysisResult, analyze
from analysis.version import __version__

__all__ = [
    "BUNDLED_MODEL",
    "GEOMETRIES",
    "REFERENCES",
    "STAGES",
    "AnalysisResult",
    "Background",
    "Capabilities",
    "EncoderModel",
    "Geometry",
    "HeadDecomposition",
    "ModelInfo",
    "ModelLoadError",
    "Reference",
    "Stage",
    "UnsupportedModelError",
    "__version__",
    "analyze",
    "background",
    "capabilities",
    "configure_model_cache",
    "decompose_heads",
    "load_model",
    "original_demo",
    "release_models",
    "resident_models",
    "wrap_model",
]
