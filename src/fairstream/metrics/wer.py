"""Word error rate with corpus-level Σerrors / Σreference-words aggregation.

Alignment is jiwer's (rapidfuzz Levenshtein on words). What this module adds:

* per-utterance error counts as a small frozen dataclass (:class:`ErrorCounts`);
* corpus and group WER as Σerrors / Σreference words — never a mean of utterance WERs;
* the empty-reference rule, applied everywhere: an utterance whose normalized reference is
  empty contributes 0 reference words and every hypothesis word as an insertion. Its own WER
  is undefined (``nan``) unless the hypothesis is empty too (``0``), but its insertions count
  in every corpus or group total;
* NIST ``trn`` export so the same texts can be scored by ``sclite``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer

from fairstream._io import atomic_write_text
from fairstream.data.text import normalize

__all__ = ["ErrorCounts", "corpus_wer", "score", "score_pairs", "write_trn"]


@dataclass(frozen=True)
class ErrorCounts:
    """Word-level edit counts of one hypothesis against one reference (or a sum of them)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def ref_words(self) -> int:
        """Number of reference words: hits + substitutions + deletions."""
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference words; ``nan`` when there are no reference words but errors."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else math.nan
        return self.errors / self.ref_words

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
        )


def score(reference: str, hypothesis: str, *, normalized: bool = False) -> ErrorCounts:
    """Align one hypothesis to one reference.

    Args:
        reference: reference transcript.
        hypothesis: recognizer output.
        normalized: set when both texts are already normalized (skips :func:`normalize`).
    """
    return score_pairs([reference], [hypothesis], normalized=normalized)[0]


def score_pairs(
    references: Sequence[str], hypotheses: Sequence[str], *, normalized: bool = False
) -> list[ErrorCounts]:
    """Align many pairs at once (one jiwer call). Returns one :class:`ErrorCounts` per pair."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"references and hypotheses differ in length: {len(references)} vs {len(hypotheses)}"
        )
    if not references:
        return []
    refs = list(references) if normalized else [normalize(r) for r in references]
    hyps = list(hypotheses) if normalized else [normalize(h) for h in hypotheses]
    out = jiwer.process_words(refs, hyps)
    counts: list[ErrorCounts] = []
    for chunks in out.alignments:
        s = d = i = h = 0
        for c in chunks:
            n_ref = c.ref_end_idx - c.ref_start_idx
            n_hyp = c.hyp_end_idx - c.hyp_start_idx
            if c.type == "equal":
                h += n_ref
            elif c.type == "substitute":
                s += n_ref
            elif c.type == "delete":
                d += n_ref
            else:
                i += n_hyp
        counts.append(ErrorCounts(s, d, i, h))
    return counts


def corpus_wer(counts: Iterable[ErrorCounts]) -> float:
    """Σerrors / Σreference words over ``counts`` (``nan`` if there are no reference words)."""
    total = sum(counts, ErrorCounts())
    if total.ref_words == 0:
        return math.nan
    return total.errors / total.ref_words


def write_trn(
    path: str | Path,
    utterance_ids: Sequence[str],
    texts: Sequence[str],
    speakers: Sequence[str] | None = None,
    *,
    normalized: bool = False,
) -> Path:
    """Write a NIST ``trn`` file: one ``text (speaker-utterance)`` line per utterance.

    sclite reads the part before the first ``-`` of the id as the speaker, so the id is written
    as ``{speaker}-{utterance}`` when speakers are given.
    """
    path = Path(path)
    if len(utterance_ids) != len(texts):
        raise ValueError(f"{len(utterance_ids)} ids but {len(texts)} texts for {path}")
    lines = []
    for k, (uid, text) in enumerate(zip(utterance_ids, texts)):
        spk = speakers[k] if speakers is not None else uid
        t = text if normalized else normalize(text)
        lines.append(f"{t} ({spk.replace('-', '_')}-{uid.replace('-', '_')})\n")
    return atomic_write_text(path, "".join(lines))
