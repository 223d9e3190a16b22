"""Geographic tree: finds a planted split, leaves noise alone, respects sizes and bad
coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fairstream.audit.geo_tree import GeoTreeConfig, grow_geo_tree, valid_coordinates
from fairstream.audit.inputs import read_results, read_speakers
from fairstream.audit.speaker_stats import SpeakerStats, speaker_stats
from fairstream.audit.synthetic import SyntheticAudit, make_synthetic_audit
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap


def _stats(**kw: Any) -> tuple[SyntheticAudit, SpeakerStats]:
    d = make_synthetic_audit(**kw)
    return d, speaker_stats(read_results(d.results), read_speakers(d.speakers))


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_planted_longitude_split(seed: int) -> None:
    _d, stats = _stats(n_speakers=400, geo_factor=2.0, accent_factor=1.0, seed=seed)
    boot = SpeakerBootstrap.draw(stats.n_speakers, 300, seed=seed)
    tree = grow_geo_tree(stats, boot, GeoTreeConfig(max_regions=8))
    root = tree.tests[0]
    assert root.path == "all" and root.applied and root.axis == "lon"
    assert abs(root.threshold - (-100.0)) < 3.0
    # no spurious split inside the homogeneous halves
    assert len(tree.regions) == 2
    west = stats.table["lon"].to_numpy() < -100
    codes = tree.partition.codes
    worst = max(range(2),
                key=lambda r: stats.errors[codes == r].sum() / stats.words[codes == r].sum())
    agree = np.mean((codes == worst) == west)
    assert agree > 0.97


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_does_not_split_pure_noise(seed: int) -> None:
    _, stats = _stats(n_speakers=400, geo_factor=1.0, accent_factor=1.0, speaker_sigma=0.3,
                      seed=10 + seed)
    boot = SpeakerBootstrap.draw(stats.n_speakers, 300, seed=seed)
    tree = grow_geo_tree(stats, boot)
    assert len(tree.regions) == 1
    assert not tree.tests[0].significant
    assert (tree.partition.codes == 0).all()


def test_region_sizes_and_max_regions() -> None:
    _, stats = _stats(n_speakers=500, geo_factor=2.5, accent_factor=2.5, speaker_sigma=0.05, seed=3)
    boot = SpeakerBootstrap.draw(stats.n_speakers, 300, seed=0)
    cfg = GeoTreeConfig(min_speakers=40, min_words=2000, max_regions=3)
    tree = grow_geo_tree(stats, boot, cfg)
    assert 2 <= len(tree.regions) <= 3
    sizes = np.bincount(tree.partition.codes)
    assert sizes.min() >= 40
    words = np.bincount(tree.partition.codes, weights=stats.words)
    assert words.min() >= 2000
    # boxes contain their speakers
    lat, lon = stats.table["lat"].to_numpy(), stats.table["lon"].to_numpy()
    for r in tree.regions:
        m = tree.partition.codes == r.region_id
        assert (lat[m] >= r.lat_min).all() and (lat[m] <= r.lat_max).all()
        assert (lon[m] >= r.lon_min).all() and (lon[m] <= r.lon_max).all()


def test_bad_coordinates_are_excluded_and_counted() -> None:
    d = make_synthetic_audit(n_speakers=100, seed=1)
    spk = d.speakers.copy()
    spk.loc[0, "lat"] = np.nan
    spk.loc[1, "lon"] = 250.0
    spk.loc[2, "lat"] = -95.0
    stats = speaker_stats(read_results(d.results), read_speakers(spk))
    tree = grow_geo_tree(stats, SpeakerBootstrap.draw(100, 50, seed=0))
    reasons = {x.reason: x.count for x in tree.exclusions}
    assert reasons["missing (NaN) latitude or longitude"] == 1
    assert reasons["latitude outside [-90, 90] or longitude outside [-180, 180]"] == 2
    assert (tree.partition.codes[:3] == -1).all() and (tree.partition.codes[3:] >= 0).all()


def test_valid_coordinates_mask() -> None:
    ok, ex = valid_coordinates(np.array([0.0, 91.0, np.nan]), np.array([0.0, 0.0, 0.0]))
    assert ok.tolist() == [True, False, False] and len(ex) == 2


def test_missing_coordinate_columns_are_named() -> None:
    df = pd.DataFrame({"utt_id": ["u"], "speaker_id": ["s"], "sub": [0], "del": [0], "ins": [0],
                       "hits": [1]})
    stats = speaker_stats(read_results(df))
    with pytest.raises(InputDataError, match="'lat'"):
        grow_geo_tree(stats, SpeakerBootstrap.draw(1, 10))


@dataclass(frozen=True)
class _Brute:
    axis: str
    threshold: float
    difference: float
    se: float
    critical_value: float
    p_value: float
    n_candidates: int


def _brute_force_split_test(stats: SpeakerStats, boot: SpeakerBootstrap, min_speakers: int,
                            min_words: int, alpha: float) -> _Brute:
    """The root split test by explicit loops: every threshold between distinct coordinates
    of both axes, each side's WER and linearized variance from its (resampled) speakers."""
    e, w = stats.errors.astype(float), stats.words.astype(float)

    def diff_se(left: np.ndarray, m: np.ndarray) -> tuple[float, float]:
        d, var = 0.0, 0.0
        for sign, side in ((1.0, left), (-1.0, ~left)):
            ms, es, ws = m[side], e[side], w[side]
            if ms @ ws == 0:
                return np.nan, np.nan
            r = (ms @ es) / (ms @ ws)
            d += sign * r
            var += (ms @ (es - r * ws) ** 2) / (ms @ ws) ** 2
        return d, np.sqrt(var)

    sides, thresholds, axes = [], [], []
    for axis in ("lat", "lon"):
        c = stats.table[axis].to_numpy(float)
        u = np.unique(c)
        for thr in (u[1:] + u[:-1]) / 2:
            left = c < thr
            if (min(left.sum(), (~left).sum()) >= min_speakers
                    and min(w[left].sum(), w[~left].sum()) >= min_words):
                sides.append(left)
                thresholds.append(thr)
                axes.append(axis)
    ones = np.ones(len(e))
    obs = np.array([diff_se(s, ones) for s in sides])  # (m, 2)
    chosen = int(np.argmax(np.abs(obs[:, 0])))
    stat = abs(obs[chosen, 0]) / obs[chosen, 1]
    maxima = []
    for r in range(boot.n_replicates):
        m = boot.weights_t[:, r].astype(float)
        t = [abs(d - d0) / se for (d0, _), (d, se) in zip(obs, (diff_se(s, m) for s in sides))
             if np.isfinite(d) and np.isfinite(se) and se > 0]
        if t:
            maxima.append(max(t))
    srt = np.sort(maxima)
    k = int(np.ceil((1 - alpha) * (len(srt) + 1) - 1e-9))
    return _Brute(axis=axes[chosen], threshold=float(thresholds[chosen]),
                  difference=float(obs[chosen, 0]), se=float(obs[chosen, 1]),
                  critical_value=float(srt[k - 1]) if k <= len(srt) else np.inf,
                  p_value=float((np.sum(srt >= stat) + 1) / (len(srt) + 1)),
                  n_candidates=len(sides))


