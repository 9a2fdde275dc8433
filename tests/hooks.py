"""What hooks a model carries, to check that an analysis leaves none of its own behind; one stage of one text
read through a trace."""

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
