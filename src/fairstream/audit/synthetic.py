"""Synthetic results tables with planted cohorts, to test and benchmark the audit.

The truth is known: some accents, a geographic region and the speakers of some zip codes
are served worse by construction, and speaker embeddings cluster by accent. Every audit
method can then be checked against what was planted (and timed at any scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticAudit", "make_synthetic_audit"]


@dataclass(frozen=True)
class SyntheticAudit:
    """A results table and everything the audit reads next to it.

    Attributes:
        results: one row per utterance (utt_id, speaker_id, sub, del, ins, hits, n_ref_words).
        speakers: speaker table (speaker_id, accent, gender, age_band, lat, lon, zip).
        zip_demographics: zip table (zip, lat, lon, urbanicity, majority_income_band, ...).
        embedding_ids: (S,) speaker ids of ``embeddings``.
        embeddings: (S, D) float32 speaker embeddings clustered by accent.
        planted: ``{"under_represented_accents": [...], "geo_west_of": lon, "urbanicity": value}``.
    """

    results: pd.DataFrame
    speakers: pd.DataFrame
    zip_demographics: pd.DataFrame
    embedding_ids: np.ndarray
    embeddings: np.ndarray
    planted: dict[str, object]


def make_synthetic_audit(
    *,
    n_speakers: int = 200,
    utts_per_speaker: int = 10,
    words_per_utt: int = 10,
    n_accents: int = 6,
    n_planted_accents: int = 2,
    base_wer: float = 0.10,
    accent_factor: float = 2.0,
    geo_factor: float = 1.0,
    geo_west_of: float = -100.0,
    rural_factor: float = 1.0,
    n_zips: int = 60,
    embedding_dim: int = 16,
    embedding_noise: float = 0.6,
    speaker_sigma: float = 0.15,
    seed: int = 0,
) -> SyntheticAudit:
    """Generate a synthetic audit input.

    A speaker's expected WER is ``base_wer × accent_factor (planted accents) × geo_factor
    (lon < geo_west_of) × rural_factor (zip urbanicity "rural") × lognormal(speaker_sigma)``.
    Utterance error counts are binomial draws around it; the counts obey
    ``n_ref_words = hits + sub + del``.
    """
    rng = np.random.default_rng(seed)
    s = n_speakers
    accents = np.array([f"accent_{i}" for i in range(n_accents)])
    planted = accents[n_accents - n_planted_accents:]
    spk_accent = accents[rng.integers(0, n_accents, s)]
    spk_ids = np.array([f"spk{i:06d}" for i in range(s)])
    lat = rng.uniform(25.0, 49.0, s)
    lon = rng.uniform(-124.0, -67.0, s)
    zip_codes = np.array([f"{10000 + 7 * i:05d}" for i in range(n_zips)])
    urbanicity = np.array(["urban", "suburban", "rural"])[np.arange(n_zips) % 3]
    income = np.array(["low", "middle", "high"])[rng.integers(0, 3, n_zips)]
    education = np.array(["high school", "some college", "bachelor+"])[rng.integers(0, 3, n_zips)]
    spk_zip_idx = rng.integers(0, n_zips, s)

    factor = np.ones(s)
    factor[np.isin(spk_accent, planted)] *= accent_factor
    factor[lon < geo_west_of] *= geo_factor
    factor[urbanicity[spk_zip_idx] == "rural"] *= rural_factor
    p = np.clip(base_wer * factor * rng.lognormal(0.0, speaker_sigma, s), 0.0, 0.9)

    n_utt = s * utts_per_speaker
    spk_of_utt = np.repeat(np.arange(s), utts_per_speaker)
    n_words = np.maximum(1, rng.poisson(words_per_utt, n_utt))
    pu = p[spk_of_utt]
    sub = rng.binomial(n_words, 0.6 * pu)
    dele = rng.binomial(n_words - sub, np.clip(0.3 * pu / np.maximum(1 - 0.6 * pu, 1e-6), 0, 1))
    ins = rng.poisson(0.1 * pu * n_words)
    results = pd.DataFrame({
        "utt_id": [f"u{i:08d}" for i in range(n_utt)] if n_utt <= 200_000
        else np.char.add("u", np.char.zfill(np.arange(n_utt).astype(str), 8)).astype(object),
        "speaker_id": spk_ids[spk_of_utt],
        "n_ref_words": n_words.astype(np.int64),
        "sub": sub.astype(np.int64),
        "del": dele.astype(np.int64),
        "ins": ins.astype(np.int64),
        "hits": (n_words - sub - dele).astype(np.int64),
    })
    speakers = pd.DataFrame({
        "speaker_id": spk_ids,
        "accent": spk_accent,
        "gender": np.array(["female", "male"])[rng.integers(0, 2, s)],
        "age_band": np.array(["18-29", "30-44", "45-59", "60+"])[rng.integers(0, 4, s)],
        "lat": lat,
        "lon": lon,
        "zip": zip_codes[spk_zip_idx],
    })
    zips = pd.DataFrame({
        "zip": zip_codes,
        "lat": rng.uniform(25.0, 49.0, n_zips),
        "lon": rng.uniform(-124.0, -67.0, n_zips),
        "urbanicity": urbanicity,
        "majority_income_band": income,
        "majority_education": education,
        "median_household_income": rng.normal(60000, 15000, n_zips).round(-2),
    })
    centers = rng.normal(0.0, 1.0, (n_accents, embedding_dim)).astype(np.float32)
    acc_idx = np.searchsorted(accents, spk_accent)
    emb = centers[acc_idx] + rng.normal(0.0, embedding_noise, (s, embedding_dim)).astype(np.float32)
    return SyntheticAudit(
        results=results,
        speakers=speakers,
        zip_demographics=zips,
        embedding_ids=spk_ids.astype(object),
        embeddings=emb.astype(np.float32),
        planted={
            "under_represented_accents": [str(a) for a in planted],
            "geo_west_of": geo_west_of,
            "urbanicity": "rural",
        },
    )
