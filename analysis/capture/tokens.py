"""Tokens: a text tokenised for one model, cut at its length, with where each token came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.model.loaded import LoadedModel


@dataclass(frozen=True)
class Tokens:
    """The tokens fed to the model, special tokens included, after any truncation."""

    ids: list[int]
    pieces: list[str]
    special: list[bool]
    offsets: list[tuple[int, int]]
    position_ids: list[int]
    n_tokens_in_text: int  # special tokens included, before truncation
    truncated_at_char: int | None

    @property
    def truncated(self) -> bool:
        return self.truncated_at_char is not None

    @property
    def record(self) -> dict[str, object]:
        """How many tokens were read and where the text was cut, as a provenance record names them."""
        return {"n_tokens": len(self), "n_tokens_in_text": self.n_tokens_in_text, "truncated": self.truncated,
                "truncated_at_char": self.truncated_at_char}  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)


PREFIX_CHARS_PER_TOKEN = 16
"""A long text is tokenised from a prefix of this many characters per token the model reads (grown while too
short), so a 20 MB line costs what its first tokens cost; its full count is taken in chunks."""
COUNT_CHUNK_CHARS = 1 << 16


def tokenize(lm: LoadedModel, text: str, max_tokens: int | None = None) -> Tokens:
    """Tokenise `text`, keeping at most `max_tokens` tokens (default `lm.max_tokens`; never past the model's
    positions) and recording where it was cut. Raises ValueError when the text has no token the model reads (only
    spaces or control characters, say)."""
    tokenizer = lm.tokenizer
    limit = lm.max_tokens if max_tokens is None else min(max_tokens, lm.position_limit)
    specials = tokenizer.num_special_tokens_to_add()
    window = PREFIX_CHARS_PER_TOKEN * limit
    while True:
        cut = len(text) > window
        piece = text[: _space_before(text, window)] if cut else text
        in_piece = _count(tokenizer, piece)
        if not cut or in_piece + specials > limit:  # the piece holds every token kept, and the cut word is past them
            break
        window *= 4
    encoding = tokenizer(
        piece,
        truncation=True,
        max_length=limit,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    ids = encoding["input_ids"]
    special = [bool(s) for s in encoding["special_tokens_mask"]]
    if all(special):
        raise ValueError(
            "The text has no tokens the model can read: type words, not only spaces or control characters."
        )
    n_in_text = specials + (_count_in_chunks(tokenizer, text) if cut else in_piece)
    offsets = [tuple(o) for o in encoding["offset_mapping"]]
    truncated_at = (
        max(end for (_, end), s in zip(offsets, special, strict=True) if not s) if len(ids) < n_in_text else None
    )
    offset = lm.structure.embeddings.position_offset
    return Tokens(
        ids=ids,
        pieces=[str(p) for p in tokenizer.convert_ids_to_tokens(ids)],
        special=special,
        offsets=offsets,
        position_ids=[offset + p for p in range(len(ids))],
        n_tokens_in_text=n_in_text,
        truncated_at_char=truncated_at,
    )


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _space_before(text: str, end: int) -> int:
    """The last whitespace position at or before `end` (so a cut never splits a word), or `end` when the text has
    none in its second half there."""
    space = max(text.rfind(" ", end // 2, end + 1), text.rfind("\n", end // 2, end + 1))
    return space if space > 0 else end


def _count_in_chunks(tokenizer, text: str) -> int:
    """The tokens of a long text (no special tokens), counted in chunks cut at whitespace: bounded memory."""
    count, start = 0, 0
    while start < len(text):
        end = len(text) if len(text) - start <= COUNT_CHUNK_CHARS else _space_before(text, start + COUNT_CHUNK_CHARS)
        end = end if end > start else start + COUNT_CHUNK_CHARS
        count += _count(tokenizer, text[start:end])
        start = end
    return count


def tokenize_all(lm: LoadedModel, texts: list[str]) -> list[Tokens]:
    """Each text tokenised alone (`tokenize`), under the model's lock (its fast tokenizer is not re-entrant)."""
    with lm.lock:
        return [tokenize(lm, text) for text in texts]


def tokenize_readable(lm: LoadedModel, texts: list[str], max_tokens: int | None = None) -> list[Tokens | None]:
    """`tokenize_all` (at most `max_tokens` each), with None for a text that has no token the model reads
    (skipped and counted by callers)."""
    with lm.lock:
        return [_readable(lm, text, max_tokens) for text in texts]


def _readable(lm: LoadedModel, text: str, max_tokens: int | None) -> Tokens | None:
    try:
        return tokenize(lm, text, max_tokens)
    except ValueError:
        return None


def length_batches(lengths: list[int], batch_tokens: int, square_tokens: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, shortest first, grouped so that a batch's padded size (its longest length times
    its size) stays within `batch_tokens` and, with `square_tokens`, its size times the square of its longest
    length (what its attention weights hold) within that; a text that passes either alone goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for index in order:
        size, longest = (len(batches[-1]) + 1, lengths[index]) if batches else (1, lengths[index])
        fits = batches and longest * size <= batch_tokens
        if fits and square_tokens is not None:
            fits = longest * longest * size <= square_tokens
        if fits:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def token_table(tokens: Tokens, text: str) -> pd.DataFrame:
    """One row per token: position, piece, id, position-table row, covered text, special flag, character span."""
    return pd.DataFrame(
        {
            "position": np.arange(len(tokens)),
            "token": tokens.pieces,
            "token_id": tokens.ids,
            "position_id": tokens.position_ids,
            "text": [
                p if s else text[a:b]
                for p, s, (a, b) in zip(tokens.pieces, tokens.special, tokens.offsets, strict=True)
            ],
            "special": tokens.special,
            "char_start": [a for a, _ in tokens.offsets],
            "char_end": [b for _, b in tokens.offsets],
        }
    )
