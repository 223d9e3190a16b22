"""Text normalization and Σ/Σ WER aggregation, table-driven."""

from __future__ import annotations

import math

import pytest

from fairstream.data.text import normalize
from fairstream.metrics.wer import ErrorCounts, corpus_wer, score, score_pairs

NORMALIZE_CASES = [
    ("Hello, World!", "hello world"),
    ("set a timer for twenty-five minutes", "set a timer for twenty five minutes"),
    ("  Don\u2019t   stop ", "don't stop"),
    ("'quoted'", "quoted"),
    ("", ""),
    ("ＦＵＬＬ width", "full width"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


SCORE_CASES = [
    # reference, hypothesis, (sub, del, ins, hits)
    ("a b c", "a b c", (0, 0, 0, 3)),
    ("a b c", "a x c", (1, 0, 0, 2)),
    ("a b c", "a c", (0, 1, 0, 2)),
    ("a b c", "a b c d", (0, 0, 1, 3)),
    ("a b", "", (0, 2, 0, 0)),
    ("", "a b", (0, 0, 2, 0)),
    ("", "", (0, 0, 0, 0)),
]


@pytest.mark.parametrize(("ref", "hyp", "expected"), SCORE_CASES)
def test_score(ref: str, hyp: str, expected: tuple[int, int, int, int]) -> None:
    c = score(ref, hyp)
    assert (c.substitutions, c.deletions, c.insertions, c.hits) == expected


def test_corpus_wer_is_sum_over_sum_not_mean_of_ratios() -> None:
    counts = score_pairs(["a", "a b c d e f g h i j"], ["b", "a b c d e f g h i j"])
    # mean of per-utterance WERs would be (1.0 + 0.0) / 2 = 0.5
    assert corpus_wer(counts) == pytest.approx(1 / 11)


def test_empty_reference_insertions_count_in_totals() -> None:
    counts = score_pairs(["", "a b"], ["x y", "a b"])
    assert math.isnan(counts[0].wer)
    assert corpus_wer(counts) == pytest.approx(2 / 2)


def test_error_counts_add() -> None:
    total = ErrorCounts(1, 2, 3, 4) + ErrorCounts(1, 1, 1, 1)
    assert (total.substitutions, total.deletions, total.insertions, total.hits) == (2, 3, 4, 5)
    assert total.ref_words == 10 and total.errors == 9


def test_mismatched_lengths_name_both() -> None:
    with pytest.raises(ValueError, match="2 vs 1"):
        score_pairs(["a", "b"], ["a"])
