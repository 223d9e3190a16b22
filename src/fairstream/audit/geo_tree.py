"""Geographic clustering tree (after Trinh et al., arXiv 2207.07850).

Speakers are split recursively into regions by a latitude or longitude threshold; at each
region the split chosen is the one that maximizes the absolute WER difference
``|WER_left − WER_right|`` between its two sides, among thresholds that leave at least
``min_speakers`` speakers and ``min_words`` reference words on each side.

**When a branch stops.** A region is split only if its best split is significant under the
speaker bootstrap, with the search and the tree both accounted for:

1. Candidate thresholds are the edges of up to ``n_thresholds`` speaker-quantile bins per
   axis (ties never straddle an edge); those leaving fewer than ``min_speakers`` speakers or
   ``min_words`` words on a side are dropped before anything is chosen. The remaining
   candidates of **both** axes are one family, tested once per region.
2. For every candidate ``t``: the difference ``d_t = WER_left − WER_right`` and its standard
   error ``se_t``, the linearized (delta-method) one: a side's WER ``r = E / W`` has variance
   ``Σ_s (e_s − r·w_s)² / W²`` over its speakers, and ``se_t²`` is the sum over the two sides.
   Every bootstrap replicate gives ``d*_{t,r}`` and, by the same formula on the resampled
   speakers (multiplicity-weighted sums), its own ``se*_{t,r}``.
3. The max-statistic is centred and studentized **in each replicate**:
   ``M*_r = max_t |d*_{t,r} − d_t| / se*_{t,r}`` over every candidate. For the chosen split
   ``t̂`` (largest ``|d_t|``), ``T = |d_t̂| / se_t̂``, ``p = (#{r : M*_r ≥ T} + 1) / (R + 1)``
   and the critical value ``c = M*_(k)``, the k-th smallest maximum with
   ``k = ⌈(1 − α_node)(R + 1)⌉``: the conventions and the functions of
   :mod:`fairstream.audit.selection`. The split is accepted when ``p ≤ α_node``, which is
   ``T > c``: the simultaneous interval ``d_t̂ ± c·se_t̂`` excludes 0. When
   ``α_node · R < 10`` (too few replicates for that tail), ``c`` is the Bonferroni Gaussian
   bound ``Φ⁻¹(1 − α_node / (2m))`` over the ``m`` candidates instead.
4. ``α_node = α · n_region / n_all`` (Meinshausen's hierarchical testing: the levels of the
   regions at one depth sum to at most α, and a region is tested only when its parent split
   was significant), so the whole tree controls the chance of any spurious split at ≈ α.
5. Accepted splits are applied largest ``|d|`` first until ``max_regions`` regions exist.

**Why every replicate is studentized.** The test used to divide the replicates of a
candidate by one standard error, their standard deviation, and take the critical value as
an interpolated quantile. With no geographic effect it accepted the root split of 7.4 % of
1,000 simulated audits of 200 speakers (``benchmarks/audit_calibration.py``'s null, default
sizes) instead of at most α = 5 %. The quantile convention was not the cause (the k-th order
statistic with the +1 p-value gave 7.3 %): a max-statistic with a fixed standard error is
only right if ``d_t / se_t`` is close to normal for every candidate, and near the edge of a
region it is not. With 10–20 speakers on the small side, that side's WER drives both the
difference and its standard error (a side whose WER happens to be low also has a small
standard error), so the observed ``d_t / se_t`` has heavy, skewed tails: its variance over
those null audits was 1.44 with 12 speakers on one side and 1.20 with 19, while replicates
divided by a fixed standard error stay close to N(0, 1). The search picks the largest
``|d_t|``, which is usually such an edge split (20 speakers or fewer on the small side in
3 of 4 null audits). Dividing each replicate by its own standard
error (bootstrap-t) carries that variation into ``M*``: each candidate's bootstrap-t
quantiles held their level (in 600 of those audits, 1.1 % beyond its 99 % quantile on
average over the candidates) and the root split was accepted in 2.1 % of the 1,000. The
maximum over candidates whose small sides have heavy-tailed ``se*`` is conservative: that is
the price of validity at these sizes; with hundreds of speakers per side the two forms
agree. (The cohort tests of :mod:`fairstream.audit.selection` keep a fixed standard error:
they measure conservative in the same benchmark.)

Speakers without valid coordinates (NaN, |lat| > 90, |lon| > 180) are in no region and
counted. Every bootstrap evaluation of a tree level is one sparse × weight-matrix product:
five additive statistics per bin and axis (errors ``e``, words ``w`` and, with the errors
centred on the region's WER ``u = e − r_region·w``, the sums ``u²``, ``u·w`` and ``w²`` that
give a side's variance), stored speaker-major so that each speaker's weights are read once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from fairstream.audit.disaggregate import Partition
from fairstream.audit.inputs import Exclusion
from fairstream.audit.selection import (
    max_statistic_critical_value,
    max_statistic_p_value,
    replicate_maxima,
)
from fairstream.audit.speaker_stats import SpeakerStats
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap, ratio_replicates

__all__ = [
    "GeoTree",
    "GeoTreeConfig",
    "Region",
    "SplitTest",
    "grow_geo_tree",
    "regions_frame",
    "valid_coordinates",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeoTreeConfig:
    """Settings of the geographic tree.

    Attributes:
        lat_col: latitude column of the speaker metadata.
        lon_col: longitude column.
        min_speakers: minimum speakers per region (never below the privacy minimum).
        min_words: minimum reference words per region.
        max_regions: stop when this many regions exist.
        alpha: family-wise level of the split tests.
        n_thresholds: candidate thresholds per axis and region (speaker-quantile bin edges).
    """

    lat_col: str = "lat"
    lon_col: str = "lon"
    min_speakers: int = 10
    min_words: int = 100
    max_regions: int = 32
    alpha: float = 0.05
    n_thresholds: int = 32


@dataclass(frozen=True)
class Region:
    """A leaf of the tree: a lat/lon box (bounds of its speakers' cell, not of the data)."""

    region_id: int
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    depth: int
    path: str


@dataclass(frozen=True)
class SplitTest:
    """The best split found in one region and its significance test.

    Attributes:
        path: the region tested.
        n_speakers: its speakers with valid coordinates.
        axis, threshold: the chosen split (largest ``|difference|``).
        difference: ``WER_left − WER_right`` of that split.
        se: its linearized standard error (the one the statistic is divided by).
        critical_value: ``c``; the split is significant when ``|difference| > c · se``.
        alpha_node: the region's level.
        method: "studentized bootstrap max-statistic" or "Bonferroni-Gaussian".
        significant: the test's verdict; ``applied``: the split was made.
    """

    path: str
    n_speakers: int
    axis: str
    threshold: float
    difference: float
    se: float
    critical_value: float
    alpha_node: float
    method: str
    significant: bool
    applied: bool


@dataclass(frozen=True)
class GeoTree:
    """Result of :func:`grow_geo_tree`.

    Attributes:
        partition: speakers → regions (``-1``: no valid coordinates).
        regions: the regions, in partition-code order.
        tests: every split test performed (applied or not), in order.
        exclusions: speakers without valid coordinates.
        config: the settings used.
    """

    partition: Partition
    regions: tuple[Region, ...]
    tests: tuple[SplitTest, ...]
    exclusions: tuple[Exclusion, ...] = ()
    config: GeoTreeConfig = field(default_factory=GeoTreeConfig)


def valid_coordinates(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, list[Exclusion]]:
    """Mask of usable coordinates and exclusions for the others (NaN / out of range)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    nan = ~(np.isfinite(lat) & np.isfinite(lon))
    with np.errstate(invalid="ignore"):
        out = ~nan & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
    ex = []
    if nan.any():
        ex.append(Exclusion("geo", "missing (NaN) latitude or longitude", int(nan.sum()),
                            "speakers"))
    if out.any():
        ex.append(Exclusion("geo", "latitude outside [-90, 90] or longitude outside [-180, 180]",
                            int(out.sum()), "speakers"))
    return ~nan & ~out, ex


@dataclass(eq=False)
class _Leaf:
    idx: np.ndarray
    box: tuple[float, float, float, float]
    depth: int
    path: str
    final: bool = False


@dataclass
class _Best:
    axis: int
    threshold: float
    diff: float
    se: float
    crit: float
    alpha: float
    method: str
    significant: bool


def _candidates(coord: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted order, bin of each sorted member, split positions (left size) of bin edges."""
    order = np.argsort(coord, kind="stable")
    c = coord[order]
    n = len(c)
    valid = np.nonzero(c[1:] > c[:-1])[0] + 1  # positions p with c[p-1] < c[p]
    if len(valid) == 0:
        return order, np.zeros(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    targets = np.round(np.arange(1, n_bins) * n / n_bins).astype(np.int64)
    j = np.clip(np.searchsorted(valid, targets), 0, len(valid) - 1)
    j0 = np.clip(j - 1, 0, len(valid) - 1)
    pick = np.where(np.abs(valid[j0] - targets) <= np.abs(valid[j] - targets), valid[j0], valid[j])
    pos = np.unique(pick)
    bins = np.searchsorted(pos, np.arange(n), side="right")
    return order, bins.astype(np.int64), pos


def _centre(errors: np.ndarray, words: np.ndarray) -> float:
    """WER of a region (0 without words): the ratio the variance sums are centred on."""
    total = float(words.sum())
    return float(errors.sum()) / total if total > 0 else 0.0


def _split_statistics(errors: np.ndarray, words: np.ndarray, centre: float) -> np.ndarray:
    """(5, n) per-speaker additive statistics of a split: e, w, u², u·w, w² (u = e − centre·w).

    Summed over one side of a split (with bootstrap multiplicities or not) they give its WER
    and the linearized variance of that WER (:func:`_split_differences`). Centring the errors
    on the region's WER keeps the variance sums well conditioned in float32 products.
    """
    u = errors - centre * words
    return np.stack([errors, words, u * u, u * words, words * words])


def _split_differences(totals: np.ndarray, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """``d = WER_left − WER_right`` and its standard error at every edge between bins.

    Args:
        totals: (5, nb, ...) per-bin sums of the :func:`_split_statistics` of the bins'
            speakers, in coordinate order; (5, nb) for the data, (5, nb, R) for replicates.
        centre: the ratio the statistics were centred on.

    Returns:
        (d, se), each (nb − 1, ...): the left side is bins ``0..j`` for edge ``j``. The
        variance of a side's WER ``r = E / W`` is the linearized (delta-method) one,
        ``Σ_s (e_s − r·w_s)² / W²`` (multiplicity-weighted in a replicate), from the sums as
        ``(Σu² − 2δ·Σuw + δ²·Σw²) / W²`` with ``δ = r − centre``; nan where a side has no
        words.
    """
    left = np.cumsum(totals, axis=1)[:, :-1]
    right = totals.sum(axis=1, keepdims=True) - left
    wer, var = [], []
    for side in (left, right):
        e, w, uu, uw, ww = side
        r = ratio_replicates(e, w)
        delta = r - centre
        with np.errstate(all="ignore"):
            var.append(np.maximum(uu - 2.0 * delta * uw + delta * delta * ww, 0.0) / (w * w))
        wer.append(r)
    return wer[0] - wer[1], np.sqrt(var[0] + var[1])


@dataclass(frozen=True)
class _Candidates:
    """Every feasible split of one region (both axes): differences and their replicates."""

    d: np.ndarray  # (m,)
    se: np.ndarray  # (m,)
    d_rep: np.ndarray  # (m, R)
    se_rep: np.ndarray  # (m, R)
    axis: np.ndarray  # (m,) 0 latitude, 1 longitude
    threshold: np.ndarray  # (m,)


@dataclass(frozen=True)
class _NodeTest:
    """The test of a region's chosen split."""

    se: float
    critical_value: float
    p_value: float
    method: str
    significant: bool


def _node_test(c: _Candidates, chosen: int, alpha_node: float, n_replicates: int) -> _NodeTest:
    """Test the chosen split against the studentized max-statistic over all candidates.

    ``T = |d_t̂| / se_t̂`` against ``M*_r = max_t |d*_{t,r} − d_t| / se*_{t,r}`` (every
    replicate studentized by its own standard error): p = (#{M* ≥ T} + 1) / (R + 1) and the
    critical value the k-th smallest ``M*`` (:mod:`fairstream.audit.selection`). With too
    few replicates for the tail (α_node · R < 10) the Bonferroni–Gaussian bound over the
    ``m`` candidates instead. Without a bootstrap (R < 2) there are no standard errors and
    the split is never significant.
    """
    m = len(c.d)
    se = c.se if n_replicates > 1 else np.full(m, np.nan)
    se_hat, d_hat = float(se[chosen]), float(c.d[chosen])
    usable = np.isfinite(c.d) & np.isfinite(se) & (se > 0)
    stat = abs(d_hat) / se_hat if se_hat > 0 else math.nan
    if usable.any() and alpha_node * n_replicates >= 10:
        with np.errstate(all="ignore"):
            t = np.abs(c.d_rep[usable] - c.d[usable, None]) / c.se_rep[usable]
        m_star = replicate_maxima(t)
        crit = max_statistic_critical_value(m_star, 1.0 - alpha_node)
        p = max_statistic_p_value(m_star, stat) if se_hat > 0 else math.nan
        method = "studentized bootstrap max-statistic"
    else:
        crit = float(norm.ppf(1.0 - alpha_node / (2 * m)))
        p = min(1.0, 2 * m * float(norm.sf(stat))) if se_hat > 0 else math.nan
        method = "Bonferroni-Gaussian"
    if se_hat == 0:  # no variability at all: the difference is certain
        p = 0.0 if d_hat != 0 else 1.0
    return _NodeTest(se_hat, crit, p, method, bool(p <= alpha_node))


def grow_geo_tree(
    stats: SpeakerStats,
    bootstrap: SpeakerBootstrap,
    config: GeoTreeConfig | None = None,
) -> GeoTree:
    """Grow the tree over the speakers of ``stats`` (see the module docstring for the test).

    Args:
        stats: per-speaker statistics with latitude/longitude columns.
        bootstrap: speaker bootstrap over the same speakers (R ≥ 100 recommended).
        config: settings.

    Raises:
        InputDataError: the coordinate columns are missing.
    """
    cfg = config or GeoTreeConfig()
    for c in (cfg.lat_col, cfg.lon_col):
        if c not in stats.table.columns:
            raise InputDataError(
                f"geographic tree needs column {c!r} in the speaker metadata; "
                f"available: {list(stats.metadata_columns)}"
            )
    lat = stats.table[cfg.lat_col].to_numpy(np.float64)
    lon = stats.table[cfg.lon_col].to_numpy(np.float64)
    ok, exclusions = valid_coordinates(lat, lon)
    coords = np.stack([lat, lon])  # (2, S)
    e = stats.errors.astype(np.float64)
    w = stats.words.astype(np.float64)
    s_all = len(e)
    root_idx = np.nonzero(ok)[0]
    n_root = max(len(root_idx), 1)
    r = bootstrap.n_replicates
    root_box = (
        (float(lat[ok].min()), float(lat[ok].max()), float(lon[ok].min()), float(lon[ok].max()))
        if ok.any() else (-90.0, 90.0, -180.0, 180.0)
    )
    leaves = [_Leaf(root_idx, root_box, 0, "all")]
    tests: list[SplitTest] = []
    min_spk, min_w = cfg.min_speakers, cfg.min_words

    while True:
        todo = [lf for lf in leaves if not lf.final and len(lf.idx) >= 2 * min_spk
                and w[lf.idx].sum() >= 2 * min_w]
        for lf in leaves:
            if lf not in todo:
                lf.final = True
        if not todo or len(leaves) >= cfg.max_regions:
            break
        # one sparse block per (leaf, axis): errors then words of each bin
        plans = []
        rows, cols, vals = [], [], []
        k = 0
        for lf in todo:
            centre = _centre(e[lf.idx], w[lf.idx])
            for axis in (0, 1):
                order, bins, pos = _candidates(coords[axis, lf.idx], cfg.n_thresholds)
                nb = len(pos) + 1
                members = lf.idx[order]
                per_speaker = _split_statistics(e[members], w[members], centre)
                rows += [k + j * nb + bins for j in range(len(per_speaker))]
                cols += [members] * len(per_speaker)
                vals += list(per_speaker)
                plans.append((lf, axis, order, bins, pos, k, nb, per_speaker, centre))
                k += len(per_speaker) * nb
        # speaker-major (CSC): each speaker's weight row is read once for all its entries
        x = sp.csc_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(k, s_all),
        )
        reps = bootstrap.totals(x)
        best: dict[int, _Best] = {}
        per_leaf: dict[int, list[_Candidates]] = {}
        for lf, axis, order, bins, pos, k0, nb, per_speaker, centre in plans:
            if len(pos) == 0:
                continue
            members = lf.idx[order]
            tot = np.stack([np.bincount(bins, weights=v, minlength=nb) for v in per_speaker])
            wl = np.cumsum(tot[1])[:-1]
            feas = ((pos >= min_spk) & (len(members) - pos >= min_spk)
                    & (wl >= min_w) & (tot[1].sum() - wl >= min_w))
            if not feas.any():
                continue
            d, se = _split_differences(tot, centre)
            rep_tot = reps[k0:k0 + len(per_speaker) * nb].reshape(len(per_speaker), nb, r)
            d_rep, se_rep = _split_differences(rep_tot, centre)  # (m, R) each
            thr = (coords[axis, members][pos - 1] + coords[axis, members][pos]) / 2.0
            per_leaf.setdefault(id(lf), []).append(_Candidates(
                d[feas], se[feas], d_rep[feas], se_rep[feas], np.full(int(feas.sum()), axis),
                thr[feas]))
        for lf in todo:
            cands = per_leaf.get(id(lf))
            if not cands:
                lf.final = True
                continue
            cand = _Candidates(*(np.concatenate([getattr(x, f.name) for x in cands])
                                 for f in fields(_Candidates)))
            t_hat = int(np.nanargmax(np.abs(cand.d)))
            alpha_node = cfg.alpha * len(lf.idx) / n_root
            test = _node_test(cand, t_hat, alpha_node, r)
            best[id(lf)] = _Best(int(cand.axis[t_hat]), float(cand.threshold[t_hat]),
                                 float(cand.d[t_hat]), test.se, test.critical_value,
                                 alpha_node, test.method, test.significant)
        ranked = sorted((lf for lf in todo if id(lf) in best and best[id(lf)].significant),
                        key=lambda lf: -abs(best[id(lf)].diff))
        applied_ids = set()
        new_leaves: list[_Leaf] = []
        n_now = len(leaves)
        for lf in ranked:
            if n_now >= cfg.max_regions:
                break
            applied_ids.add(id(lf))
            n_now += 1
        for lf in todo:
            b = best.get(id(lf))
            if b is None:
                continue
            tests.append(SplitTest(
                path=lf.path, n_speakers=len(lf.idx), axis=("lat", "lon")[b.axis],
                threshold=b.threshold, difference=b.diff, se=b.se, critical_value=b.crit,
                alpha_node=b.alpha, method=b.method, significant=b.significant,
                applied=id(lf) in applied_ids,
            ))
        for lf in leaves:
            if id(lf) not in applied_ids:
                if id(lf) in best or lf in todo:
                    lf.final = True
                new_leaves.append(lf)
                continue
            b = best[id(lf)]
            name = ("lat", "lon")[b.axis]
            left = coords[b.axis, lf.idx] < b.threshold
            la0, la1, lo0, lo1 = lf.box
            if b.axis == 0:
                boxes = ((la0, b.threshold, lo0, lo1), (b.threshold, la1, lo0, lo1))
            else:
                boxes = ((la0, la1, lo0, b.threshold), (la0, la1, b.threshold, lo1))
            pre = "" if lf.path == "all" else lf.path + " & "
            new_leaves.append(_Leaf(lf.idx[left], boxes[0], lf.depth + 1,
                                    f"{pre}{name} < {b.threshold:.3f}"))
            new_leaves.append(_Leaf(lf.idx[~left], boxes[1], lf.depth + 1,
                                    f"{pre}{name} >= {b.threshold:.3f}"))
        leaves = new_leaves
        if not applied_ids:
            break

    codes = np.full(s_all, -1, dtype=np.int64)
    regions = []
    for i, lf in enumerate(leaves):
        codes[lf.idx] = i
        regions.append(Region(i, *lf.box, depth=lf.depth, path=lf.path))
    labels = tuple(f"region {i}" for i in range(len(regions)))
    logger.info("geo tree: %d regions, %d split tests", len(regions), len(tests))
    return GeoTree(
        partition=Partition(name="geo", codes=codes, labels=labels),
        regions=tuple(regions), tests=tuple(tests), exclusions=tuple(exclusions), config=cfg,
    )


def regions_frame(tree: GeoTree) -> pd.DataFrame:
    """Regions as a DataFrame (``group`` label + bounding box + path)."""
    return pd.DataFrame([
        {"group": tree.partition.labels[r.region_id], "lat_min": r.lat_min, "lat_max": r.lat_max,
         "lon_min": r.lon_min, "lon_max": r.lon_max, "depth": r.depth, "path": r.path}
        for r in tree.regions
    ])
