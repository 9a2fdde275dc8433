"""`fit_lens`: fit one affine map per layer from its vectors at a stage to the model's last-layer output, over
texts, with the ridge chosen on texts the fit did not see and scores on texts nothing was fitted on.

The texts the model reads are split by their order: text i is held out when i % SPLIT == SPLIT - 1 (scores
only), validates (chooses the ridge; the tuned lens's kept step) when i % SPLIT == SPLIT // 2, and is fitted on
otherwise; the final linear maps are fitted on the fit and validation texts together with the chosen ridge.
Every token the tokenizer did not add counts. Vectors come from one padded, masked forward pass per batch
(`analysis.capture.trace`), the same readings `lens` reads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from analysis.capture.tokens import Tokens, length_batches, tokenize_readable
from analysis.capture.trace import trace_tokens
from analysis.checks import check_choice, check_count
from analysis.definitions import (
    FITTED_KINDS,
    LENS_STAGE,
    PLAIN_READING,
    SCORE_TOKENS,
    TUNED_STARTS,
    TUNED_TOKENS,
    FittedKind,
    LensTarget,
    OnProgress,
    Stage,
)
from analysis.fitted.lens import FittedLens
from analysis.fitted.moments import Moments
from analysis.fitted.ridge import RIDGE_GRID, RidgeChoice, choose_ridge, ridge_map
from analysis.fitted.scores import HeldOutTally
from analysis.fitted.tuned import TokenVectors, Tuned, tune
from analysis.model.capabilities import check_lens, check_stage
from analysis.model.loaded import LoadedModel
from analysis.report.lens import default_target, lens_targets
from analysis.scoring.logits import NO_TARGET
from analysis.version import provenance

SPLIT = 5
FIT_BATCH_TOKENS = 2048
"""Padded tokens per forward pass of a fit: every layer's vectors of a batch are held at once."""
TUNED_KEPT_BYTES = 512 * 2**20
"""Upper bound on the fit tokens' vectors the tuned lens keeps in memory to train on (it reads them over again)."""
TOKENS_PER_WIDTH = 10
"""A stable linear fit wants at least this many fit tokens per hidden dimension (each output dimension is a
regression on hidden + 1 inputs); below, the ridge carries it and the record says so."""


def recommended_tokens(hidden_size: int) -> int:
    """Fit tokens a stable linear fit of a model of this width wants (TOKENS_PER_WIDTH per dimension)."""
    return TOKENS_PER_WIDTH * hidden_size


def split_of(index: int) -> str:
    """Where the `index`-th readable text goes: "fit", "validation" or "held_out"."""
    if index % SPLIT == SPLIT - 1:
        return "held_out"
    return "validation" if index % SPLIT == SPLIT // 2 else "fit"


def _real_tokens(tokens: list[Tokens], length: int, device: torch.device) -> torch.Tensor:
    """`[texts, padded tokens]` True at every token the tokenizer did not add."""
    mask = torch.zeros(len(tokens), length, dtype=torch.bool)
    for row, text_tokens in enumerate(tokens):
        mask[row, : len(text_tokens)] = ~torch.tensor(text_tokens.special)
    return mask.to(device)


