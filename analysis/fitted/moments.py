"""Running first and second moments of (layer vector, model output) pairs in float64, one batch at a time: what a
ridge least-squares fit and its held-out error need, in O(layers x hidden²) memory whatever the token count.

Each batch is centred at its own means and merged with Chan's formula, so nothing large cancels:
with δ = mean_b - mean_a, C = C_a + C_b + δ_x δ_yᵀ n_a n_b / n. Everything is added in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Moments:
    """Centred sums over `count` tokens: `x_mean [layers, hidden]`, `y_mean [hidden]`, `xx [layers, hidden,
    hidden]` = Σ (x - x̄)(x - x̄)ᵀ, `xy [layers, hidden, hidden]` = Σ (x - x̄)(y - ȳ)ᵀ, `yy` = Σ |y - ȳ|²."""

    count: int
    x_mean: torch.Tensor
    y_mean: torch.Tensor
    xx: torch.Tensor
    xy: torch.Tensor
    yy: float

    @classmethod
    def empty(cls, layers: int, hidden: int, device: torch.device) -> Moments:
        """The moments of no tokens, ready to `add` batches to."""

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        squares = (layers, hidden, hidden)
        return cls(0, zeros(layers, hidden), zeros(hidden), zeros(*squares), zeros(*squares), 0.0)

    def add(self, vectors: torch.Tensor, outputs: torch.Tensor) -> None:
        """Add one batch, `vectors [layers, tokens, hidden]` against `outputs [tokens, hidden]`, in place: centred at
        its own means and merged (Chan's formula) one layer at a time in float64, so nothing the size of the
        moments is made again."""
        count = self.count + len(outputs)
        weight = self.count * len(outputs) / count
        y = outputs.double()
        y_mean = y.mean(0)
        y_centred = y - y_mean
        dy = y_mean - self.y_mean
        for layer in range(len(vectors)):
            x = vectors[layer].to(torch.float64, copy=True)
            x_mean = x.mean(0)
            x_centred = x.sub_(x_mean)
            dx = x_mean - self.x_mean[layer]
            self.xx[layer].addmm_(x_centred.T, x_centred).addr_(dx, dx, alpha=weight)
            self.xy[layer].addmm_(x_centred.T, y_centred).addr_(dx, dy, alpha=weight)
            self.x_mean[layer] += dx * (len(outputs) / count)
        self.yy += float(y_centred.square().sum()) + weight * float(dy.square().sum())
        self.y_mean += dy * (len(outputs) / count)
        self.count = count

    def absorb(self, other: Moments) -> None:
        """Add another token set's moments to these, in place (Chan's formula)."""
        count = self.count + other.count
        weight = self.count * other.count / count
        dx = other.x_mean - self.x_mean  # [layers, hidden]
        dy = other.y_mean - self.y_mean
        for layer in range(len(dx)):
            self.xx[layer].add_(other.xx[layer]).addr_(dx[layer], dx[layer], alpha=weight)
            self.xy[layer].add_(other.xy[layer]).addr_(dx[layer], dy, alpha=weight)
        self.x_mean += dx * (other.count / count)
        self.yy += other.yy + weight * float(dy.square().sum())
        self.y_mean += dy * (other.count / count)
        self.count = count

    def about(
        self, layer: int, x_centre: torch.Tensor, y_centre: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Layer `layer`'s second moments about other centres (another token set's means, `[hidden]` each):
        Σ (x - c_x)(x - c_x)ᵀ, Σ (x - c_x)(y - c_y)ᵀ and Σ |y - c_y|²."""
        dx = self.x_mean[layer] - x_centre
        dy = self.y_mean - y_centre
        return (
            self.xx[layer] + self.count * torch.outer(dx, dx),
            self.xy[layer] + self.count * torch.outer(dx, dy),
            self.yy + self.count * float(dy.square().sum()),
        )
