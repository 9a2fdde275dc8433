"""The self-check every load runs: a short probe read through the capture and through the model's own plain
forward pass, which must agree, so a model the tables read wrongly is refused instead of drawn.

The probe is two texts of different lengths, batched and padded as the app and the sweep run texts. The capture
(`trace_tokens`, with the position ids and token types it feeds) records every stage the model has, each of which
must be one hidden-size vector per token of each text; the model's own forward pass gets only the ids and the
attention mask and computes everything else itself. Compared, over each text's real tokens, relative to the
largest value there:
- `layer_input` of layer i against the model's own `hidden_states[i]`;
- the last block's output (through the final norm, where the family has one) against the model's own last
  hidden state;
- with a lens, the lens at the last layer (`unembed`) against the model's own logits.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from analysis.capture.forward import model_inputs
from analysis.capture.tokens import tokenize
from analysis.capture.trace import available_points, trace_tokens
from analysis.model.architectures import UnsupportedModelError
from analysis.model.checkpoint import first_line
from analysis.model.loaded import LoadedModel, SelfCheck

PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog, and then it sleeps.", "Time flies.")
TOLERANCE = 1e-4
"""Largest relative difference accepted: float32 reads of the same computation differ by about 1e-7; a model read
wrongly differs by tens of percent."""


def self_check(lm: LoadedModel, own_model: PreTrainedModel) -> SelfCheck:
    """Compare the capture with `own_model` (the model as loaded: its head model where it has a lens, else the
    base model) on the probe; raise UnsupportedModelError naming what disagrees and by how much."""
    texts = list(PROBE_TEXTS)
    with lm.lock:
        tokens = [tokenize(lm, text) for text in texts]
    run = trace_tokens(lm, texts, tokens, available_points(lm))
    length = max(len(t) for t in tokens)
    for (point, layer), reading in run.readings.items():
        if tuple(reading.shape) != (len(texts), length, lm.hidden_size):
            raise UnsupportedModelError(
                f"{lm.name}: Token Trails reads its {point} at layer {layer} as a tensor of shape "
                f"{tuple(reading.shape)}, not one {lm.hidden_size}-vector per token of each text, so it is refused."
            )
    padded = model_inputs(lm, tokens)  # the capture's own batch: ids and mask only, the model computes the rest
    with lm.lock, torch.inference_mode():
        own = own_model(
            input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], output_hidden_states=True
        )
    last = run.batch("layer_output")[-1]
    final_norm = lm.structure.final_norm
    with torch.inference_mode():
        expected_last = final_norm(last) if final_norm is not None else last
    own_hidden = own.hidden_states
    readings = {f"layer_input of layer {layer}": (run.batch("layer_input")[layer], own_hidden[layer])
                for layer in range(lm.num_layers)}  # fmt: skip
    readings["last hidden state"] = (expected_last, own_hidden[-1])
    errors = {where: _difference(ours, theirs, tokens) for where, (ours, theirs) in readings.items()}
    where = max(errors, key=errors.__getitem__)
    if errors[where] > TOLERANCE:
        raise UnsupportedModelError(
            f"{lm.name}: Token Trails reads it wrongly: its {where} differs from the model's own forward pass by "
            f"{errors[where]:.1%} (relative) on a probe text, so it is refused rather than drawn."
        )
    logits = None
    if lm.unembed is not None and hasattr(own, "logits"):
        with torch.inference_mode():
            logits = _difference(lm.unembed(last), own.logits, tokens)
    return SelfCheck(hidden=errors[where], logits=logits)


def _difference(ours: torch.Tensor, theirs: torch.Tensor, tokens: list) -> float:
    """The largest |ours - theirs| over each text's real tokens, relative to the largest |theirs| there."""
    worst = 0.0
    for row, text_tokens in enumerate(tokens):
        n = len(text_tokens)
        reference = theirs[row, :n].abs().max().item()
        gap = (ours[row, :n] - theirs[row, :n]).abs().max().item()
        worst = max(worst, gap / reference if reference else gap)
    return worst


def checked(lm: LoadedModel, own_model: PreTrainedModel) -> LoadedModel:
    """`lm` after its self-check (`self_check`), recorded in `lm.self_check`: refused where its stages disagree
    with `own_model`; without its lens, saying why, where only the lens disagrees with the model's logits (its
    head does more than the modules the table names, e.g. a logit soft-cap)."""
    try:
        found = self_check(lm, own_model)
    except UnsupportedModelError:
        raise
    except Exception as error:  # the capture's own pass or the model's failed on the probe (batched, padded)
        raise UnsupportedModelError(
            f"{lm.name}: its self-check could not run a batched, padded probe ({type(error).__name__}: "
            f"{first_line(error)}), so it is refused rather than read."
        ) from error
    if found.logits is not None and found.logits > TOLERANCE:
        lm.unembed = None
        lm.no_lens = (
            f"its lens at the last layer differs from the model's own logits by {found.logits:.1%} (relative): its "
            "head does more than the modules Token Trails applies, so the lens would be wrong"
        )
    lm.self_check = found
    return lm
