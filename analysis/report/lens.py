"""`lens`: what each layer would predict. The model's own head (final norm + masked-LM or causal-LM head) reads
every layer's vector at a stage: the logit lens for decoders, an MLM lens for encoders, and a masked mode where
each token is hidden behind the mask token in turn. Tidy tables, one row per (layer, position); the definitions
are in docs/design.md, section 8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analysis.capture.masked import masked_trace
from analysis.capture.tokens import token_table
from analysis.capture.trace import Trace, traced
from analysis.checks import check_choice
from analysis.definitions import LENS_STAGE, LENS_TARGETS, LENS_TOP_K, PLAIN_READING, LensTarget, OnProgress, Stage
from analysis.fitted.lens import FittedLens
from analysis.model.capabilities import check_lens, check_stage, check_vocabulary_count
from analysis.model.loaded import LoadedModel
from analysis.report.result import per_layer, vocabulary_pieces
from analysis.scoring.logits import NEVER_COMMITS, NO_TARGET, LensScores, commit_layers, lens_scores
from analysis.version import provenance as provenance_record


@dataclass(frozen=True)
class LensResult:
    """The lens of one text under one model, stage and target. Picklable: pandas only."""

    model: str
    stage: Stage
    target: LensTarget
    masked: bool  # each position read from a copy of the text with that token hidden behind the mask token
    reading: str  # "plain" (the head reads each layer's vector as it is), or the fitted lens's kind
    top_k: int
    tokens: pd.DataFrame  # position, token, token_id, position_id, text, special, char_start, char_end
    metrics: pd.DataFrame  # LENS_COLUMNS, one row per (layer, position)
    top: pd.DataFrame  # LENS_TOP_COLUMNS, top_k rows per (layer, position)
    n_tokens_in_text: int
    truncated_at_char: int | None
    provenance: dict

    @property
    def truncated(self) -> bool:
        return self.truncated_at_char is not None


def default_target(lm: LoadedModel) -> LensTarget:
    """`next` for a decoder (what it predicts), `own` for an encoder (what a masked LM recovers)."""
    return "next" if lm.structure.causal else "own"


def lens_targets(ids: list[int], target: LensTarget) -> list[int]:
    """The target id at every position of a text's token `ids`: the token itself (own), or the next one (next;
    NO_TARGET at the last position, which has none)."""
    return list(ids) if target == "own" else [*ids[1:], NO_TARGET]


def reading_name(fitted: FittedLens | None) -> str:
    """How the lens reads each layer: "plain" or the fitted lens's kind."""
    return PLAIN_READING if fitted is None else fitted.kind


def lens_record(lm: LoadedModel, target: LensTarget) -> dict:
    """What a lens output records of how it was read: its target and the modules of the head that read it."""
    return {"lens_target": target, "lens_head": " + ".join(type(module).__name__ for module in check_lens(lm))}


