"""Text prompts: the phrases a grounding detector looks for.

Grounding DINO reads one string of lower-case phrases, each followed by a
period: ``"car. person. dog."``. Users type all sorts of things, so prompts are
normalised here once and every backend gets the same list of phrases.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .errors import PromptError

_WHITESPACE = re.compile(r"\s+")


def _clean_phrase(phrase: str) -> str:
    return _WHITESPACE.sub(" ", phrase.strip().strip(".").strip()).lower()


def parse_prompt(prompt: str | Sequence[str]) -> list[str]:
    """Split a prompt into unique, lower-case phrases, in the order given.

    ``prompt`` is either one string of period-separated phrases
    (``"Car. person.  dog"``; if it has no period but has commas, commas
    separate the phrases; line breaks always do: one class per line works)
    or a list of class names (``["car", "person"]``).

    Raises:
        PromptError: if no phrase is left after normalisation, or a phrase has
            no letter or digit (``"!!! ???"``, a zero-width space): nothing a
            detector could ground.
    """
    if isinstance(prompt, str):
        separator = "." if "." in prompt or "," not in prompt else ","
        pieces = [piece for line in prompt.splitlines() for piece in line.split(separator)]
    elif isinstance(prompt, Sequence):
        pieces = []
        for item in prompt:
            if not isinstance(item, str):
                raise PromptError(f"prompt: class names must be strings, got {type(item).__name__} {item!r}")
            pieces.append(item)
    else:
        raise PromptError(f"prompt: expected a string or a list of class names, got {type(prompt).__name__}")

    phrases: list[str] = []
    for piece in pieces:
        phrase = _clean_phrase(piece)
        if phrase and not any(character.isalnum() for character in phrase):
            raise PromptError(
                f"prompt {prompt!r}: {phrase!r} has no letter or digit; name a class, e.g. \"car. person.\""
            )
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise PromptError(f'prompt {prompt!r} is empty: give at least one class name, e.g. "car. person."')
    return phrases


def prompt_text(phrases: Sequence[str]) -> str:
    """Join phrases the way Grounding DINO was trained on: ``"car. person."``."""
    return " ".join(f"{phrase}." for phrase in phrases)


# Invisible format characters (Unicode category Cf: zero-width space and joiners, BOM, bidi marks)
# that can hide in a label typed or pasted into CVAT; NFKC keeps them.
_FORMAT_CHARACTERS = re.compile(r"[\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def label_phrase(label: str) -> str:
    """The phrase a class label stands for, the same whichever way it is spelled.

    A label's Unicode is NFKC-normalised (full-width letters, non-breaking spaces,
    composed accents) and freed of invisible format characters, then cleaned as
    :func:`parse_prompt` cleans a phrase: ``"Traffic  Light"`` and ``" car. "``
    become ``"traffic light"`` and ``"car"``. Used both to build a prompt from
    label names and to map a detector's phrases back to those names, so that the
    two always agree. ``""`` when nothing is left.
    """
    phrase = _FORMAT_CHARACTERS.sub("", unicodedata.normalize("NFKC", label))
    while (cleaner := _clean_phrase(phrase)) != phrase:  # "a . ." -> "a ." -> "a": until nothing changes
        phrase = cleaner
    return phrase
