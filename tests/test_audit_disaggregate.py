"""Disaggregated WER: Σ/Σ aggregation, intersections, privacy pooling, fairlearn agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairstream.audit.disaggregate import (
    MERGED,
    SUPPRESSED,
    apply_min_size,
    compare_partitions,
    disaggregate,
    partition_by,
)
from fairstream.audit.inputs import read_results
from fairstream.audit.speaker_stats import UNKNOWN, speaker_stats
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.metrics.bootstrap import SpeakerBootstrap


def _stats(rows: list[tuple[str, str, str, int, int, int, int]]):
    """rows: (utt, speaker, group, sub, del, ins, hits)."""
    df = pd.DataFrame(rows, columns=["utt_id", "speaker_id", "group", "sub", "del", "ins", "hits"])
    return speaker_stats(read_results(df))


# (utterances, expected WER per group): Σerrors / Σwords, never a mean of utterance WERs
CASES = [
    pytest.param(
        [("u1", "s1", "a", 1, 0, 0, 9), ("u2", "s2", "a", 0, 0, 0, 1)],
        {"a": 1 / 11},
        id="sum-over-sum-not-mean-of-ratios",
    ),
    pytest.param(
        [("u1", "s1", "a", 0, 0, 3, 0), ("u2", "s1", "a", 1, 1, 0, 2)],
        {"a": 5 / 4},
        id="empty-reference-insertions-count",
    ),
    pytest.param(
        [("u1", "s1", "a", 2, 0, 0, 8), ("u2", "s2", "b", 0, 5, 1, 5),
         ("u3", "s2", "b", 0, 0, 0, 10)],
        {"a": 0.2, "b": 6 / 20},
        id="two-groups",
    ),
    pytest.param(
        [("u1", "s1", "a", 0, 0, 0, 4), ("u2", "s2", "b", 0, 0, 0, 4)],
        {"a": 0.0, "b": 0.0},
        id="perfect-recognition",
    ),
    pytest.param(
        [("u1", "s1", "a", 0, 0, 2, 0)],
        {"a": float("nan")},
        id="only-empty-references-wer-undefined",
    ),
]


@pytest.mark.parametrize(("rows", "expected"), CASES)
def test_group_wer_table(rows, expected) -> None:
    [g] = disaggregate(_stats(rows), ["group"], None, min_speakers=1)
    got = dict(zip(g.by_group["group"], g.by_group["wer"]))
    assert set(got) == set(expected)
    for k, v in expected.items():
        if np.isnan(v):
            assert np.isnan(got[k])
        else:
            assert got[k] == pytest.approx(v)


def test_counts_speakers_utterances_and_rest() -> None:
    stats = _stats([("u1", "s1", "a", 1, 0, 0, 9), ("u2", "s1", "a", 0, 0, 0, 10),
                    ("u3", "s2", "b", 4, 0, 0, 6)])
    [g] = disaggregate(stats, ["group"], None, min_speakers=1)
    row = g.by_group.set_index("group").loc["a"]
    assert row["n_speakers"] == 1 and row["n_utterances"] == 2 and row["ref_words"] == 20
    assert row["wer_rest"] == pytest.approx(0.4)
    assert row["gap_pct"] == pytest.approx((0.05 / 0.4 - 1) * 100)
    assert row["share_speakers_pct"] == pytest.approx(50.0)
    assert row["share_words_pct"] == pytest.approx(100 * 20 / 30)
    assert g.overall["wer"] == pytest.approx(5 / 30)
    assert g.group_max == pytest.approx(0.4) and g.difference == pytest.approx(0.35)


def test_intersection_groups_partition_the_speakers() -> None:
    d = make_synthetic_audit(n_speakers=120, seed=1)
    from fairstream.audit.inputs import read_speakers

    stats = speaker_stats(read_results(d.results), read_speakers(d.speakers))
    [acc, inter] = disaggregate(stats, ["accent", ("accent", "gender")], None, min_speakers=1)
    assert inter.by == ("accent", "gender")
    assert inter.by_group["n_speakers"].sum() == 120
    assert inter.by_group["errors"].sum() == acc.by_group["errors"].sum() == stats.errors.sum()
    assert all(" × " in g for g in inter.by_group["group"])


def test_numeric_column_is_binned_in_quantiles() -> None:
    d = make_synthetic_audit(n_speakers=100, seed=2)
    from fairstream.audit.inputs import read_speakers

    stats = speaker_stats(read_results(d.results), read_speakers(d.speakers))
    [g] = disaggregate(stats, ["lat"], None, min_speakers=1)
    assert len(g.by_group) == 5
    assert g.by_group["n_speakers"].sum() == 100


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 3), st.integers(0, 5), st.integers(0, 5),
                  st.integers(0, 5), st.integers(0, 12)),
        min_size=1, max_size=40,
    ),
    st.integers(1, 4),
)
def test_group_error_counts_sum_to_totals(utts, min_speakers) -> None:
    rows = [(f"u{i}", f"s{s}", f"g{g}", a, b, c, h) for i, (s, g, a, b, c, h) in enumerate(utts)]
    stats = _stats(rows)
    # group is an utterance column, so its speaker-level value is the first one: still a partition
    boot = SpeakerBootstrap.draw(stats.n_speakers, 8, seed=0)
    part = apply_min_size(partition_by(stats, "group"), min_speakers)
    [tab], overall = compare_partitions([part], stats, boot)
    ok = tab["status"] != "suppressed"
    visible = tab.loc[ok, ["errors", "ref_words", "n_speakers", "n_utterances"]].sum()
    hidden_spk = stats.n_speakers - visible["n_speakers"]
    if not (~ok).any():
        assert visible["errors"] == sum(a + b + c for _, _, _, a, b, c, _ in rows)
        assert visible["ref_words"] == sum(a + b + h for _, _, _, a, b, _, h in rows)
        assert visible["n_utterances"] == len(rows)
        assert hidden_spk == 0
    else:
        assert 0 < hidden_spk < min_speakers
    assert overall["errors"] == sum(a + b + c for _, _, _, a, b, c, _ in rows)
    assert overall["n_speakers"] == stats.n_speakers


def test_small_groups_are_merged_then_suppressed() -> None:
    rows = []
    sizes = {"big": 12, "small1": 6, "small2": 5, "tiny": 3}
    k = 0
    for g, n in sizes.items():
        for s in range(n):
            rows.append((f"u{k}", f"{g}_s{s}", g, 1, 0, 0, 9))
            k += 1
    stats = _stats(rows)
    [g] = disaggregate(stats, ["group"], None, min_speakers=10)
    tab = g.by_group.set_index("group")
    assert tab.loc["big", "status"] == "ok"
    assert tab.loc[MERGED, "status"] == "merged" and tab.loc[MERGED, "n_speakers"] == 14
    assert "small1" not in tab.index and "tiny" not in tab.index
    [g2] = disaggregate(_stats([r for r in rows if r[2] in {"big", "tiny"}]), ["group"], None,
                        min_speakers=10)
    tab2 = g2.by_group.set_index("group")
    assert tab2.loc[SUPPRESSED, "status"] == "suppressed"
    assert np.isnan(tab2.loc[SUPPRESSED, "wer"]) and np.isnan(tab2.loc[SUPPRESSED, "n_speakers"])
    # suppressed speakers still count in the rest of the reported group
    assert tab2.loc["big", "wer_rest"] == pytest.approx(0.1)


def test_bootstrap_intervals_cover_point_and_detect_planted_gap() -> None:
    d = make_synthetic_audit(n_speakers=300, accent_factor=2.0, seed=4)
    from fairstream.audit.inputs import read_speakers

    stats = speaker_stats(read_results(d.results), read_speakers(d.speakers))
    boot = SpeakerBootstrap.draw(stats.n_speakers, 300, seed=1)
    [g] = disaggregate(stats, ["accent"], boot)
    t = g.by_group
    assert ((t["wer_ci_low"] <= t["wer"]) & (t["wer"] <= t["wer_ci_high"])).all()
    planted = t["group"].isin(d.planted["under_represented_accents"])
    assert (t.loc[planted, "p_value"] < 0.01).all()
    assert (t.loc[planted, "gap_ci_low"] > 0).all()
    assert set(t["group"].head(2)) == set(d.planted["under_represented_accents"])
    assert g.overall["wer_ci_low"] < g.overall["wer"] < g.overall["wer_ci_high"]


def test_point_estimates_agree_with_fairlearn_metricframe() -> None:
    from fairlearn.metrics import MetricFrame

    d = make_synthetic_audit(n_speakers=80, utts_per_speaker=5, seed=5)
    from fairstream.audit.inputs import read_speakers

    stats = speaker_stats(read_results(d.results), read_speakers(d.speakers))
    [ours] = disaggregate(stats, ["accent"], None, min_speakers=1)
    utt = d.results.merge(d.speakers[["speaker_id", "accent"]], on="speaker_id")
    words = (utt["hits"] + utt["sub"] + utt["del"]).to_numpy()
    errors = (utt["sub"] + utt["del"] + utt["ins"]).to_numpy()

    def wer(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.sum(y_pred) / np.sum(y_true))

    mf = MetricFrame(metrics=wer, y_true=words, y_pred=errors, sensitive_features=utt["accent"])
    theirs = mf.by_group
    got = ours.by_group.set_index("group")["wer"]
    assert set(got.index) == set(theirs.index)
    for k in theirs.index:
        assert got[k] == pytest.approx(float(theirs[k]), rel=1e-12)
    assert ours.overall["wer"] == pytest.approx(float(mf.overall), rel=1e-12)
    assert ours.difference == pytest.approx(float(mf.difference()), rel=1e-12)


def test_unknown_cohort_for_speakers_without_metadata() -> None:
    df = pd.DataFrame({"utt_id": ["a", "b", "c"], "speaker_id": ["s1", "s2", "s3"],
                       "sub": [1, 1, 1], "del": [0, 0, 0], "ins": [0, 0, 0], "hits": [4, 4, 4]})
    spk = pd.DataFrame({"accent": ["x"]}, index=pd.Index(["s1"], name="speaker_id"))
    stats = speaker_stats(read_results(df), spk)
    assert stats.n_unknown_speakers == 2
    assert any("no row in the speaker table" in n for n in stats.notes)
    [g] = disaggregate(stats, ["accent"], None, min_speakers=1)
    tab = g.by_group.set_index("group")
    assert tab.loc[UNKNOWN, "n_speakers"] == 2 and tab.loc["x", "n_speakers"] == 1


def test_unknown_column_is_named() -> None:
    stats = _stats([("u1", "s1", "a", 0, 0, 0, 3)])
    from fairstream.errors import InputDataError

    with pytest.raises(InputDataError, match="'nope'"):
        disaggregate(stats, ["nope"], None)