def lens(
    lm: LoadedModel,
    text: str | Trace,
    *,
    stage: Stage = LENS_STAGE,
    target: LensTarget | None = None,
    top_k: int = LENS_TOP_K,
    masked: bool = False,
    fitted: FittedLens | None = None,
    on_progress: OnProgress | None = None,
) -> LensResult:
    """What the model would predict from each layer's vector at `stage`: a text, or a `Trace` of one text holding
    `stage` and `layer_output` (the model's own output, which the KL and the final top-1 compare with).

    `target` None: `next` for decoders, `own` for encoders. `masked` (encoders with a mask token): each token
    the tokenizer did not add is hidden behind the mask token in turn, one copy of the text per token in one
    batch, and read at its own position; special tokens have no row; `on_progress(copies done, copies)` follows
    its passes. `fitted`: each layer's vectors go through that fitted lens's map first (`analysis.fitted`); it must
    have been fitted on this model at `stage`. Raises ValueError where the model has no lens (the message says
    why), the fitted lens is another model's or stage's, or on a bad choice.
    """
    unembed = check_lens(lm, masked)
    check_stage(lm, stage)
    if fitted is not None:
        fitted.check_for(lm, stage)
    target = default_target(lm) if target is None else check_choice("lens target", target, LENS_TARGETS)
    top_k = check_vocabulary_count(lm, "top_k", top_k)
    if masked and target != "own":
        raise ValueError("Masked mode hides each token and asks for it back: its target is own, not next.")
    needs = {stage, "layer_output"}
    final = None  # the model's output; None: the last layer of `vectors` (stage layer_output) is it
    if masked:
        text = text.texts[0] if isinstance(text, Trace) else text
        tokens, positions, readings = masked_trace(lm, text, needs, on_progress)
        vectors = readings[stage]
        if stage != "layer_output":
            final = readings["layer_output"][-1]
    else:
        run = traced(lm, text, needs)
        text, tokens = run.texts[0], run.tokens[0]
        vectors = run.stage(stage)
        positions = list(range(len(tokens)))
        if stage != "layer_output":
            final = run.at("layer_output", lm.num_layers - 1)
    every_target = lens_targets(tokens.ids, target)
    target_ids = [every_target[p] for p in positions]
    targets = torch.tensor(target_ids, device=vectors.device)
    if fitted is not None:
        vectors, final = fitted.read(vectors, final)
    scores = lens_scores(unembed, vectors, targets, top_k, lm.vocab_size, final)
    token_frame = token_table(tokens, text)
    record = provenance_record(
        lm,
        lens_stage=stage,
        **lens_record(lm, target),
        lens_masked=masked,
        lens_reading=reading_name(fitted),
        **({"lens_fitted_sha256": fitted.record.get("weights_sha256")} if fitted is not None else {}),
        lens_top_k=top_k,
        **tokens.record,
    )
    return LensResult(
        model=lm.name,
        stage=stage,
        target=target,
        masked=masked,
        reading=reading_name(fitted),
        top_k=top_k,
        tokens=token_frame,
        metrics=_metrics(lm, token_frame.iloc[positions], target_ids, scores),
        top=_top(lm, token_frame.iloc[positions], target_ids, scores),
        n_tokens_in_text=tokens.n_tokens_in_text,
        truncated_at_char=tokens.truncated_at_char,
        provenance=record,
    )


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.reshape(-1).cpu().numpy()


def _where(values: np.ndarray, present: np.ndarray) -> pd.arrays.IntegerArray:
    """Whole numbers, empty (<NA>) where not `present`."""
    return pd.arrays.IntegerArray(values.astype(np.int64), mask=~present)


def _metrics(lm: LoadedModel, rows: pd.DataFrame, target_ids: list[int], scores: LensScores) -> pd.DataFrame:
    n_layers = scores.entropy.shape[0]
    pieces = vocabulary_pieces(lm)
    frame = per_layer(rows, n_layers, ["position", "token", "token_id", "text", "special"])
    targets = np.tile(np.array(target_ids), n_layers)
    has_target = targets != NO_TARGET
    frame["target_id"] = _where(targets, has_target)
    frame["target"] = pd.Series(pieces[np.where(has_target, targets, 0)]).where(has_target, None)
    frame["lens_logit"] = _numpy(scores.target_logit).astype(np.float64)
    frame["lens_prob"] = _numpy(scores.target_prob).astype(np.float64)
    frame["lens_rank"] = _where(_numpy(scores.target_rank), has_target)
    frame["entropy"] = _numpy(scores.entropy).astype(np.float64)
    frame["kl_final"] = _numpy(scores.kl_final).astype(np.float64)
    final_top = np.tile(scores.final_top.cpu().numpy(), n_layers)
    frame["final_top_id"] = final_top
    frame["final_top"] = pieces[final_top]
    frame["final_top_rank"] = _numpy(scores.final_top_rank)
    commits = np.tile(commit_layers(scores.top_ids, scores.final_top).cpu().numpy(), n_layers)
    frame["commit_layer"] = _where(commits, commits != NEVER_COMMITS)
    return frame


def _top(lm: LoadedModel, rows: pd.DataFrame, target_ids: list[int], scores: LensScores) -> pd.DataFrame:
    n_layers, n_positions, k = scores.top_ids.shape
    ids = _numpy(scores.top_ids)
    per_row = np.tile(np.repeat(np.arange(n_positions), k), n_layers)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), n_positions * k),
            "position": rows["position"].to_numpy()[per_row],
            "token": rows["token"].to_numpy()[per_row],
            "prediction_rank": np.tile(np.arange(1, k + 1), n_layers * n_positions),
            "prediction_id": ids,
            "prediction": vocabulary_pieces(lm)[ids],
            "prob": _numpy(scores.top_probs).astype(np.float64),
            "logit": _numpy(scores.top_logits).astype(np.float64),
            "is_target": ids == np.array(target_ids)[per_row],
        }
    )
