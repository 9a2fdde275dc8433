"""Input checks shared by the API, the CLI and the app: each failure is a ValueError saying what to do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

Name = TypeVar("Name", bound=str)
"""A name from a table of choices (a `Stage`, a `Reference`, …)."""


def check_text(text: object) -> str:
    """A non-blank string, returned unchanged."""
    if not isinstance(text, str):
        raise ValueError(f"The text must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to analyse.")
    return text


def check_choice(kind: str, value: object, options: Mapping[Name, str]) -> Name:
    """One of the keys of `options` (stage names, reference names, …)."""
    if value not in options:
        raise ValueError(f"Unknown {kind} {value!r}: choose one of {', '.join(options)}.")
    return cast(Name, value)


def check_available(
    model: str, kind: str, value: object, options: Mapping[Name, str], missing: Mapping[Name, str]
) -> Name:
    """One of `options` that the model `model` has; `missing` maps each it lacks to why. The ValueError names
    the reason and the choices it has."""
    name = check_choice(kind, value, options)
    if name in missing:
        available = ", ".join(option for option in options if option not in missing)
        raise ValueError(f"{model} has no {kind} {value!r}: {missing[name]}. It has: {available}.")
    return name


def check_count(name: str, value: object, most: int | None = None, of: str = "", *, least: int = 1) -> int:
    """A whole number of at least `least` (booleans refused) and, with `most`, at most that (`of`: what it counts,
    for the message): a count of vocabulary items past the vocabulary would only allocate."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}.")
    if most is not None and value > most:
        raise ValueError(f"{name} is {value:,}, more than the {most:,} {of}: choose at most {most:,}.")
    return value
