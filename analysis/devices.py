"""Which device a model runs on: `auto` picks CUDA or Apple's MPS where torch sees one, else the CPU."""

from __future__ import annotations

import torch

from analysis.definitions import DEVICES


def resolve_device(name: str) -> torch.device:
    """The torch device for `name` (one of DEVICES); a ValueError for one this machine does not have."""
    if name not in DEVICES:
        raise ValueError(f"Unknown device {name!r}: choose one of {', '.join(DEVICES)}.")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(f"torch sees no {name} device on this machine; use --device cpu or auto.")
    return torch.device(name)
