"""EER, minDCF, DET points, per-group fairness and the speaker bootstrap.

Each metric is checked against an independent computation: a brute-force threshold sweep
written with Python loops, scikit-learn's ``roc_curve``, and a literal port of Kaldi's
``sid/compute_min_dcf.py`` (tie-free scores, where Kaldi's tie handling does not matter).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from fairstream.errors import InputDataError
from fairstream.metrics.verification import (
    bootstrap_eer,
    bootstrap_eer_difference,
    cosine_scores,
    det_curve,
    eer,
    fairness_discrepancy_rate,
    group_fairness,
    min_dcf,
    trial_groups,
    verification_metrics,
)


def _random_trials(seed: int, n_t: int, n_n: int, shift: float, rounding: int | None = None):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(shift, 1.0, n_t), rng.normal(0.0, 1.0, n_n)]
    if rounding is not None:
        s = np.round(s, rounding)  # creates ties
    y = np.r_[np.ones(n_t, int), np.zeros(n_n, int)]
    perm = rng.permutation(s.size)
    return s[perm], y[perm]


def _brute_force_points(scores, labels):
    """Loop over every candidate threshold: P_miss and P_fa when accepting score > t."""
    thresholds = [-math.inf] + sorted(set(scores.tolist()))
    n_t = sum(1 for v in labels if v == 1)
    n_n = len(labels) - n_t
    points = []
    for t in thresholds:
        miss = sum(1 for s, v in zip(scores, labels) if v == 1 and s <= t)
        fa = sum(1 for s, v in zip(scores, labels) if v == 0 and s > t)
        points.append((miss / n_t, fa / n_n))
    return points


def _interpolated_crossing(p_miss, p_fa):
    for k in range(1, len(p_miss)):
        if p_miss[k] >= p_fa[k]:
            m0, m1, f0, f1 = p_miss[k - 1], p_miss[k], p_fa[k - 1], p_fa[k]
            a = (f0 - m0) / ((m1 - m0) - (f1 - f0))
            return m0 + a * (m1 - m0)
    raise AssertionError("no crossing")


def _kaldi_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """A literal port of Kaldi's egs/sre08/v1/sid/compute_min_dcf.py."""
    pairs = sorted(enumerate(scores), key=lambda x: x[1])
    lab = [labels[i] for i, _ in pairs]
    fnrs, fprs = [], []
    for i in range(len(lab)):
        if i == 0:
            fnrs.append(lab[i])
            fprs.append(1 - lab[i])
        else:
            fnrs.append(fnrs[i - 1] + lab[i])
            fprs.append(fprs[i - 1] + 1 - lab[i])
    fnrs_norm = sum(lab)
    fprs_norm = len(lab) - fnrs_norm
    fnrs = [x / float(fnrs_norm) for x in fnrs]
    fprs = [1 - x / float(fprs_norm) for x in fprs]
    min_c_det = float("inf")
    for i in range(len(fnrs)):
        c_det = c_miss * fnrs[i] * p_target + c_fa * fprs[i] * (1 - p_target)
        min_c_det = min(min_c_det, c_det)
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return min_c_det / c_def


RANDOM_CASES = [
    (0, 50, 500, 2.0, None),
    (1, 200, 200, 1.0, None),
    (2, 30, 1000, 3.0, None),
    (3, 100, 400, 1.5, 1),  # heavy ties
    (4, 10, 10, 0.0, None),
]


@pytest.mark.parametrize(("seed", "n_t", "n_n", "shift", "rounding"), RANDOM_CASES)
def test_eer_matches_brute_force_sweep(seed, n_t, n_n, shift, rounding) -> None:
    s, y = _random_trials(seed, n_t, n_n, shift, rounding)
    points = _brute_force_points(s, y)
    expected = _interpolated_crossing([p[0] for p in points], [p[1] for p in points])
    got = eer(s, y)
    assert got == pytest.approx(expected, abs=1e-12)
    # the EER lies between the best achievable min and max of the two error rates
    lowest = max(min(m, f) for m, f in points)
    highest = min(max(m, f) for m, f in points)
    assert lowest - 1e-12 <= got <= highest + 1e-12


@pytest.mark.parametrize(("seed", "n_t", "n_n", "shift", "rounding"), RANDOM_CASES)
def test_eer_matches_sklearn_roc(seed, n_t, n_n, shift, rounding) -> None:
    s, y = _random_trials(seed, n_t, n_n, shift, rounding)
    fpr, tpr, _ = roc_curve(y, s)
    # sklearn runs from (fpr, fnr) = (0, 1) to (1, 0); ours from the other end
    expected = _interpolated_crossing(list((1 - tpr)[::-1]), list(fpr[::-1]))
    assert eer(s, y) == pytest.approx(expected, abs=1e-12)


def test_det_points_are_the_sklearn_roc_vertices() -> None:
    s, y = _random_trials(7, 40, 300, 1.0, 1)
    pts = det_curve(s, y)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    ours = sorted(zip(np.round(pts.p_fa, 12), np.round(pts.p_miss, 12)))
    theirs = sorted(zip(np.round(fpr, 12), np.round(1 - tpr, 12)))
    assert ours == theirs
    assert np.all(np.diff(pts.p_miss) >= 0) and np.all(np.diff(pts.p_fa) <= 0)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
