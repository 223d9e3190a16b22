"""Geographic clustering tree (after Trinh et al., arXiv 2207.07850).

Speakers are split recursively into regions by a latitude or longitude threshold; at each
region the split chosen is the one that maximizes the absolute WER difference
``|WER_left − WER_right|`` between its two sides, among thresholds that leave at least
``min_speakers`` speakers and ``min_words`` reference words on each side.

**When a branch stops.** A region is split only if its best split is significant under the
speaker bootstrap, with the search and the tree both accounted for:

1. Candidate thresholds are the edges of up to ``n_thresholds`` speaker-quantile bins per
   axis (ties never straddle an edge). For every candidate ``t`` the bootstrap gives
   replicates ``d*_t`` of the difference ``d_t = WER_left − WER_right`` and its standard
   error ``se_t``.
2. The critical value ``c`` is the ``1 − α_node`` quantile of the max-statistic
   ``max_t |d*_t − d_t| / se_t`` over replicates: ``d_t ± c·se_t`` are simultaneous
   intervals over **all** candidates, so they stay valid for the one the search picked.
   When ``α_node · R < 10`` (too few replicates for that tail), ``c`` is the Bonferroni
   Gaussian bound ``Φ⁻¹(1 − α_node / (2m))`` over the ``m`` candidates instead.
3. ``α_node = α · n_region / n_all`` (Meinshausen's hierarchical testing: the levels of the
   regions at one depth sum to at most α, and a region is tested only when its parent split
   was significant), so the whole tree controls the chance of any spurious split at ≈ α.
4. The split is accepted when ``|d_t̂| > c · se_t̂``, i.e. the simultaneous interval of the
   chosen difference excludes 0. Accepted splits are applied largest ``|d|`` first until
   ``max_regions`` regions exist.

Speakers without valid coordinates (NaN, |lat| > 90, |lon| > 180) are in no region and
counted. Every bootstrap evaluation of a tree level is one sparse × weight-matrix product.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from fairstream.audit.disaggregate import Partition
from fairstream.audit.inputs import Exclusion
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
    """The best split found in one region and its significance test."""

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
            for axis in (0, 1):
                order, bins, pos = _candidates(coords[axis, lf.idx], cfg.n_thresholds)
                nb = len(pos) + 1
                members = lf.idx[order]
                rows += [k + bins, k + nb + bins]
                cols += [members, members]
                vals += [e[members], w[members]]
                plans.append((lf, axis, order, bins, pos, k, nb))
                k += 2 * nb
        x = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(k, s_all),
        )
        reps = bootstrap.totals(x) if r > 0 else np.zeros((k, 0))
        best: dict[int, _Best] = {}
        per_leaf: dict[int, list[tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]]] = {}
        for lf, axis, order, bins, pos, k0, nb in plans:
            if len(pos) == 0:
                continue
            members = lf.idx[order]
            eb = np.bincount(bins, weights=e[members], minlength=nb)
            wb = np.bincount(bins, weights=w[members], minlength=nb)
            el, wl = np.cumsum(eb)[:-1], np.cumsum(wb)[:-1]
            er, wr = eb.sum() - el, wb.sum() - wl
            feas = ((pos >= min_spk) & (len(members) - pos >= min_spk)
                    & (wl >= min_w) & (wr >= min_w))
            if not feas.any():
                continue
            d = ratio_replicates(el, wl) - ratio_replicates(er, wr)
            rb_e, rb_w = reps[k0:k0 + nb], reps[k0 + nb:k0 + 2 * nb]
            rel, rwl = np.cumsum(rb_e, axis=0)[:-1], np.cumsum(rb_w, axis=0)[:-1]
            rer, rwr = rb_e.sum(0)[None] - rel, rb_w.sum(0)[None] - rwl
            d_rep = ratio_replicates(rel, rwl) - ratio_replicates(rer, rwr)  # (m, R)
            thr = (coords[axis, members][pos - 1] + coords[axis, members][pos]) / 2.0
            per_leaf.setdefault(id(lf), []).append(
                (d[feas], d_rep[feas], axis, thr[feas], pos[feas]))
        for lf in todo:
            cands = per_leaf.get(id(lf))
            if not cands:
                lf.final = True
                continue
            d = np.concatenate([c[0] for c in cands])
            d_rep = np.concatenate([c[1] for c in cands], axis=0)
            axes = np.concatenate([np.full(len(c[0]), c[2]) for c in cands])
            thr = np.concatenate([c[3] for c in cands])
            m = len(d)
            with np.errstate(all="ignore"):
                se = np.nanstd(d_rep, axis=1) if r > 1 else np.full(m, np.nan)
            t_hat = int(np.nanargmax(np.abs(d)))
            alpha_node = cfg.alpha * len(lf.idx) / n_root
            usable = np.isfinite(se) & (se > 0)
            if r > 1 and usable.any() and alpha_node * r >= 10:
                with np.errstate(all="ignore"):
                    tstat = np.abs(d_rep[usable] - d[usable, None]) / se[usable, None]
                tmax = np.nanmax(np.where(np.isfinite(tstat), tstat, -np.inf), axis=0)
                crit = float(np.quantile(tmax[np.isfinite(tmax)], 1 - alpha_node))
                method = "bootstrap max-statistic"
            else:
                crit = float(norm.ppf(1 - alpha_node / (2 * m)))
                method = "Bonferroni-Gaussian"
            se_hat = float(se[t_hat])
            sig = bool(np.isfinite(se_hat) and se_hat > 0 and abs(d[t_hat]) > crit * se_hat)
            if np.isfinite(se_hat) and se_hat == 0 and d[t_hat] != 0:
                sig = True  # no variability at all: the difference is certain
            best[id(lf)] = _Best(int(axes[t_hat]), float(thr[t_hat]), float(d[t_hat]), se_hat,
                                 crit, alpha_node, method, sig)
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
