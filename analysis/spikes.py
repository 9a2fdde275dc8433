"""Rank spikes: tokens that leap far down the vocabulary ranking at one layer and come back at the next."""

from __future__ import annotations

import numpy as np
import pandas as pd

LEAP_FACTOR = 10
SPIKE_DEFINITION = (
    f"A token spikes at layer l when its rank there is at least {LEAP_FACTOR} times its rank at l-1 and at l+1 "
    "(at layer 0, l-1 is its own original embedding, rank 1); a layer's spike share is the share of tokens that "
    "spike there, and the last layer has none because nothing follows it."
)


def spike_mask(ranks: np.ndarray) -> np.ndarray:
    """Whether each token spikes at each layer (SPIKE_DEFINITION): ranks `[layers, tokens]` → bool, same shape."""
    before = np.vstack([np.ones_like(ranks[:1]), ranks[:-1]])
    spikes = ranks >= LEAP_FACTOR * before
    spikes[:-1] &= ranks[:-1] >= LEAP_FACTOR * ranks[1:]
    spikes[-1] = False
    return spikes


def token_spikes(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, position): rank at l-1, l and l+1 and whether the token spikes. `AnalysisResult.metrics` in."""
    ranks = metrics.pivot(index="position", columns="layer", values="rank").sort_index(axis=1)
    n_layers = ranks.shape[1]
    before = ranks.shift(1, axis=1).fillna(1)
    after = ranks.shift(-1, axis=1)
    spikes = pd.DataFrame(spike_mask(ranks.to_numpy().T).T, index=ranks.index, columns=ranks.columns)
    frame = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), len(ranks)),
            "position": np.tile(ranks.index.to_numpy(), n_layers),
            "rank_before": before.to_numpy().T.reshape(-1).astype(int),
            "rank": ranks.to_numpy().T.reshape(-1),
            "rank_after": pd.array(after.to_numpy().T.reshape(-1), dtype="Int64"),
            "spike": spikes.to_numpy().T.reshape(-1),
        }
    )
    return frame.merge(metrics[["layer", "position", "token", "text", "special"]], on=["layer", "position"])


def spike_shares(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per layer: how many tokens spike (`spikes`), out of how many (`tokens`), and the `share` (NaN at the last
    layer, which cannot spike)."""
    flags = token_spikes(metrics)
    shares = flags.groupby("layer").agg(spikes=("spike", "sum"), tokens=("spike", "size")).reset_index()
    shares["share"] = shares["spikes"] / shares["tokens"]
    shares.loc[shares["layer"] == shares["layer"].max(), "share"] = np.nan
    return shares


def top_spike_layer(metrics: pd.DataFrame) -> int:
    """The layer with the highest spike share (the earliest on ties; layer 0 when no layer has any)."""
    shares = spike_shares(metrics).dropna(subset=["share"])
    return int(shares.loc[shares["share"].idxmax(), "layer"]) if len(shares) else 0