@pytest.mark.parametrize(("seed", "n_t", "n_n", "shift"), [(0, 50, 500, 2.0), (5, 300, 3000, 1.0)])
def test_min_dcf_matches_kaldi(seed, n_t, n_n, shift, p_target) -> None:
    s, y = _random_trials(seed, n_t, n_n, shift)
    assert np.unique(s).size == s.size  # Kaldi splits ties arbitrarily; compare tie-free
    assert min_dcf(s, y, p_target=p_target) == pytest.approx(
        _kaldi_min_dcf(s.tolist(), y.tolist(), p_target), abs=1e-12
    )


def test_min_dcf_with_unequal_costs_matches_kaldi() -> None:
    s, y = _random_trials(11, 80, 800, 1.5)
    got = min_dcf(s, y, p_target=0.05, c_miss=10.0, c_fa=1.0)
    assert got == pytest.approx(_kaldi_min_dcf(s.tolist(), y.tolist(), 0.05, 10.0, 1.0), abs=1e-12)


# (scores, labels, expected EER, expected minDCF at P_target 0.5)
HAND_CASES = [
    ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 0.0, 0.0),  # separable
    ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 1.0, 1.0),  # perfectly inverted
    ([0.9, 0.3, 0.7, 0.1], [1, 1, 0, 0], 0.5, 0.5),  # one of each on the wrong side
    ([0.5, 0.5, 0.5, 0.5], [1, 1, 0, 0], 0.5, 1.0),  # all tied: chance
    ([0.9, 0.8, 0.6, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0], 1 / 3, 1 / 3),
]


@pytest.mark.parametrize(("scores", "labels", "expected_eer", "expected_dcf"), HAND_CASES)
def test_hand_made_cases(scores, labels, expected_eer, expected_dcf) -> None:
    assert eer(scores, labels) == pytest.approx(expected_eer)
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(expected_dcf)


def test_verification_metrics_states_prior_and_normalization() -> None:
    s, y = _random_trials(3, 100, 1000, 2.0)
    m = verification_metrics(s, y)
    assert [p.p_target for p in m.min_dcf] == [0.01, 0.05]
    assert all("Kaldi" in p.normalization for p in m.min_dcf)
    assert m.dcf(0.05) == pytest.approx(min_dcf(s, y, p_target=0.05))
    assert (m.n_target, m.n_nontarget) == (100, 1000)
    # the EER threshold is an operating point near the crossing
    miss = float(np.mean(s[y == 1] <= m.eer_threshold))
    fa = float(np.mean(s[y == 0] > m.eer_threshold))
    assert abs(miss - m.eer) < 0.02 and abs(fa - m.eer) < 0.02


def test_group_fairness_hand_made() -> None:
    # group "a": separable (EER 0); group "b": one target below one non-target (EER 0.5)
    scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.4, 0.6, 0.5]
    labels = [1, 1, 0, 0, 1, 1, 0, 0, 0]
    groups = ["a", "a", "a", "a", "b", "b", "b", "b", None]
    r = group_fairness(scores, labels, groups, column="gender")
    assert r.column == "gender"
    assert set(r.by_group) == {"a", "b"}
    assert r.by_group["a"].eer == pytest.approx(0.0)
    assert r.by_group["b"].eer == pytest.approx(0.5)
    assert (r.group_min, r.group_max) == ("a", "b")
    assert r.difference == pytest.approx(0.5)
    assert r.std == pytest.approx(0.25)
    assert math.isinf(r.relative_gap)  # best group has EER 0
    # overall includes the cross-group trial (None)
    assert r.overall.n_target + r.overall.n_nontarget == 9


def test_fdr_hand_made() -> None:
    # threshold 0.5: group a FMR 0/2, FNMR 0/2; group b FMR 1/2, FNMR 1/2
    scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.4, 0.6]
    labels = [1, 1, 0, 0, 1, 1, 0, 0]
    groups = ["a"] * 4 + ["b"] * 4
    assert fairness_discrepancy_rate(scores, labels, groups, threshold=0.5) == pytest.approx(0.5)
    assert fairness_discrepancy_rate(
        scores, labels, groups, threshold=0.5, alpha=1.0
    ) == pytest.approx(0.5)
    same = ["a", "a", "a", "a", "b", "b", "b", "b"]
    perfect = [0.9, 0.8, 0.1, 0.2, 0.9, 0.8, 0.1, 0.2]
    assert fairness_discrepancy_rate(perfect, labels, same, threshold=0.5) == pytest.approx(1.0)


def test_trial_groups_keeps_only_same_group_pairs() -> None:
    g = trial_groups(["f", "f", "m", None], ["f", "m", "m", "m"])
    assert g.tolist() == ["f", None, "m", None]


