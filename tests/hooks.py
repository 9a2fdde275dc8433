"""What hooks a model carries, to check that an analysis leaves none of its own behind; one stage of one text
read through a trace."""

import contextlib
from collections.abc import Iterator

from analysis.capture.trace import trace


def stage_vectors(lm, text: str, stage: str):
    """(tokens, `[layers, tokens, hidden]` vectors) of `text` at `stage`, from one traced forward pass."""
    run = trace(lm, text, [stage])
    return run.tokens[0], run.stage(stage)


def installed_hooks(lm) -> set[tuple[int, str, int]]:
    """(module id, hook kind, hook key) for every forward and pre-forward hook on the model."""
    return {
        (id(module), kind, key)
        for module in lm.hf_model.modules()
        for kind, hooks in (("forward", module._forward_hooks), ("pre", module._forward_pre_hooks))
        for key in hooks
    }


@contextlib.contextmanager
def forward_passes(lm, text: str) -> Iterator[list[int]]:
    """A list that grows by one for every forward pass of `lm` over exactly `text` alone, while the block runs."""
    ids = lm.tokenizer(text)["input_ids"]
    calls: list[int] = []

    def count(module, args, kwargs):
        if kwargs["input_ids"].shape[0] == 1 and kwargs["input_ids"][0].tolist() == ids:
            calls.append(1)

    handle = lm.hf_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()
