"""Running first and second moments of (layer vector, model output) pairs in float64, one batch at a time: what a
ridge least-squares fit and its held-out error need, in O(layers x hidden²) memory whatever the token count.

Each batch is centred at its own means and merged with Chan's formula, so nothing large cancels:
with δ = mean_b - mean_a, C = C_a + C_b + δ_x δ_yᵀ n_a n_b / n.
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
    def of(cls, vectors: torch.Tensor, outputs: torch.Tensor) -> Moments:
        """The moments of one batch: `vectors [layers, tokens, hidden]` against `outputs [tokens, hidden]`."""
        x = vectors.double()
        y = outputs.double()
        x_mean, y_mean = x.mean(1), y.mean(0)
        x_centred = x - x_mean.unsqueeze(1)
        y_centred = y - y_mean
        return cls(
            count=y.shape[0],
            x_mean=x_mean,
            y_mean=y_mean,
            xx=x_centred.transpose(1, 2) @ x_centred,
            xy=x_centred.transpose(1, 2) @ y_centred,
            yy=float(y_centred.square().sum()),
        )

    def merged(self, other: Moments | None) -> Moments:
        """The moments of both token sets (Chan's formula), formed in these moments' tensors (which are used up);
        `other` None: these."""
        if other is None:
            return self
        count = self.count + other.count
        weight = self.count * other.count / count
        dx = other.x_mean - self.x_mean  # [layers, hidden]
        dy = other.y_mean - self.y_mean
        return Moments(
            count=count,
            x_mean=self.x_mean + dx * (other.count / count),
            y_mean=self.y_mean + dy * (other.count / count),
            xx=self.xx.add_(other.xx).baddbmm_(dx.unsqueeze(2), dx.unsqueeze(1), alpha=weight),
            xy=self.xy.add_(other.xy).baddbmm_(dx.unsqueeze(2), dy.expand_as(dx).unsqueeze(1), alpha=weight),
            yy=self.yy + other.yy + weight * float(dy.square().sum()),
        )

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
