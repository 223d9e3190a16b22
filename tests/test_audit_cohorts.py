"""Geodemographic partitions, embedding k-means and planted-cohort recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fairstream.audit.embedding_cohorts import (
    EmbeddingConfig,
    fallback_embeddings,
    find_embedding_cohorts,
    speaker_mean_embeddings,
)
from fairstream.audit.geodemographic import GeodemographicConfig, search_geodemographic
from fairstream.audit.inputs import read_results, read_speakers, read_zip_demographics
from fairstream.audit.recovery import load_planted, planted_mask, recovery
from fairstream.audit.speaker_stats import speaker_stats
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.data.layout import CorpusVersionError
from fairstream.errors import CorpusError, InputDataError


def _load(d):
    return speaker_stats(read_results(d.results), read_speakers(d.speakers))


def test_geodemographic_recovers_planted_rural_cohort() -> None:
    d = make_synthetic_audit(n_speakers=400, accent_factor=1.0, rural_factor=2.0, seed=2)
    stats = _load(d)
    res = search_geodemographic(stats, read_zip_demographics(d.zip_demographics))
    assert res.attribute == "urbanicity"
    assert res.bottom_definition == "urbanicity in {rural}"
    assert res.n_candidates > 10
    zips = read_zip_demographics(d.zip_demographics)
    rural = zips.loc[stats.table["zip"].to_numpy(), "urbanicity"].to_numpy() == "rural"
    np.testing.assert_array_equal(res.partition.codes == 0, rural)
    assert res.candidates["gap_pct"].is_monotonic_decreasing


def test_geodemographic_counts_unknown_and_missing_zips() -> None:
    d = make_synthetic_audit(n_speakers=200, rural_factor=2.0, seed=3)
    spk = d.speakers.copy()
    spk["zip"] = spk["zip"].astype(object)
    spk.loc[0, "zip"] = None
    spk.loc[1, "zip"] = "99999"
    stats = speaker_stats(read_results(d.results), read_speakers(spk))
    res = search_geodemographic(stats, read_zip_demographics(d.zip_demographics))
    reasons = {x.reason: x.count for x in res.exclusions}
    assert reasons == {"speaker has no zip code": 1, "zip code not in the demographics table": 1}
    assert (res.partition.codes[:2] == -1).all()


def test_geodemographic_errors_are_named() -> None:
    d = make_synthetic_audit(n_speakers=50, seed=0)
    stats = _load(d)
    zips = read_zip_demographics(d.zip_demographics)
    with pytest.raises(InputDataError, match="'nope'"):
        search_geodemographic(stats, zips, GeodemographicConfig(zip_col="nope"))
    with pytest.raises(InputDataError, match="no speaker zip code matches"):
        search_geodemographic(stats, zips.set_axis([f"{i:05d}" for i in range(len(zips))]))
    with pytest.raises(InputDataError, match="leaves 1000 speakers"):
        search_geodemographic(stats, zips, GeodemographicConfig(min_speakers=1000))


def test_kmeans_recovers_planted_accent_cohort() -> None:
    d = make_synthetic_audit(n_speakers=300, n_accents=4, n_planted_accents=1,
                             accent_factor=2.0, embedding_noise=0.3, seed=4)
    stats = _load(d)
    mat, has, ex = speaker_mean_embeddings(d.embedding_ids, d.embeddings, stats)
    assert has.all() and not ex
    res = find_embedding_cohorts(stats, mat, has, EmbeddingConfig(k_range=(2, 6)))
    assert res.k == 4
    assert max(res.silhouette, key=res.silhouette.get) == 4
    bottom_codes = [res.partition.labels.index(b) for b in res.bottom_labels]
    bottom = np.isin(res.partition.codes, bottom_codes)
    planted = planted_mask(stats.table["accent"].to_numpy(), d.planted)
    rec = recovery(bottom, planted, res.cluster_codes, stats.table["accent"].to_numpy())
    assert rec.precision == 1.0 and rec.recall == 1.0
    assert rec.adjusted_rand_accent > 0.95


def test_bottom_share_takes_worst_clusters_within_share() -> None:
    d = make_synthetic_audit(n_speakers=300, n_accents=4, n_planted_accents=2,
                             embedding_noise=0.3, seed=5)
    stats = _load(d)
    mat, has, _ = speaker_mean_embeddings(d.embedding_ids, d.embeddings, stats)
    res = find_embedding_cohorts(stats, mat, has, EmbeddingConfig(k=4, bottom_share=60.0))
    assert res.bottom_labels == ("cluster 1", "cluster 2")
    planted = planted_mask(stats.table["accent"].to_numpy(), d.planted)
    bottom = np.isin(res.partition.codes, [0, 1])
    assert recovery(bottom, planted, None, None).recall == 1.0


def test_utterance_embeddings_are_averaged_per_speaker() -> None:
    d = make_synthetic_audit(n_speakers=20, utts_per_speaker=2, seed=0)
    stats = _load(d)
    utt = d.results["utt_id"].to_numpy()
    spk = d.results["speaker_id"].to_numpy()
    vec = np.stack([np.full(3, float(i % 2)) for i in range(len(utt))]).astype(np.float32)
    import pandas as pd

    mat, has, _ex = speaker_mean_embeddings(utt, vec, stats, pd.Series(spk, index=utt))
    assert has.all() and np.allclose(mat, 0.5)
    _mat2, has2, ex2 = speaker_mean_embeddings(np.array(["zzz"]), vec[:1], stats)
    assert not has2.any()
    assert {x.reason for x in ex2} == {"embedding id is not an audited speaker or utterance",
                                       "speaker has no embedding"}


def test_kmeans_rejects_too_few_embeddings() -> None:
    d = make_synthetic_audit(n_speakers=30, seed=0)
    stats = _load(d)
    has = np.zeros(30, dtype=bool)
    has[:5] = True
    with pytest.raises(InputDataError, match="only 5 speakers"):
        find_embedding_cohorts(stats, np.zeros((30, 4), np.float32), has)


def test_fallback_embedding_from_audio(tmp_path: Path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    ids = ["spkA", "spkB", "spkC"]
    for i, spk in enumerate(ids[:2]):
        folder = tmp_path / "audio" / "test" / spk
        folder.mkdir(parents=True)
        for j in range(2):
            t = np.arange(8000) / 16000
            x = 0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t) + 0.01 * rng.normal(size=t.size)
            sf.write(folder / f"{spk}_{j}.flac", x.astype(np.float32), 16000)
    mat, has, ex = fallback_embeddings(tmp_path, ids)
    assert mat.shape == (3, 160) and has.tolist() == [True, True, False]
    assert not np.allclose(mat[0], mat[1])
    assert ex[-1].reason == "speaker has no audio for the fallback embedding"
    with pytest.raises(InputDataError, match="no audio directory"):
        fallback_embeddings(tmp_path / "nothing", ids)


def test_load_planted(tmp_path: Path) -> None:
    assert load_planted(tmp_path) is None
    planted = {"format": "fairstream-corpus", "version": 1,
               "planted": {"under_represented_accents": ["x"]}}
    (tmp_path / "corpus.json").write_text(json.dumps(planted))
    assert load_planted(tmp_path) == {"under_represented_accents": ["x"]}
    (tmp_path / "corpus.json").write_text(json.dumps({**planted, "version": 99}))
    with pytest.raises(CorpusVersionError, match="version 99"):
        load_planted(tmp_path)
    (tmp_path / "corpus.json").write_text("{nope")
    with pytest.raises(CorpusError, match="not valid JSON"):
        load_planted(tmp_path)
    mask = planted_mask(np.array(["x", "y"]), {"under_represented_accents": ["x"]})
    assert mask is not None and mask.tolist() == [True, False]
    assert planted_mask(np.array(["x"]), {}) is None