@pytest.mark.parametrize(("geo_factor", "significant"), [(1.0, False), (3.0, True)])
def test_split_test_matches_brute_force(geo_factor: float, significant: bool) -> None:
    _, stats = _stats(n_speakers=40, utts_per_speaker=5, geo_factor=geo_factor,
                      accent_factor=1.0, seed=4)
    boot = SpeakerBootstrap.draw(stats.n_speakers, 200, seed=1)
    # 64 thresholds per axis > 40 speakers: every gap between coordinates is a candidate
    cfg = GeoTreeConfig(min_speakers=5, min_words=20, n_thresholds=64, max_regions=2)
    got = grow_geo_tree(stats, boot, cfg).tests[0]
    want = _brute_force_split_test(stats, boot, 5, 20, cfg.alpha)
    assert want.n_candidates > 40
    assert (got.axis, got.threshold) == (want.axis, pytest.approx(want.threshold))
    assert got.difference == pytest.approx(want.difference, rel=1e-12)
    assert got.se == pytest.approx(want.se, rel=1e-9)
    assert got.critical_value == pytest.approx(want.critical_value, rel=1e-5)
    assert got.method == "studentized bootstrap max-statistic"
    assert got.significant == (want.p_value <= cfg.alpha) == significant


def test_null_split_acceptance_rate_is_at_most_alpha_ish() -> None:
    """200 small null tables (60 speakers, 5 per side allowed, heavy speaker variation): the
    root split is accepted in at most 10 % (a fixed-standard-error max-statistic: 15 %)."""
    cfg = GeoTreeConfig(min_speakers=5, min_words=20, max_regions=2)
    accepted = 0
    for i in range(200):
        _, stats = _stats(n_speakers=60, utts_per_speaker=4, accent_factor=1.0,
                          speaker_sigma=0.4, embedding_dim=2, seed=1000 + i)
        tree = grow_geo_tree(stats, SpeakerBootstrap.draw(60, 200, seed=i), cfg)
        accepted += int(tree.tests[0].significant)
    assert accepted / 200 <= 0.10
