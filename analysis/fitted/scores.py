"""Held-out scores per lens and layer: how close each lens's reading of a layer is to what the model itself
computes, on texts no fit ever saw. r² in hidden space over every held-out token; KL(final || lens), top-1
agreement and the target's rank over the first `score_tokens` of them (each costs a product with the whole
vocabulary per layer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.fitted.lens import FittedLens
from analysis.scoring.logits import NO_TARGET, lens_scores

SCORE_COLUMNS = {
    "lens": "plain (the model's head reads the layer's vector as it is), linear or tuned",
    "layer": "block index l",
    "r2": "1 - Σ|y - ŷ|² / Σ|y - ȳ|² over the held-out tokens: y the model's last-layer output, ŷ this layer's "
    "vector through the lens's map (plain: the vector itself)",
    "kl_final": "mean KL(final || lens) in nats over the scored held-out tokens (empty without a head)",
    "top1_agreement": "share of the scored held-out tokens whose top-1 through this lens is the model's own top-1",
    "target_rank": "median rank of the target (own token for encoders, next for decoders); 1 = top prediction",
    "tokens": "held-out tokens in r2",
    "scored_tokens": "held-out tokens in the vocabulary scores",
}


class HeldOutTally:
    """Running sums of each lens's held-out scores, batch by batch: `lenses` maps a name to its fitted lens (None:
    the plain lens); `unembed` None: a model without a head, r² only."""

    def __init__(self, lenses: dict[str, FittedLens | None], unembed: nn.Module | None, vocabulary: int,
                 score_tokens: int) -> None:  # fmt: skip
        self.lenses = lenses
        self.unembed = unembed
        self.vocabulary = vocabulary
        self.score_tokens = score_tokens
        self.count = 0
        self.y_sum: torch.Tensor | None = None
        self.y_squares = 0.0
        self.errors: dict[str, torch.Tensor] = {}
        self.scored: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in lenses}
        self.scored_targets: list[torch.Tensor] = []

    def add(self, vectors: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch: `vectors [layers, tokens, hidden]` at the lens's stage, `outputs [tokens, hidden]` the
        model's last-layer output, `targets [tokens]` (NO_TARGET: none)."""
        y = outputs.double()
        self.count += len(y)
        self.y_sum = y.sum(0) if self.y_sum is None else self.y_sum + y.sum(0)
        self.y_squares += float(y.square().sum())
        room = max(0, self.score_tokens - self.scored_count)
        for name, fitted in self.lenses.items():
            read = vectors if fitted is None else fitted.apply(vectors)
            error = (read.double() - y).square().sum((1, 2))  # [layers]
            self.errors[name] = error if name not in self.errors else self.errors[name] + error
            if self.unembed is not None and room:
                scores = lens_scores(self.unembed, read[:, :room], targets[:room], 1, self.vocabulary, outputs[:room])
                found = self.scored[name]
                agree = scores.top_ids[..., 0] == scores.final_top
                for key, value in (("kl", scores.kl_final), ("agree", agree), ("rank", scores.target_rank)):
                    found.setdefault(key, []).append(value.cpu())
        if self.unembed is not None and room:
            self.scored_targets.append(targets[:room].cpu())

    @property
    def scored_count(self) -> int:
        return sum(len(targets) for targets in self.scored_targets)

    def records(self) -> list[dict]:
        """`table` as JSON-ready records (what a fitted lens's record holds)."""
        return self.table().to_dict("records")

    def table(self) -> pd.DataFrame:
        """SCORE_COLUMNS, one row per lens and layer."""
        assert self.y_sum is not None, "no held-out tokens were added"
        total = self.y_squares - float(self.y_sum.square().sum()) / self.count  # Σ|y - ȳ|²
        frames = []
        for name in self.lenses:
            layers = len(self.errors[name])
            frame = pd.DataFrame({"lens": name, "layer": np.arange(layers)})
            frame["r2"] = 1 - self.errors[name].cpu().numpy() / total
            frame["kl_final"], frame["top1_agreement"], frame["target_rank"] = self._vocabulary_scores(name, layers)
            frame["tokens"] = self.count
            frame["scored_tokens"] = self.scored_count
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)[list(SCORE_COLUMNS)]

    def _vocabulary_scores(self, name: str, layers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self.scored[name]
        if not found:
            empty = np.full(layers, np.nan)
            return empty, empty, empty
        kl, agree, rank = (torch.cat(found[key], dim=1).numpy() for key in ("kl", "agree", "rank"))
        has_target = torch.cat(self.scored_targets).numpy() != NO_TARGET
        ranks = rank[:, has_target].astype(np.float64)
        median = np.median(ranks, axis=1) if ranks.shape[1] else np.full(layers, np.nan)
        return kl.astype(np.float64).mean(1), agree.mean(1), median
