"""Text normalization shared by references and hypotheses.

The normalizer is composed from named steps (as jiwer does) so that what happens to a
transcript is visible and testable; :func:`normalize` applies the default pipeline.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

__all__ = ["DEFAULT_STEPS", "TextNormalizer", "normalize"]

Step = Callable[[str], str]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NON_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def unicode_nfkc(text: str) -> str:
    """Fold compatibility characters (full-width letters, ligatures) to their plain form."""
    return unicodedata.normalize("NFKC", text)


def lowercase(text: str) -> str:
    """Lower-case everything."""
    return text.lower()


def unify_apostrophes(text: str) -> str:
    """Map typographic apostrophes to ``'``."""
    return text.translate(_APOSTROPHES)


def hyphens_to_spaces(text: str) -> str:
    """``twenty-five`` → ``twenty five`` (numbers are written as words)."""
    return text.replace("-", " ")


def strip_punctuation(text: str) -> str:
    """Drop everything except letters, digits, apostrophes and spaces."""
    return _NON_WORD.sub(" ", text)


def strip_edge_apostrophes(text: str) -> str:
    """Remove quote-like apostrophes at word edges (``'hello'`` → ``hello``), keep ``don't``."""
    return " ".join(w.strip("'") for w in text.split(" "))


def collapse_spaces(text: str) -> str:
    """Collapse runs of whitespace and trim."""
    return _SPACES.sub(" ", text).strip()


DEFAULT_STEPS: tuple[Step, ...] = (
    unicode_nfkc,
    lowercase,
    unify_apostrophes,
    hyphens_to_spaces,
    strip_punctuation,
    strip_edge_apostrophes,
    collapse_spaces,
)


class TextNormalizer:
    """A pipeline of named string → string steps.

    Args:
        steps: the steps, applied in order. Defaults to :data:`DEFAULT_STEPS`.
    """

    def __init__(self, steps: Sequence[Step] = DEFAULT_STEPS) -> None:
        self.steps = tuple(steps)

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return text

    def __repr__(self) -> str:
        return f"TextNormalizer({', '.join(s.__name__ for s in self.steps)})"


_DEFAULT = TextNormalizer()


def normalize(text: str) -> str:
    """Normalize ``text`` with the default pipeline (lower case, no punctuation, single spaces)."""
    return _DEFAULT(text)
