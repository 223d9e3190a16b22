"""Geographic tree: finds a planted split, leaves noise alone, respects sizes and bad
coordinates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairstream.audit.geo_tree import GeoTreeConfig, grow_geo_tree, valid_coordinates
from fairstream.audit.inputs import read_results, read_speakers
from fairstream.audit.speaker_stats import speaker_stats
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap


def _stats(**kw):
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