def _batches(
    lm: LoadedModel, texts: list[str], tokens: list[Tokens], stage: Stage, target: LensTarget | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per batch of texts: the real tokens' `vectors [layers, tokens, hidden]` at `stage`, the model's output
    `[tokens, hidden]` and their lens targets `[tokens]` (NO_TARGET where none, or without a `target`)."""
    for batch in length_batches([len(t) for t in tokens], FIT_BATCH_TOKENS, lm.memory_limit**2):
        chosen = [tokens[i] for i in batch]
        run = trace_tokens(lm, [texts[i] for i in batch], chosen, {stage, "layer_output"})
        output = run.readings[("layer_output", lm.num_layers - 1)]  # [texts, padded tokens, hidden]
        length = output.shape[1]
        real = _real_tokens(chosen, length, output.device)
        ids = [lens_targets(t.ids, target) if target else [NO_TARGET] * len(t) for t in chosen]
        targets = torch.tensor([row + [NO_TARGET] * (length - len(row)) for row in ids], device=output.device)[real]
        vectors = torch.stack([run.readings[(stage, layer)][real] for layer in range(lm.num_layers)])  # no padding
        del run  # the padded readings go before the caller's float64 work
        yield vectors, output[real], targets


def _texts_sha256(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    """The readable texts of a fit by split ("fit", "validation", "held_out"): their texts and tokens, and how many
    tokens of each the tokenizer did not add."""

    texts: dict[str, list[str]]
    tokens: dict[str, list[Tokens]]
    readable: int

    @property
    def real_tokens(self) -> dict[str, int]:
        return {name: sum(sum(not s for s in t.special) for t in found) for name, found in self.tokens.items()}

    def record(self, texts: Sequence[str]) -> dict:
        """What a fitted lens's record says of its texts."""
        return {
            "sha256": _texts_sha256(texts),
            "count": len(texts),
            "readable": self.readable,
            "split": f"readable text i is held out when i % {SPLIT} == {SPLIT - 1}, validates when i % {SPLIT} == "
            f"{SPLIT // 2}, is fitted on otherwise",
            **{f"{name}_texts": len(found) for name, found in self.texts.items()},
        }


def split_texts(lm: LoadedModel, texts: Sequence[str], max_tokens: int | None) -> Split:
    """`texts` tokenised (at most `max_tokens` each) and split by `split_of`; a ValueError where fewer than SPLIT
    are readable."""
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("fit_lens takes a list of texts (strings).")
    tokenized = tokenize_readable(lm, list(texts), max_tokens)
    readable = [(text, tokens) for text, tokens in zip(texts, tokenized, strict=True) if tokens is not None]
    if len(readable) < SPLIT:
        raise ValueError(
            f"A fit needs at least {SPLIT} texts the model reads (one in {SPLIT} is held out, one chooses the ridge);"
            f" these hold {len(readable)}."
        )
    names = ("fit", "validation", "held_out")
    split = Split({name: [] for name in names}, {name: [] for name in names}, len(readable))
    for index, (text, tokens) in enumerate(readable):
        split.texts[split_of(index)].append(text)
        split.tokens[split_of(index)].append(tokens)
    return split


def linear_maps(fit: Moments, validation: Moments, lm: LoadedModel, fitted_layers: list[int]) -> tuple[
    torch.Tensor, torch.Tensor, RidgeChoice
]:  # fmt: skip
    """The maps (float32, `[layers, hidden, hidden]` and `[layers, hidden]`) of `fitted_layers`, the identity
    elsewhere: the ridge chosen on `validation` for the fit on `fit`, then each map solved in float64 on both
    (`fit` absorbs `validation`); and the choice."""
    choice = choose_ridge(fit, validation, fitted_layers)
    fit.absorb(validation)
    weights = torch.eye(lm.hidden_size).repeat(lm.num_layers, 1, 1)
    biases = torch.zeros(lm.num_layers, lm.hidden_size)
    for layer in fitted_layers:
        weights[layer], biases[layer] = ridge_map(fit, layer, choice.ridge[layer])  # stored as float32
    return weights, biases, choice


def fit_lens(
    lm: LoadedModel,
    texts: Sequence[str],
    *,
    stage: Stage = LENS_STAGE,
    kind: FittedKind = "linear",
    tuned_tokens: int = TUNED_TOKENS,
    tuned_start: str = "linear",
    score_tokens: int = SCORE_TOKENS,
    max_tokens: int | None = None,
    on_progress: OnProgress | None = None,
) -> FittedLens:
    """Fit a `kind` lens ("linear" or "tuned") of `lm` at `stage` on `texts` (see the module for the split) and
    score it, the plain lens and (for tuned) its linear start on the held-out texts. A model without a head is
    fitted and scored in hidden space only (linear); the tuned lens needs the head. `on_progress(done, total)`
    counts tokens read and, for tuned, token reads trained. `tuned_start`: where the tuned lens's training starts
    (`TUNED_STARTS`; its validation KL there is its kept step 0). `score_tokens` 0: held-out r² only, no vocabulary
    scores. Raises ValueError on a bad choice or too few texts, before any forward pass."""
    kind = check_choice("fitted lens kind", kind, FITTED_KINDS)
    stage = check_stage(lm, stage)
    unembed = check_lens(lm) if kind == "tuned" else lm.unembed
    tuned_tokens = check_count("tuned_tokens", tuned_tokens)
    tuned_start = check_choice("tuned lens start", tuned_start, TUNED_STARTS)
    score_tokens = check_count("score_tokens", score_tokens, least=0)
    split = split_texts(lm, texts, max_tokens)
    started = time.perf_counter()
    tokens = split.real_tokens
    tuned_kind = kind == "tuned"
    total = sum(tokens.values()) + (tuned_tokens if tuned_kind else 0)
    done = 0.0

    def count(read: float) -> None:
        nonlocal done
        done += read
        if on_progress:
            on_progress(done, total)

    fitted_layers = list(range(lm.num_layers - 1 if stage == "layer_output" else lm.num_layers))
    kept = min(tuned_tokens, max(1, TUNED_KEPT_BYTES // (4 * lm.num_layers * lm.hidden_size))) if tuned_kind else 0
    fit, train = _read_split(lm, split, "fit", stage, fitted_layers, kept, count)
    validation, check = _read_split(lm, split, "validation", stage, fitted_layers, kept // 4, count)
    weights, biases, choice = linear_maps(fit, validation, lm, fitted_layers)
    del fit, validation  # the moments (two sets of layers x hidden² in float64) are not needed past here
    record = provenance(
        lm,
        kind="linear",
        stage=stage,
        hidden_size=lm.hidden_size,
        layers=lm.num_layers,
        texts=split.record(texts),
        tokens=tokens,
        identity_layers=[layer for layer in range(lm.num_layers) if layer not in fitted_layers],
        ridge={
            "grid": list(RIDGE_GRID),
            "alpha": choice.alpha,
            "lambda": choice.ridge,
            "unit": "lambda = alpha x mean diagonal of the centred C_xx of the fit texts",
        },
        notes=_notes(lm, tokens["fit"] + tokens["validation"]),
    )
    linear = FittedLens(weights, biases, record)
    lenses: dict[str, FittedLens | None] = {PLAIN_READING: None, "linear": linear}
    if tuned_kind:
        assert train is not None and check is not None and unembed is not None
        before_training = done

        def on_step(step: int, steps: int) -> None:  # the training's share of the work, counted in token reads
            count(before_training + tuned_tokens * step / steps - done)

        identity = (torch.eye(lm.hidden_size).repeat(lm.num_layers, 1, 1), torch.zeros_like(biases))
        start = (weights, biases) if tuned_start == "linear" else identity
        tuned = tune(unembed, start, train, check, tuned_tokens, fitted_layers, on_step)
        tuned_record = _tuned_record(record, tuned, train, check, lm, tuned_start)
        lenses["tuned"] = FittedLens(tuned.weights, tuned.biases, tuned_record)
    tally = HeldOutTally(lenses, unembed, lm.vocab_size, score_tokens)
    target = default_target(lm) if unembed is not None else None
    for vectors, outputs, targets in _batches(lm, split.texts["held_out"], split.tokens["held_out"], stage, target):
        tally.add(vectors, outputs, targets)
        count(len(outputs))
    chosen = lenses[kind]
    assert chosen is not None
    seconds = round(time.perf_counter() - started, 3)
    return FittedLens(chosen.weights, chosen.biases, {**chosen.record, "scores": tally.records(), "seconds": seconds})


def _read_split(
    lm: LoadedModel,
    split: Split,
    name: str,
    stage: Stage,
    fitted_layers: list[int],
    keep: int,
    count: Callable[[float], None],
) -> tuple[Moments, TokenVectors | None]:
    """The moments of split `name` (its vectors at `stage` in `fitted_layers` against the model's output) and the
    vectors of its first `keep` tokens in every layer (None where `keep` is 0), `count`ing the tokens read."""
    moments = Moments.empty(len(fitted_layers), lm.hidden_size, lm.device)
    kept_vectors, kept_outputs, held = [], [], 0
    for vectors, outputs, _ in _batches(lm, split.texts[name], split.tokens[name], stage, None):
        moments.add(vectors[: len(fitted_layers)], outputs)  # at layer_output, not the last: it is the output
        if held < keep:
            kept_vectors.append(vectors[:, : keep - held].float())
            kept_outputs.append(outputs[: keep - held])
            held += min(keep - held, len(outputs))
        count(len(outputs))
    kept = TokenVectors(torch.cat(kept_vectors, 1), torch.cat(kept_outputs)) if kept_vectors else None
    return moments, kept


def _tuned_record(
    record: dict, tuned: Tuned, train: TokenVectors, check: TokenVectors, lm: LoadedModel, start: str
) -> dict:
    """The linear fit's `record`, as the tuned lens trained after it from `start`: its budget, steps and kept
    step."""
    return {
        **record,
        "kind": "tuned",
        "tuned": {
            "start": start,
            "token_reads": tuned.token_reads,
            "steps": tuned.steps,
            "batch_tokens": tuned.token_reads // tuned.steps,
            "train_tokens_kept": len(train),
            "validation_tokens": len(check),
            "kept_step": tuned.kept_step,
            "validation_kl_start": tuned.start_kl,
            "validation_kl_kept": tuned.kept_kl,
            "device": str(lm.device),
        },
    }


def _notes(lm: LoadedModel, fit_tokens: int) -> list[str]:
    """What a reader of the fit should know: too few tokens for its width."""
    wanted = recommended_tokens(lm.hidden_size)
    if fit_tokens >= wanted:
        return []
    return [
        f"fitted on {fit_tokens:,} tokens, fewer than the {wanted:,} ({TOKENS_PER_WIDTH} per dimension) a stable "
        f"fit of a {lm.hidden_size}-wide model wants: the ridge carries it; the held-out scores say how well"
    ]
