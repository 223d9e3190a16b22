"""Geodemographic cohorts (after Dheram et al., arXiv 2207.11345).

Speakers' zip codes are joined with a zip-level demographics table. For every attribute,
binary partitions of the zip codes by their majority value are searched: for a categorical
attribute with k ≤ ``max_values_exhaustive`` values every subset of values against the rest
(2^k − 2 candidates), above that each value against the rest; for a numeric attribute
(e.g. median income) ``value ≤ t`` and ``value > t`` at the deciles, merged where a bin between
two thresholds would hold fewer than ``min_speakers`` speakers. Each candidate's side
is a cohort; its discrepancy is the WER gap (%) of the cohort against the rest (every other
audited speaker). The candidate with the largest gap wins (both sides must have at least
``min_speakers`` speakers); its side with the higher WER is the bottom cohort.

Speakers with a missing zip code or one absent from the demographics table are in no cohort
(they still count in "rest") and are counted as exclusions of this method.
The search is vectorized: candidate masks (n_candidates × k) times value totals (k × 3).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairstream.audit.disaggregate import Partition
from fairstream.audit.inputs import Exclusion
from fairstream.audit.speaker_stats import UNKNOWN, SpeakerStats
from fairstream.errors import InputDataError, TooFewSpeakersError

__all__ = ["GeodemographicConfig", "GeodemographicResult", "search_geodemographic"]

logger = logging.getLogger(__name__)

_NOT_ATTRIBUTES = {"lat", "lon", "latitude", "longitude", "city", "county", "name"}


@dataclass(frozen=True)
class GeodemographicConfig:
    """Settings of the geodemographic search.

    Attributes:
        zip_col: speaker metadata column with the zip code.
        attributes: zip-table columns to search (None: every column except coordinates/names).
        min_speakers: minimum speakers on each side of a partition.
        max_values_exhaustive: categorical attributes with at most this many values get every
            subset; larger ones get one-vs-rest.
        numeric_quantiles: thresholds for numeric attributes.
    """

    zip_col: str = "zip"
    attributes: tuple[str, ...] | None = None
    min_speakers: int = 10
    max_values_exhaustive: int = 8
    numeric_quantiles: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class GeodemographicResult:
    """Outcome of the search.

    Attributes:
        partition: two groups, ``bottom`` (code 0) and ``top`` (code 1); -1 for speakers
            without a matched zip code.
        attribute: the winning attribute.
        bottom_definition: e.g. ``"urbanicity in {rural}"``.
        candidates: every candidate evaluated (attribute, definition, n_speakers, wer, gap_pct),
            largest gap first.
        n_candidates: how many were searched (the audit's selection-corrected test of the
            winner accounts for all of them, :mod:`fairstream.audit.selection`).
        exclusions: speakers without a usable zip code.
        candidate_members: the speaker indices of each candidate's cohort, in the order of
            ``candidates``.
    """

    partition: Partition
    attribute: str
    bottom_definition: str
    candidates: pd.DataFrame
    n_candidates: int
    exclusions: tuple[Exclusion, ...] = ()
    candidate_members: tuple[np.ndarray, ...] = ()


def _subset_masks(k: int, exhaustive: bool) -> np.ndarray:
    if exhaustive:
        masks = np.array(list(itertools.product([False, True], repeat=k)), dtype=bool)
        return masks[masks.any(1) & ~masks.all(1)]
    return np.eye(k, dtype=bool)


def _coarse_thresholds(thresholds: np.ndarray, values: np.ndarray,
                       min_speakers: int) -> np.ndarray:
    """The thresholds kept so that every bin between consecutive ones, and beyond either end,
    holds at least ``min_speakers`` of the (speaker) values: two candidates ``≤ t`` differ by
    whole bins, so no difference of published candidates falls below the minimum."""
    v = values[~np.isnan(values)]
    kept: list[float] = []
    last = -np.inf
    for t in thresholds:
        if int(((v > last) & (v <= t)).sum()) >= min_speakers:
            kept.append(float(t))
            last = t
    while kept and int((v > kept[-1]).sum()) < min_speakers:
        kept.pop()
    return np.asarray(kept, dtype=np.float64)


def search_geodemographic(
    stats: SpeakerStats,
    zip_table: pd.DataFrame,
    config: GeodemographicConfig | None = None,
) -> GeodemographicResult:
    """Search binary zip partitions for the largest WER gap.

    Args:
        stats: per-speaker statistics with a zip column.
        zip_table: demographics indexed by 5-character zip (:func:`read_zip_demographics`).
        config: settings.

    Raises:
        InputDataError: no zip column, no attribute, or no zip code matches.
    """
    cfg = config or GeodemographicConfig()
    if cfg.zip_col not in stats.table.columns:
        raise InputDataError(
            f"geodemographic search needs a {cfg.zip_col!r} column in the speaker metadata; "
            f"available: {list(stats.metadata_columns)}"
        )
    attrs = list(cfg.attributes) if cfg.attributes is not None else [
        c for c in zip_table.columns if c.lower() not in _NOT_ATTRIBUTES
    ]
    missing = [a for a in attrs if a not in zip_table.columns]
    if missing or not attrs:
        raise InputDataError(
            f"zip demographics attribute(s) {missing or '(none)'} not available; "
            f"columns: {list(zip_table.columns)}"
        )
    zips = stats.table[cfg.zip_col].astype("object")
    no_zip = zips.isna() | (zips == UNKNOWN)
    matched = zips.isin(zip_table.index) & ~no_zip
    unknown = ~matched & ~no_zip
    exclusions = []
    if no_zip.any():
        exclusions.append(Exclusion("geodemographic", "speaker has no zip code",
                                    int(no_zip.sum()), "speakers"))
    if unknown.any():
        exclusions.append(Exclusion("geodemographic", "zip code not in the demographics table",
                                    int(unknown.sum()), "speakers",
                                    tuple(zips[unknown].astype(str).unique()[:5])))
    if not matched.any():
        raise InputDataError(
            f"no speaker zip code matches the demographics table (e.g. speaker zips "
            f"{list(zips[~no_zip].astype(str).unique()[:5])}, table zips "
            f"{list(zip_table.index[:5])})"
        )
    e = stats.errors.astype(np.float64)
    w = stats.words.astype(np.float64)
    e_all, w_all = e.sum(), w.sum()
    m_idx = np.nonzero(matched.to_numpy())[0]
    joined = zip_table.reindex(zips.to_numpy()[m_idx])
    rows = []
    member_sets: list[np.ndarray] = []
    for attr in attrs:
        col = joined[attr]
        numeric = pd.api.types.is_numeric_dtype(col) and col.nunique() > cfg.max_values_exhaustive
        if numeric:
            vals = col.astype("float64").to_numpy()
            thr = _coarse_thresholds(np.unique(np.nanquantile(vals, cfg.numeric_quantiles)),
                                     vals, cfg.min_speakers)
            if len(thr) == 0:
                continue
            # value bins: each candidate is a union of bins (≤ t) or its complement
            bins = np.searchsorted(thr, vals, side="left")
            bins = np.where(np.isnan(vals), -1, bins)
            k = len(thr) + 1
            low = np.array([[j <= i for j in range(k)] for i in range(k - 1)], dtype=bool)
            masks = np.vstack([low, ~low])
            defs = [f"{attr} <= {t:.6g}" for t in thr] + [f"{attr} > {t:.6g}" for t in thr]
            codes = bins
        else:
            cat = col.astype("object").where(col.notna(), UNKNOWN).map(str)
            codes, values = pd.factorize(cat, sort=True)
            k = len(values)
            if k < 2:
                continue
            masks = _subset_masks(k, k <= cfg.max_values_exhaustive)
            defs = [f"{attr} in {{{', '.join(values[m])}}}" for m in masks]
        ok = codes >= 0
        tot = np.zeros((k, 3))
        tot[:, 0] = np.bincount(codes[ok], weights=e[m_idx][ok], minlength=k)
        tot[:, 1] = np.bincount(codes[ok], weights=w[m_idx][ok], minlength=k)
        tot[:, 2] = np.bincount(codes[ok], minlength=k)
        side = masks.astype(np.float64) @ tot  # (n_cand, 3)
        other = tot.sum(0)[None] - side
        with np.errstate(all="ignore"):
            wer = side[:, 0] / side[:, 1]
            rest = (e_all - side[:, 0]) / (w_all - side[:, 1])
            gap = (wer / rest - 1.0) * 100.0
        feas = ((side[:, 2] >= cfg.min_speakers) & (other[:, 2] >= cfg.min_speakers)
                & (side[:, 1] > 0))
        for j in np.nonzero(feas)[0]:
            rows.append({"attribute": attr, "definition": defs[j], "n_speakers": int(side[j, 2]),
                         "ref_words": int(side[j, 1]), "wer": wer[j], "wer_rest": rest[j],
                         "gap_pct": gap[j]})
            member_sets.append(m_idx[ok][masks[j][codes[ok]]])
    if not rows:
        raise TooFewSpeakersError(
            f"no geodemographic partition leaves {cfg.min_speakers} speakers on both sides"
        )
    cand = pd.DataFrame(rows)
    order = np.argsort(-cand["gap_pct"].to_numpy(), kind="stable")
    best = int(order[0])
    cand = cand.iloc[order].reset_index(drop=True)
    codes_out = np.full(len(e), -1, dtype=np.int64)
    codes_out[m_idx] = 1
    codes_out[member_sets[best]] = 0
    top = cand.iloc[0]
    logger.info("geodemographic: %s (gap %.1f%%) among %d candidates",
                top["definition"], top["gap_pct"], len(cand))
    return GeodemographicResult(
        partition=Partition(name="geodemographic", codes=codes_out,
                            labels=(str(top["definition"]), "rest (matched zips)")),
        attribute=str(top["attribute"]),
        bottom_definition=str(top["definition"]),
        candidates=cand,
        n_candidates=len(cand),
        exclusions=tuple(exclusions),
        candidate_members=tuple(member_sets[i] for i in order),
    )