def test_group_fairness_skips_groups_without_both_kinds() -> None:
    scores = [0.9, 0.1, 0.8, 0.2, 0.7]
    labels = [1, 0, 1, 0, 1]
    with pytest.raises(InputDataError, match="fewer than two groups"):
        group_fairness(scores, labels, ["a", "a", "a", "a", "b"], column="accent")
    r = group_fairness(
        scores + [0.3, 0.6], labels + [0, 1], ["a", "a", "b", "b", "c", "c", "d"], column="x"
    )
    assert "d" in r.skipped and "undefined" in r.skipped["d"]


def test_bootstrap_interval_contains_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    speakers = [f"s{i}" for i in range(30)]
    gender = {s: ("f" if i % 2 else "m") for i, s in enumerate(speakers)}
    sa, sb, y, sc = [], [], [], []
    for i, a in enumerate(speakers):
        for _ in range(5):
            sa.append(a), sb.append(a), y.append(1)
            sc.append(rng.normal(2.0 if gender[a] == "f" else 1.0))
        for b in rng.choice(speakers, 10):
            if b != a:
                sa.append(a), sb.append(str(b)), y.append(0), sc.append(rng.normal(0.0))
    groups = trial_groups([gender[a] for a in sa], [gender[b] for b in sb])
    r1 = bootstrap_eer(sc, y, sa, sb, groups=groups, n_boot=200, seed=1)
    r2 = bootstrap_eer(sc, y, sa, sb, groups=groups, n_boot=200, seed=1)
    assert r1 == r2
    assert r1.n_speakers == 30
    assert r1.eer.low <= r1.eer.estimate <= r1.eer.high
    assert r1.eer.estimate == pytest.approx(eer(sc, y))
    assert set(r1.group_eer) == {"f", "m"}
    assert r1.group_eer["f"].estimate < r1.group_eer["m"].estimate
    assert r1.difference is not None and r1.difference.low < r1.difference.high
    assert 0 < r1.eer.high - r1.eer.low < 0.3


def test_bootstrap_rejects_target_trial_with_two_speakers() -> None:
    with pytest.raises(InputDataError, match="target trial 0 pairs two speakers"):
        bootstrap_eer([0.5, 0.1], [1, 0], ["a", "a"], ["b", "b"], n_boot=2)


BAD_INPUTS = [
    ([0.1, 0.2], [1, 1], "no non-target trials"),
    ([0.1, 0.2], [0, 0], "no target trials"),
    ([0.1, float("nan"), 0.3], [1, 0, 0], "score of trial 1 is nan"),
    ([0.1, float("inf")], [1, 0], "score of trial 1 is inf"),
    ([0.1, 0.2], [1, 2], "label of trial 1 is 2"),
    ([0.1, 0.2, 0.3], [1, 0], "3 scores but 2 labels"),
]


@pytest.mark.parametrize(("scores", "labels", "message"), BAD_INPUTS)
def test_bad_inputs_raise_named_errors(scores, labels, message) -> None:
    with pytest.raises(InputDataError, match=message):
        eer(scores, labels)


def test_nan_score_error_names_the_trial() -> None:
    with pytest.raises(InputDataError, match=r"trial 1 \(1 a\.wav b\.wav\)"):
        verification_metrics([0.1, float("nan")], [1, 0], names=["1 a.wav a.wav", "1 a.wav b.wav"])


def test_cosine_scores_and_dimension_mismatch() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0]])
    assert cosine_scores(a, b).tolist() == pytest.approx([1.0, -1.0])
    with pytest.raises(InputDataError, match="embedding dimensions differ: 2 .* vs 3"):
        cosine_scores(a, np.ones((2, 3)))


def test_one_million_trials_are_scored() -> None:
    # speed is measured by benchmarks/sv.py, not asserted here
    s, y = _random_trials(0, 100_000, 900_000, 2.0)
    m = verification_metrics(s, y)
    assert 0.05 < m.eer < 0.25


def test_paired_difference_of_identical_systems_is_zero_and_detects_a_better_one() -> None:
    rng = np.random.default_rng(2)
    speakers = [f"s{i}" for i in range(20)]
    sa, sb, y = [], [], []
    for i, a in enumerate(speakers):
        for _ in range(6):
            sa.append(a), sb.append(a), y.append(1)
        for b in speakers[i + 1 : i + 7]:
            sa.append(a), sb.append(b), y.append(0)
    y_arr = np.array(y)
    base = rng.normal(1.5 * y_arr, 1.0)
    groups = trial_groups([int(s[1:]) % 2 for s in sa], [int(s[1:]) % 2 for s in sb])
    same = bootstrap_eer_difference(base, base, y, sa, sb, groups=groups, n_boot=100)
    assert same.eer.estimate == 0 and same.eer.low == 0 and same.eer.high == 0
    better = base + 1.0 * y_arr  # targets score higher: lower EER
    d = bootstrap_eer_difference(base, better, y, sa, sb, groups=groups, n_boot=200)
    assert d.eer.estimate == pytest.approx(eer(better, y) - eer(base, y))
    assert d.eer.high < 0
    assert d.difference is not None and d.std is not None
