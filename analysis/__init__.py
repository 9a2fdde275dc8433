"""Token Trails analysis: how each token's encoding moves through an encoder, layer by layer.

import analysis
encoder = analysis.load_model("roberta-base")
result = analysis.analyze(encoder, "Time flies like an arrow.", stage="attn_residual", reference="position")
result.metrics  # layer, position, token, token_id, text, special, cosine, rank
"""

from analysis.analyze import AnalysisResult, analyze
from analysis.capture import STAGES
from analysis.encoder import EncoderModel, UnsupportedModelError, wrap_model
from analysis.heads import HeadDecomposition, decompose_heads
from analysis.loading import BUNDLED_MODEL, ModelLoadError, load_model, release_models
from analysis.references import REFERENCES
from analysis.version import __version__

__all__ = [
    "BUNDLED_MODEL",
    "REFERENCES",
    "STAGES",
    "AnalysisResult",
    "EncoderModel",
    "HeadDecomposition",
    "ModelLoadError",
    "UnsupportedModelError",
    "__version__",
    "analyze",
    "decompose_heads",
    "load_model",
    "release_models",
    "wrap_model",
]
