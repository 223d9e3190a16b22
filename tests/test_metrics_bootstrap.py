"""Speaker bootstrap primitives: weights, products, intervals, p-values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fairstream.metrics.bootstrap import (
    SpeakerBootstrap,
    group_indicator,
    percentile_interval,
    ratio_replicates,
    two_sided_p_value,
)


def test_each_replicate_draws_every_speaker_count_once_in_total() -> None:
    b = SpeakerBootstrap.draw(37, 50, seed=3, chunk=7)
    assert b.weights_t.shape == (37, 50)
    np.testing.assert_array_equal(b.weights_t.sum(axis=0), np.full(50, 37.0))
    assert (b.weights_t >= 0).all()
    assert (b.weights_t == np.round(b.weights_t)).all()


def test_weights_are_reproducible_and_seed_dependent() -> None:
    a = SpeakerBootstrap.draw(20, 10, seed=1).weights_t
    b = SpeakerBootstrap.draw(20, 10, seed=1, chunk=3).weights_t
    c = SpeakerBootstrap.draw(20, 10, seed=2).weights_t
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_multiplicities_have_multinomial_mean_and_variance() -> None:
    b = SpeakerBootstrap.draw(200, 400, seed=0)
    assert b.weights_t.mean() == pytest.approx(1.0)
    assert b.weights_t.var() == pytest.approx(1 - 1 / 200, rel=0.05)


def test_sparse_and_dense_totals_equal_explicit_resampling_sums() -> None:
    rng = np.random.default_rng(0)
    s = 30
    b = SpeakerBootstrap.draw(s, 5, seed=9)
    x = rng.integers(0, 20, (4, s)).astype(np.float64)
    dense = b.totals(x)
    sparse = b.totals(sp.csr_matrix(x))
    loop = np.stack([x @ b.weights_t[:, r] for r in range(5)], axis=1)
    np.testing.assert_allclose(dense, loop)
    np.testing.assert_allclose(sparse, loop)


def test_group_indicator_leaves_out_negative_codes() -> None:
    m = group_indicator(np.array([0, 1, -1, 1]), 2, np.array([5.0, 6.0, 7.0, 8.0])).toarray()
    np.testing.assert_array_equal(m, [[5, 0, 0, 0], [0, 6, 0, 8]])


def test_ratio_is_nan_where_denominator_is_zero() -> None:
    r = ratio_replicates(np.array([1.0, 2.0]), np.array([0.0, 4.0]))
    assert np.isnan(r[0]) and r[1] == 0.5


def test_percentile_interval_ignores_nan_and_handles_empty() -> None:
    reps = np.array([[np.nan, *range(1, 101)], [np.nan] * 101])
    lo, hi = percentile_interval(reps, 0.9)
    assert lo[0] == pytest.approx(5.95) and hi[0] == pytest.approx(95.05)
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    lo0, _hi0 = percentile_interval(np.zeros((3, 0)))
    assert lo0.shape == (3,) and np.isnan(lo0).all()
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(reps, 1.5)


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        (np.full(99, 1.0), 2 / 100),  # every replicate positive: smallest p
        (np.r_[np.full(50, -1.0), np.full(49, 1.0)], 1.0),  # balanced: no evidence
        (np.r_[np.full(9, -1.0), np.full(90, 1.0)], 2 * 10 / 100),
    ],
)
def test_two_sided_p_value(diffs: np.ndarray, expected: float) -> None:
    assert two_sided_p_value(diffs) == pytest.approx(expected)
