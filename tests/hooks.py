"""What hooks a model carries, to check that an analysis leaves none of its own behind."""


def installed_hooks(encoder) -> set[tuple[int, str, int]]:
    """(module id, hook kind, hook key) for every forward and pre-forward hook on the model."""
    return {
        (id(module), kind, key)
        for module in encoder.hf_model.modules()
        for kind, hooks in (("forward", module._forward_hooks), ("pre", module._forward_pre_hooks))
        for key in hooks
    }
