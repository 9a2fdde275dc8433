"""Exact per-head decomposition of `attn_residual` at one layer, for every block kind.

attn_residual = x + sum_h z_h W_O[:, h]^T + b_O, with x the block input, z_h head h's context as the model
computed it (A_h times its values: the input of the attention output projection, read by a hook) and W_O,
b_O that projection's weight and bias. The same holds in post-LN, pre-LN and parallel blocks and with
grouped-query attention (each query head has its own context; key/value heads are shared upstream of it).
Where an RMSNorm follows the attention (Gemma 2 and 3), each piece goes through it at its token's own scale,
which keeps the sum exact (`_through_rms_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analysis.capture.tokens import token_table
from analysis.capture.trace import Point, Trace, traced
from analysis.model.architectures import output_matrix
from analysis.model.loaded import LoadedModel


@dataclass(frozen=True)
class HeadDecomposition:
    """The pieces of `attn_residual` at one layer. Picklable: numpy and pandas only."""

    layer: int
    tokens: pd.DataFrame  # as AnalysisResult.tokens
    residual: np.ndarray  # [tokens, hidden] block input x
    head_contributions: np.ndarray  # [heads, tokens, hidden]
    output_bias: np.ndarray  # [hidden] b_O (zeros where none); [tokens, hidden] where a norm follows the attention
    attn_residual: np.ndarray  # [tokens, hidden] captured from the model's forward pass
    attention: np.ndarray  # [heads, tokens (query), tokens (key)], rows sum to 1 (0 above the diagonal if causal)

    def reconstructed(self) -> np.ndarray:
        """residual + sum of head contributions + output bias: `[tokens, hidden]`."""
        return self.residual + self.head_contributions.sum(0) + self.output_bias

    def attention_delta(self) -> np.ndarray:
        """What the attention sublayer adds to the residual stream: `[tokens, hidden]`."""
        return self.head_contributions.sum(0) + self.output_bias


HEAD_POINTS: tuple[Point, ...] = ("layer_input", "attn_residual", "attention", "head_context")
"""What a trace must hold for the head decomposition."""


def decompose_heads(lm: LoadedModel, text: str | Trace, layer: int) -> HeadDecomposition:
    """Layer `layer`'s attn_residual split into its input, each head's contribution and the output bias, from a
    text (run once here) or a trace of it holding `HEAD_POINTS`."""
    n_layers = lm.num_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be a whole number from 0 to {n_layers - 1}, not {layer!r}.")
    run = traced(lm, text, HEAD_POINTS)
    parts = lm.structure.layers[layer]
    heads = lm.num_heads
    projection = parts.out_projection
    with torch.inference_mode():
        contexts = run.at("head_context", layer).cpu().double()  # [tokens, heads * head_dim]; float64 on the CPU
        per_head = contexts.view(len(contexts), heads, -1).transpose(0, 1)  # [heads, tokens, head_dim]
        out_weight = output_matrix(projection).cpu().double()  # [hidden, heads * head_dim]
        per_head_out = out_weight.view(out_weight.shape[0], heads, -1).transpose(0, 1)  # [heads, hidden, head_dim]
        contributions = per_head @ per_head_out.transpose(1, 2)
        bias = projection.bias.detach().double().cpu() if projection.bias is not None else torch.zeros(len(out_weight))
        if parts.attention_norm is not None:
            contributions, bias = _through_rms_norm(parts.attention_norm, contributions, bias)
        attn_residual = run.at("attn_residual", layer)
    return HeadDecomposition(
        layer=layer,
        tokens=token_table(run.tokens[0], run.texts[0]),
        residual=run.at("layer_input", layer).double().cpu().numpy(),
        head_contributions=contributions.cpu().numpy(),
        output_bias=bias.numpy(),
        attn_residual=attn_residual.double().cpu().numpy(),
        attention=run.at("attention", layer).double().cpu().numpy(),
    )


def _through_rms_norm(
    norm: torch.nn.Module, contributions: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pieces of norm(a), a = sum_h c_h + b the attention's output (`contributions [heads, tokens, hidden]`,
    `bias [hidden]`, float64): an RMSNorm is g * a / rms(a) with rms(a) = sqrt(mean(a^2) + eps), linear in a for
    each token's own rms, so norm(a) = sum_h g * c_h / rms(a) + g * b / rms(a). The gain g (Gemma's 1 + w
    included) is read from the module itself: norm(1) = g / sqrt(1 + eps). Returns the normed pieces and the
    bias's `[tokens, hidden]`."""
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 0.0)))
    weight = next(norm.parameters())
    ones = torch.ones(weight.shape[-1], dtype=weight.dtype, device=weight.device)
    gain = norm(ones).double().cpu() * (1 + eps) ** 0.5
    total = contributions.sum(0) + bias
    scale = gain / (total.pow(2).mean(-1, keepdim=True) + eps).sqrt()  # [tokens, hidden]
    return contributions * scale, bias * scale


