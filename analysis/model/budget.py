"""How long a text may be: the memory one pass over it holds beyond the model, and the most tokens within a budget.

A pass over a text of n tokens holds, in float32 (4 bytes a number), at its peak (measured on the app's path,
which keeps every stage, each layer's attention weights and head contexts: `benchmarks/bench_hostile_memory.py`):
- attention weights, `heads x (layers + SQUARE_COPIES) x n²`: every layer's kept, and the scores, masked scores
  and probabilities of the layer being computed. This term is quadratic: it is what a long text runs out of;
- per-token vectors, `VECTOR_COPIES x (layers + 1) x hidden x n`: the recorded stages, their stacked copies and
  the scores read from them;
- the feed-forward's inner activations, `INNER_COPIES x inner x n`.
The products with the vocabulary are taken in blocks of a fixed size whatever n is (`LENS_BLOCK_BYTES`,
`SCORE_BLOCK_BYTES`), so they are not counted here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig
from dataclasses import dataclass

TEXT_MEMORY_BYTES = 2 * 2**30
"""The working memory one text may take beyond the model, at least: a model larger than twice this gets half its
own size (a machine that holds a 28 GB model has room for more than one that holds 0.5 GB)."""
SQUARE_COPIES = 3
VECTOR_COPIES = 14
INNER_COPIES = 2
FLOAT_BYTES = 4
INNER_SIZES = ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "d_ff", "ffn_hidden_size")
"""Each family's name for the feed-forward's inner width (4 x hidden where a config leaves it out)."""


@dataclass(frozen=True)
class PassShape:
    """The sizes that set a pass's working memory."""

    layers: int
    hidden: int
    heads: int
    inner: int

    def bytes_for(self, tokens: int, texts: int = 1) -> int:
        """Peak working memory of one pass over `texts` texts of `tokens` tokens each."""
        square = self.heads * (self.layers + SQUARE_COPIES) * tokens**2
        linear = (VECTOR_COPIES * (self.layers + 1) * self.hidden + INNER_COPIES * self.inner) * tokens
        return FLOAT_BYTES * texts * (square + linear)

    def tokens_within(self, budget_bytes: int) -> int:
        """The most tokens one text may have for `bytes_for` to stay within `budget_bytes` (0 where none fits)."""
        square = self.heads * (self.layers + SQUARE_COPIES)
        linear = VECTOR_COPIES * (self.layers + 1) * self.hidden + INNER_COPIES * self.inner
        numbers = budget_bytes // FLOAT_BYTES
        tokens = (math.isqrt(linear**2 + 4 * square * numbers) - linear) // (2 * square)
        while self.bytes_for(tokens + 1) <= budget_bytes:
            tokens += 1
        while tokens > 0 and self.bytes_for(tokens) > budget_bytes:
            tokens -= 1
        return tokens


def pass_shape(config: PretrainedConfig, layers: int, heads: int) -> PassShape:
    """The pass shape of a model with `config` (a transformers config), `layers` blocks and `heads` heads."""
    hidden = config.hidden_size
    inner = next((value for name in INNER_SIZES if isinstance(value := getattr(config, name, None), int)), None)
    return PassShape(layers=layers, hidden=hidden, heads=heads, inner=inner or 4 * hidden)


def text_budget(parameter_bytes: int) -> int:
    """The working memory a text may take beside a model whose parameters hold `parameter_bytes`."""
    return max(TEXT_MEMORY_BYTES, parameter_bytes // 2)
