"""Error rate on held-out slot words: how a recognizer does on names it never heard in training.

A corpus built with clean test text (:class:`fairstream.data.presets.TextHoldout`, preset
``demo-clean``) holds a share of each open slot's values out of training and lists them in
``heldout_slots.json`` (:func:`fairstream.data.layout.read_heldout_slots`). The definition:

* **held-out slot words** of a reference are its words that lie inside a whole-word occurrence
  of a held-out value, after :func:`~fairstream.data.text.normalize` (both words of
  ``new york`` in ``will it rain in new york``; ``york`` alone is not one);
* each reference is aligned to its hypothesis with the WER alignment
  (:mod:`fairstream.metrics.wer`: jiwer's word-level Levenshtein alignment), and a held-out
  slot word is **missed** unless the alignment pairs it with an equal hypothesis word (a hit);
  substituted and deleted words are missed;
* **held-out slot error rate** = Σ missed / Σ held-out slot words over all rows.

Insertions are not counted (they belong to no reference word), so the rate is at most 1. Rows
whose reference has no held-out slot word do not enter the rate.

Example::

    from fairstream.data.layout import read_heldout_slots
    score = heldout_slot_score(zip(df["ref"], df["hyp"]), read_heldout_slots("data/demo-clean"))
    score.error_rate, score.slot_words
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jiwer

from fairstream.data.holdout import PhraseMatcher
from fairstream.data.text import normalize

__all__ = ["HeldoutSlotScore", "heldout_slot_score"]


@dataclass(frozen=True)
class HeldoutSlotScore:
    """Counts behind the held-out slot error rate.

    Attributes:
        slot_words: reference words inside held-out slot values.
        missed: of those, the words not aligned as hits (substituted or deleted).
        utterances: rows whose reference has at least one held-out slot word.
    """

    slot_words: int = 0
    missed: int = 0
    utterances: int = 0

    @property
    def error_rate(self) -> float:
        """missed / slot_words; ``nan`` when no reference has a held-out slot word."""
        return self.missed / self.slot_words if self.slot_words else math.nan


def heldout_slot_score(
    rows: Iterable[tuple[str, str]],
    heldout: Mapping[str, Sequence[str]] | Iterable[str],
    *,
    normalized: bool = False,
) -> HeldoutSlotScore:
    """Score held-out slot words over ``(reference, hypothesis)`` rows.

    Args:
        rows: ``(reference, hypothesis)`` pairs, e.g. ``zip(df["ref"], df["hyp"])`` of a
            results table.
        heldout: the held-out values, either slot → values (``heldout_slots.json`` as read by
            :func:`~fairstream.data.layout.read_heldout_slots`) or the values themselves.
        normalized: set when the texts are already normalized (skips :func:`normalize`).

    Returns:
        A :class:`HeldoutSlotScore`; its ``error_rate`` is the held-out slot error rate.
    """
    values = ([v for vs in heldout.values() for v in vs] if isinstance(heldout, Mapping)
              else list(heldout))
    matcher = PhraseMatcher(values)
    refs: list[str] = []
    hyps: list[str] = []
    masks: list[list[bool]] = []
    for ref, hyp in rows:
        if not normalized:
            ref, hyp = normalize(ref), normalize(hyp)
        mask = matcher.mask(ref.split())
        if any(mask):
            refs.append(ref)
            hyps.append(hyp)
            masks.append(mask)
    if not refs:
        return HeldoutSlotScore()
    slot_words = missed = 0
    for mask, chunks in zip(masks, jiwer.process_words(refs, hyps).alignments):
        hit = [False] * len(mask)
        for c in chunks:
            if c.type == "equal":
                hit[c.ref_start_idx:c.ref_end_idx] = [True] * (c.ref_end_idx - c.ref_start_idx)
        slot_words += sum(mask)
        missed += sum(m and not h for m, h in zip(mask, hit))
    return HeldoutSlotScore(slot_words=slot_words, missed=missed, utterances=len(refs))