@dataclass(frozen=True)
class HeadAttribution:
    """Exact split of each token's change in cosine to its reference across `attn_residual`'s pieces.

    With a = x + sum_h c_h + b and r the unit reference direction, cos(a, r) - cos(x, r) =
    sum_h (c_h . r) / |a| + (b . r) / |a| + (x . r) (1/|a| - 1/|x|): each head's push along its token's own
    reference, the output bias's, and the rescaling of the residual by the new norm.
    """

    per_head: np.ndarray  # [heads, tokens]
    bias: np.ndarray  # [tokens]
    rescaling: np.ndarray  # [tokens]
    total: np.ndarray  # [tokens] cos(attn_residual, ref) - cos(residual, ref)


def attribute_heads(parts: HeadDecomposition, references: np.ndarray) -> HeadAttribution:
    """Split the change in cosine at `parts.layer`; references `[tokens, hidden]` are each token's own."""
    direction = references / np.linalg.norm(references, axis=-1, keepdims=True)
    after = parts.attn_residual
    after_norm = np.linalg.norm(after, axis=-1)
    before_norm = np.linalg.norm(parts.residual, axis=-1)
    residual_along = (parts.residual * direction).sum(-1)
    return HeadAttribution(
        per_head=(parts.head_contributions * direction).sum(-1) / after_norm,
        bias=(parts.output_bias * direction).sum(-1) / after_norm,
        rescaling=residual_along * (1 / after_norm - 1 / before_norm),
        total=(after * direction).sum(-1) / after_norm - residual_along / before_norm,
    )


def attention_shares(parts: HeadDecomposition, key_groups: pd.Series) -> pd.DataFrame:
    """Per head, the share of attention (averaged over query tokens) that lands on each group of key tokens.

    `key_groups` names each position's group (e.g. special / punctuation / other); rows sum to 1.
    """
    groups = list(dict.fromkeys(key_groups))
    mass = {group: parts.attention[:, :, (key_groups == group).to_numpy()].sum(-1).mean(-1) for group in groups}
    frame = pd.DataFrame(mass)
    frame.index.name = "head"
    return frame


def outlier_dimensions(vectors: np.ndarray, layer: int, top: int = 8) -> pd.DataFrame:
    """The hidden dimensions that carry most of the change into `layer` (vectors `[layers, tokens, hidden]`),
    with their share of the squared change there and into the previous layer."""
    if not 1 <= layer < len(vectors):
        raise ValueError(f"The change into layer {layer} needs layers {layer - 1} and {layer}.")

    def shares(into: int) -> np.ndarray:
        change = (vectors[into] - vectors[into - 1]) ** 2
        return change.sum(0) / change.sum()

    here = shares(layer)
    before = shares(layer - 1) if layer >= 2 else np.full_like(here, np.nan)
    order = np.argsort(here)[::-1][:top]
    return pd.DataFrame(
        {
            "dimension": order,
            f"share of change into layer {layer}": here[order],
            f"share of change into layer {layer - 1}": before[order],
        }
    )
