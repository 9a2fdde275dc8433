"""Read a model's structure from what it does, for a model type the family table does not name.

One short forward pass on placeholder ids, with hooks on every module, shows which module is which:
- the blocks: the one module list as long as the config's layer count;
- the attention: the block's module whose output carries the attention weights `[texts, heads, tokens, tokens]`;
- its output projection: the hidden-size linear layer that reads its context (not its input, as the query, key
  and value projections do);
- the block kind, from what each norm of the block reads: the block input plus the attention's output (post_ln
  when the attention read the raw input, pre_ln when it read a norm of it), the attention's output alone (its
  norm: Gemma-2-style sandwich, or OLMo-2-style norm_after when nothing normalises the block input), or
  neither (parallel: attention and MLP read the same normalised input, accepted only where some module outputs
  exactly what the block adds beyond its input and the attention's output);
- outside the blocks: the norm whose output block 0 reads (the embedding norm), the norm that reads the last
  block's output (the final norm), and the position and token-type tables among the other embedding tables.
The family found this way is read like any other and checked against the model's own forward pass on every
load (`analysis.capture.selfcheck`): a structure read wrongly is refused, never drawn. A discovered decoder's lens
is its output embedding after the final norm found here (`analysis.model.unembed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from analysis.model.architectures import Family, is_norm, linear_like, unsupported
from analysis.model.checkpoint import first_line

PROBE_TOKENS = 6


@dataclass(eq=False)
class _Call:
    """One module's run in the probe: its path, the module, copies of its first tensor input and its first tensor
    output (a model may change them in place afterwards: Falcon adds the attention into its MLP's output), and
    the attention weights it returned, if any."""

    path: str
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor | None
    weights: torch.Tensor | None


def discover_family(hf_model: nn.Module) -> Family:
    """The family of `hf_model` (a base model) read from a probe pass; UnsupportedModelError naming what was
    found and what was missing."""
    config = hf_model.config
    layers = getattr(config, "num_hidden_layers", None)
    lists = [(path, m) for path, m in hf_model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == layers]
    if len(lists) != 1:
        found = "; ".join(f"{len(m)} {type(m[0]).__name__} at {path!r}" for path, m in lists) or "none"
        raise unsupported(hf_model, f"no single list of its {layers} blocks was found (found: {found})")
    blocks_path, blocks = lists[0]
    calls = _probe(hf_model)
    read = f"{blocks_path}.{len(blocks) - 1}"  # the last block: a first may differ (ModernBERT's has no norm)
    in_block = [c for c in calls if c.path.startswith(read + ".")]
    block_call = next(c for c in calls if c.path == read)
    x = block_call.input
    if x is None:
        raise unsupported(hf_model, "its blocks take no tensor input")
    attention = next((c for c in in_block if c.weights is not None), None)
    if attention is None:
        raise unsupported(hf_model, "no module of its blocks returned attention weights")
    projection = _out_projection(in_block, attention, x.shape[-1])
    if projection is None:
        raise unsupported(
            hf_model, f"the attention ({attention.path.removeprefix(read + '.')!r}) has no output projection"
        )
    update = projection.output  # what the attention adds to the residual stream (before any norm of it)
    norms = [c for c in in_block if is_norm(c.module) and not c.path.startswith(attention.path + ".")]
    reads_input = _close(attention.input, x)
    after_sum = next((n for n in norms if _close(n.input, _plus(x, update))), None)
    on_update = next((n for n in norms if _close(n.input, update)), None)
    kind, mid_norm, attention_norm, mlp = _kind(reads_input, after_sum, on_update, norms, in_block, x, update)
    if kind == "parallel" and not _adds_up(in_block, x, update, block_call.output):
        kind = None  # attention and MLP side by side must add up to the block's output: nothing else is assumed
    if kind is None:
        raise unsupported(hf_model, "no norm of its blocks reads the block input plus the attention's output")
    relative = lambda call: None if call is None else call.path.removeprefix(read + ".")  # noqa: E731
    outside = [c for c in calls if not c.path.startswith(blocks_path + ".")]
    return Family(
        label=f"{config.model_type} (structure read from the model: {kind})",
        kind=kind,
        blocks=blocks_path,
        attention=attention.path.removeprefix(read + "."),
        out_projection=projection.path.removeprefix(read + "."),
        mid_norm=relative(mid_norm),
        position=_table(hf_model, outside, getattr(config, "max_position_embeddings", None)),
        token_type=_table(hf_model, outside, getattr(config, "type_vocab_size", None)),
        embedding_norm=_embedding_norm(outside, calls, blocks_path),
        causal=_causal(attention.weights),
        final_norm=_final_norm(outside, block_call),
        attention_norm=relative(attention_norm),
        mlp=relative(mlp),
    )


def _kind(reads_input, after_sum, on_update, norms, in_block, x, update):
    """(kind, mid_norm, attention_norm, mlp) from what the block's norms read."""
    if on_update is not None:  # the attention's output is normalised before the residual sum
        residual = _plus(x, on_update.output)
        if reads_input:  # nothing normalises the block input: OLMo-2-style
            mlp = next((c for c in in_block if c not in norms and c.module is not None and _close(c.input, residual)
                        and not linear_like(c.module)), None)  # fmt: skip
            return ("norm_after", None, on_update, mlp) if mlp is not None else (None, None, None, None)
        mid = next((n for n in norms if _close(n.input, residual)), None)
        return ("pre_ln", mid, on_update, None) if mid is not None else (None, None, None, None)
    if after_sum is not None:
        return ("post_ln" if reads_input else "pre_ln", after_sum, None, None)
    if not reads_input:
        return ("parallel", None, None, None)
    return (None, None, None, None)


def _out_projection(in_block: list[_Call], attention: _Call, hidden: int) -> _Call | None:
    """The attention's output projection: the last hidden-size linear layer not reading the attention's input (no
    query, key or value projection) that finished inside the attention
    module (Llama's o_proj, GPT-2's c_proj), or else the first that finished after it (BERT's attention.output.dense,
    outside the module returning the weights). Calls are listed as they finish."""
    linear = [c for c in in_block if linear_like(c.module) and c.output is not None and c.output.shape[-1] == hidden
              and not _close(c.input, attention.input)]  # not a query, key or value projection  # fmt: skip
    inside = [c for c in linear if c.path.startswith(attention.path + ".")]
    if inside:
        return inside[-1]
    after = in_block.index(attention)
    return next((c for c in linear if in_block.index(c) > after), None)


def _adds_up(in_block: list[_Call], x: torch.Tensor, update: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether some module of the block (its MLP) output exactly what the block adds beyond x + update."""
    rest = output - x - update if output is not None and output.shape == x.shape == update.shape else None
    return rest is not None and any(_close(c.output, rest) for c in in_block)


def _probe(hf_model: nn.Module) -> list[_Call]:
    """Every module's calls during one pass over placeholder ids, in the order they ran."""
    calls: list[_Call] = []
    handles = []
    for path, module in hf_model.named_modules():
        if not path:
            continue

        def hook(module, args, kwargs, output, path=path):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states")
            result = _tensor(output)
            weights = output[1] if _carries_weights(output) else None
            calls.append(_Call(path, module, _copy(first), _copy(result), weights))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    device = next(hf_model.parameters()).device
    ids = (torch.arange(PROBE_TOKENS, device=device).unsqueeze(0) + 3) % hf_model.get_input_embeddings().num_embeddings
    training = hf_model.training
    hf_model.eval()  # dropout off: every sum below is exact
    try:
        with torch.inference_mode():
            hf_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    except Exception as error:  # the model's own refusal of the probe: its structure cannot be read this way
        why = f"a probe pass to read its structure failed ({type(error).__name__}: {first_line(error)})"
        raise unsupported(hf_model, why) from error
    finally:
        hf_model.train(training)
        for handle in handles:
            handle.remove()
    return calls


def _copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return tensor.detach().clone() if isinstance(tensor, torch.Tensor) else None


def _tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _carries_weights(output: object) -> bool:
    """A module output `(update, weights, ...)` with weights `[1, heads, tokens, tokens]`."""
    return (
        isinstance(output, tuple | list)
        and len(output) > 1
        and isinstance(output[1], torch.Tensor)
        and output[1].dim() == 4
        and output[1].shape[-1] == output[1].shape[-2] == PROBE_TOKENS
    )


def _causal(weights: torch.Tensor) -> bool:
    return bool(torch.triu(weights[0], diagonal=1).abs().max() == 0)


def _close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two readings hold the same numbers, token by token (OPT flattens its tokens around the MLP)."""
    if a is None or b is None or a.numel() != b.numel() or a.shape[-1] != b.shape[-1]:
        return False
    return torch.allclose(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), rtol=1e-4, atol=1e-5)


def _plus(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
    return a + b if b is not None and a.shape == b.shape else None


def _embedding_norm(outside: list[_Call], calls: list[_Call], blocks_path: str) -> str | None:
    """The norm outside the blocks whose output block 0 reads."""
    first = next(c for c in calls if c.path == f"{blocks_path}.0")
    return next((c.path for c in outside if is_norm(c.module) and _close(c.output, first.input)), None)


def _table(hf_model: nn.Module, outside: list[_Call], rows: int | None) -> str | None:
    """The embedding table (not the word table) the pass used whose size fits `rows` (position tables may hold
    a few more rows: an offset)."""
    word = hf_model.get_input_embeddings()
    if not rows:
        return None
    for call in outside:
        module = call.module
        if isinstance(module, nn.Embedding) and module is not word and rows <= module.num_embeddings <= rows + 2:
            return call.path
    return None


def _final_norm(outside: list[_Call], last_block: _Call) -> str | None:
    """The norm outside the blocks that reads the last block's output."""
    return next((c.path for c in outside if is_norm(c.module) and _close(c.input, last_block.output)), None)
