"""Ridge least squares from each layer's vectors to the model's output, in closed form from `Moments`, with the
ridge chosen per layer on texts the fit never saw.

For centred sums C_xx, C_xy and a ridge λ: A = (C_xx + λI)⁻¹ C_xy, b = ȳ - x̄ A (the intercept is not
penalised), so that y ≈ x A + b. λ = alpha · tr(C_xx) / hidden, alpha from RIDGE_GRID. With C_xx = Q diag(e) Qᵀ,
every alpha's error on the validation texts comes from a few products made once per layer (none per alpha):
SSE(alpha) = Σ|w|² - 2 Σ_i d_i g_i + dᵀ (K ∘ H) d, with d_i = 1 / (e_i + λ), M = Qᵀ C_xy, g_i = Σ_j M_ij (Qᵀ V_xy)_ij,
K = M Mᵀ, H = Qᵀ V_xx Q, and V the validation's sums about the fit's means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.fitted.moments import Moments

RIDGE_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
"""The ridges alpha tried, as multiples of the mean diagonal of C_xx; alpha = 0 is the minimum-norm least squares."""


@dataclass(frozen=True)
class RidgeChoice:
    """Per layer: the alpha chosen, its λ, and each alpha's squared error on the validation texts `[layers, grid]`."""

    alpha: list[float]
    ridge: list[float]
    errors: torch.Tensor


def _inverse(eigenvalues: torch.Tensor, ridge: float) -> torch.Tensor:
    """1 / (e + λ), with 0 where e + λ is nothing but rounding (the minimum-norm solution)."""
    shifted = eigenvalues + ridge
    floor = eigenvalues.abs().max() * eigenvalues.shape[0] * torch.finfo(eigenvalues.dtype).eps
    return torch.where(shifted > floor, 1 / shifted.clamp(min=floor), 0.0)


def ridge_scale(fit: Moments, layer: int) -> float:
    """λ for alpha = 1: the mean diagonal of the layer's C_xx."""
    return float(fit.xx[layer].diagonal().mean())


def choose_ridge(fit: Moments, validation: Moments, layers: list[int]) -> RidgeChoice:
    """For each of `layers`, the alpha of RIDGE_GRID whose map, fitted on `fit`, has the least squared error on
    `validation` (the smallest alpha among equals)."""
    errors = torch.full((fit.xx.shape[0], len(RIDGE_GRID)), torch.nan, dtype=torch.float64)
    alpha, ridge = [], []
    for layer in layers:
        v_xx, v_xy, v_yy = validation.about(layer, fit.x_mean[layer], fit.y_mean)
        eigenvalues, basis = torch.linalg.eigh(fit.xx[layer])
        product = basis.T @ fit.xy[layer]  # M
        cross = (product * (basis.T @ v_xy)).sum(1)  # g
        quadratic = (product @ product.T) * (basis.T @ v_xx @ basis)  # K ∘ H
        scale = ridge_scale(fit, layer)
        for column, multiple in enumerate(RIDGE_GRID):
            inverse = _inverse(eigenvalues, multiple * scale)
            errors[layer, column] = v_yy - 2 * inverse @ cross + inverse @ quadratic @ inverse
        best = int(torch.argmin(errors[layer]))
        alpha.append(RIDGE_GRID[best])
        ridge.append(RIDGE_GRID[best] * scale)
    return RidgeChoice(alpha, ridge, errors)


def ridge_map(moments: Moments, layer: int, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 map (A `[hidden, hidden]`, b `[hidden]`) of `layer` for ridge λ = `ridge`: a Cholesky solve,
    or the eigenbasis where λ is 0 or the system is singular (the minimum-norm solution)."""
    xx, xy = moments.xx[layer], moments.xy[layer]
    if ridge > 0:
        factor, info = torch.linalg.cholesky_ex(xx + ridge * torch.eye(len(xx), dtype=xx.dtype, device=xx.device))
        if int(info) == 0:
            weights = torch.cholesky_solve(xy, factor)
            return weights, moments.y_mean - moments.x_mean[layer] @ weights
    eigenvalues, basis = torch.linalg.eigh(xx)
    weights = basis @ (_inverse(eigenvalues, ridge).unsqueeze(1) * (basis.T @ xy))
    return weights, moments.y_mean - moments.x_mean[layer] @ weights
