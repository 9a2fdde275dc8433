"""The package's version, and the one provenance record every output carries (app, export, verdict, sweep)."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def provenance(lm=None, **fields) -> dict:
    """What produced an output: the model (name, revision, architecture, dtype, device) when `lm` is given,
    the `fields` the caller adds (settings, counts), and the versions of Python and every library that computed
    it. Libraries are imported here, not at import time, so the command line's --help stays fast."""
    import pyarrow
    import torch
    import transformers

    model = {}
    if lm is not None:
        model = {
            "model": lm.name,
            "revision": lm.revision,
            "architecture": lm.architecture,
            "dtype": str(lm.hf_model.dtype).removeprefix("torch."),
            "device": str(lm.device),
        }
    return {
        **model,
        **fields,
        "analysis_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "pyarrow_version": pyarrow.__version__,
    }
