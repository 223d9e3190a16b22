"""Disaggregated WER: Σerrors / Σwords per group, with speaker-bootstrap intervals.

A :class:`Partition` assigns every speaker to at most one group (code ``-1``: not in any,
e.g. no coordinates for the geographic tree). :func:`compare_partitions` evaluates any number
of partitions with **one** sparse-matrix × bootstrap-weight product: the rows are the
overall totals and, per partition, the errors and words of each group. From the replicate
totals it derives per group

* WER and its percentile interval;
* WER of the rest (every other audited speaker, including speakers outside the partition);
* difference WER − WER_rest with a two-sided bootstrap p-value (H0: no difference);
* WER gap (%) = (WER / WER_rest − 1) × 100 with its interval;
* shares of speakers and of reference words (%).

Vocabulary follows fairlearn's ``MetricFrame``: ``overall``, ``by_group``, ``group_min``,
``group_max``, ``difference``, ``ratio``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fairstream.audit.speaker_stats import SpeakerStats
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import (
    SpeakerBootstrap,
    group_indicator,
    percentile_interval,
    ratio_replicates,
    two_sided_p_value,
)

__all__ = [
    "GROUP_COLUMNS",
    "GroupWER",
    "Partition",
    "apply_min_size",
    "compare_partitions",
    "disaggregate",
    "partition_by",
]

logger = logging.getLogger(__name__)

#: columns of every ``by_group`` table, after the label column(s).
GROUP_COLUMNS = (
    "status", "n_speakers", "n_utterances", "ref_words", "errors", "substitutions",
    "deletions", "insertions", "wer", "wer_ci_low", "wer_ci_high", "wer_rest", "difference",
    "p_value", "gap_pct", "gap_ci_low", "gap_ci_high", "share_speakers_pct", "share_words_pct",
)

MERGED = "(merged: groups below the minimum size)"
SUPPRESSED = "(suppressed: below the minimum size)"


@dataclass(frozen=True)
class Partition:
    """Speakers → groups.

    Attributes:
        name: e.g. ``"accent"``, ``"accent × gender"``, ``"geo"``.
        codes: (S,) int64 group of each speaker, ``-1`` = in no group.
        labels: (G,) label of each group.
        status: (G,) ``"ok"``, ``"merged"`` (small groups pooled) or ``"suppressed"``.
        columns: the attribute column(s) the labels come from (empty for found cohorts).
    """

    name: str
    codes: np.ndarray
    labels: tuple[str, ...]
    status: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", ("ok",) * len(self.labels))
        assert len(self.status) == len(self.labels)

    @property
    def n_groups(self) -> int:
        """G."""
        return len(self.labels)


def _column_codes(series: pd.Series, n_bins: int = 5) -> tuple[np.ndarray, list[str]]:
    """Codes and labels for one column; numeric columns with many values are cut in quantile
    bins."""
    if pd.api.types.is_numeric_dtype(series) and series.nunique(dropna=True) > 12:
        values = series.astype("float64")
        edges = np.unique(np.nanquantile(values, np.linspace(0, 1, n_bins + 1)))
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        labels_all = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == len(edges) - 2 else ')'}"
                      for i in range(len(edges) - 1)]
        idx = np.where(values.isna(), -1, idx)
        used = np.unique(idx[idx >= 0])
        remap = np.full(len(labels_all), -1)
        remap[used] = np.arange(len(used))
        codes = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
        labels = [labels_all[i] for i in used]
        if (idx < 0).any():
            codes = np.where(idx < 0, len(labels), codes)
            labels.append("unknown")
        return codes.astype(np.int64), labels
    codes, uniques = pd.factorize(series.astype("object").map(str), sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def partition_by(stats: SpeakerStats, by: str | Sequence[str]) -> Partition:
    """Partition speakers by one metadata column or the intersection of several.

    Raises:
        InputDataError: a column is not in the speaker statistics (the message names it).
    """
    cols = (by,) if isinstance(by, str) else tuple(by)
    missing = [c for c in cols if c not in stats.table.columns]
    if missing:
        raise InputDataError(
            f"cannot disaggregate by {missing}: not a speaker metadata column; "
            f"available: {list(stats.metadata_columns)}"
        )
    per_col = [_column_codes(stats.table[c]) for c in cols]
    if len(per_col) == 1:
        codes1, labels1 = per_col[0]
        return Partition(name=cols[0], codes=codes1, labels=tuple(labels1), columns=cols)
    keys = pd.MultiIndex.from_arrays([c for c, _ in per_col])
    codes, uniques = pd.factorize(keys, sort=True)
    labels = tuple(
        " × ".join(per_col[j][1][k] for j, k in enumerate(u)) for u in uniques
    )
    return Partition(name=" × ".join(cols), codes=codes.astype(np.int64), labels=labels,
                     columns=cols)


def apply_min_size(partition: Partition, min_speakers: int) -> Partition:
    """Pool groups with fewer than ``min_speakers`` speakers into one merged group.

    If the merged group is itself too small it is marked ``"suppressed"``: its speakers still
    count in every "rest" and in the overall totals, but its own numbers are not reported.
    """
    if min_speakers <= 1:
        return partition
    sizes = np.bincount(partition.codes[partition.codes >= 0], minlength=partition.n_groups)
    small = sizes < min_speakers
    if not small.any():
        return partition
    keep = np.nonzero(~small)[0]
    remap = np.full(partition.n_groups, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    remap[small] = len(keep)
    codes = np.where(partition.codes >= 0, remap[np.maximum(partition.codes, 0)], -1)
    merged_size = int(sizes[small].sum())
    status = tuple(partition.status[i] for i in keep) + (
        "merged" if merged_size >= min_speakers else "suppressed",
    )
    label = MERGED if merged_size >= min_speakers else SUPPRESSED
    logger.info("%s: %d groups below %d speakers pooled (%s)", partition.name,
                int(small.sum()), min_speakers, status[-1])
    return Partition(
        name=partition.name, codes=codes, columns=partition.columns,
        labels=tuple(partition.labels[i] for i in keep) + (label,), status=status,
    )


def compare_partitions(
    partitions: Sequence[Partition],
    stats: SpeakerStats,
    bootstrap: SpeakerBootstrap | None,
    *,
    confidence: float = 0.95,
) -> tuple[list[pd.DataFrame], dict[str, float]]:
    """Group tables of every partition from one bootstrap product.

    Args:
        partitions: P partitions of the speakers of ``stats``.
        stats: per-speaker statistics (S rows).
        bootstrap: speaker bootstrap over the same S speakers (None: no intervals).
        confidence: interval level.

    Returns:
        (one ``by_group`` DataFrame per partition with a ``group`` column + :data:`GROUP_COLUMNS`,
        overall dict with ``wer``, ``wer_ci_low``, ``wer_ci_high``, ``n_speakers``,
        ``ref_words``, ``errors``).
    """
    e = stats.errors.astype(np.float64)
    w = stats.words.astype(np.float64)
    u = stats.utterances
    s_count = len(e)
    blocks = [sp.csr_matrix(np.vstack([e, w]).astype(np.float32))]
    for p in partitions:
        if p.codes.shape[0] != s_count:
            raise ValueError(f"partition {p.name} has {p.codes.shape[0]} codes for {s_count} "
                             "speakers")
        blocks.append(group_indicator(p.codes, p.n_groups, e))
        blocks.append(group_indicator(p.codes, p.n_groups, w))
    e_all, w_all = e.sum(), w.sum()
    if bootstrap is not None and bootstrap.n_replicates > 0:
        reps = bootstrap.totals(sp.vstack(blocks, format="csr"))  # (K, R)
    else:
        reps = np.zeros((sum(b.shape[0] for b in blocks), 0))
    overall_reps = ratio_replicates(reps[0], reps[1])
    lo, hi = percentile_interval(overall_reps, confidence)
    overall = {
        "wer": float(e_all / w_all) if w_all > 0 else float("nan"),
        "wer_ci_low": float(lo), "wer_ci_high": float(hi),
        "n_speakers": float(s_count), "ref_words": float(w_all), "errors": float(e_all),
        "n_utterances": float(u.sum()),
    }
    tables: list[pd.DataFrame] = []
    row = 2
    for p in partitions:
        g = p.n_groups
        e_rep, w_rep = reps[row:row + g], reps[row + g:row + 2 * g]
        row += 2 * g
        valid = p.codes >= 0
        cg = p.codes[valid]
        n_spk = np.bincount(cg, minlength=g)
        n_utt = np.bincount(cg, weights=u[valid], minlength=g)
        eg = np.bincount(cg, weights=e[valid], minlength=g)
        wg = np.bincount(cg, weights=w[valid], minlength=g)
        cols = {c: np.bincount(cg, weights=stats.table[c].to_numpy(np.float64)[valid], minlength=g)
                for c in ("sub", "del", "ins")}
        wer = ratio_replicates(eg, wg)
        wer_rest = ratio_replicates(e_all - eg, w_all - wg)
        wer_r = ratio_replicates(e_rep, w_rep)
        rest_r = ratio_replicates(reps[0][None, :] - e_rep, reps[1][None, :] - w_rep)
        wlo, whi = percentile_interval(wer_r, confidence)
        with np.errstate(all="ignore"):
            gap = (wer / wer_rest - 1.0) * 100.0
            gap_r = (wer_r / rest_r - 1.0) * 100.0
        glo, ghi = percentile_interval(gap_r, confidence)
        pval = two_sided_p_value(wer_r - rest_r) if reps.shape[1] else np.full(g, np.nan)
        df = pd.DataFrame({
            "group": list(p.labels), "status": list(p.status),
            "n_speakers": n_spk.astype(np.int64), "n_utterances": n_utt.astype(np.int64),
            "ref_words": wg.astype(np.int64), "errors": eg.astype(np.int64),
            "substitutions": cols["sub"].astype(np.int64),
            "deletions": cols["del"].astype(np.int64),
            "insertions": cols["ins"].astype(np.int64),
            "wer": wer, "wer_ci_low": wlo, "wer_ci_high": whi, "wer_rest": wer_rest,
            "difference": wer - wer_rest, "p_value": pval,
            "gap_pct": gap, "gap_ci_low": glo, "gap_ci_high": ghi,
            "share_speakers_pct": 100.0 * n_spk / s_count,
            "share_words_pct": 100.0 * wg / w_all if w_all > 0 else np.nan,
        })
        sup = df["status"] == "suppressed"
        if sup.any():
            num = [c for c in GROUP_COLUMNS if c != "status"]
            df.loc[sup, num] = np.nan
        tables.append(df)
    return tables, overall


@dataclass(frozen=True)
class GroupWER:
    """WER disaggregated by one column or an intersection of columns.

    Attributes:
        by: the column(s).
        overall: overall WER with interval and totals.
        by_group: one row per group (``group`` + :data:`GROUP_COLUMNS`), worst WER first.
        group_max: highest group WER among reported (status "ok") groups.
        group_min: lowest.
        difference: group_max − group_min.
        ratio: group_max / group_min.
    """

    by: tuple[str, ...]
    overall: dict[str, float]
    by_group: pd.DataFrame
    group_max: float
    group_min: float
    difference: float
    ratio: float


def _group_wer(by: tuple[str, ...], table: pd.DataFrame, overall: dict[str, float]) -> GroupWER:
    table = table.sort_values("wer", ascending=False, na_position="last").reset_index(drop=True)
    ok = table.loc[table["status"] == "ok", "wer"].dropna()
    gmax = float(ok.max()) if len(ok) else float("nan")
    gmin = float(ok.min()) if len(ok) else float("nan")
    return GroupWER(
        by=by, overall=overall, by_group=table, group_max=gmax, group_min=gmin,
        difference=gmax - gmin, ratio=gmax / gmin if gmin > 0 else float("nan"),
    )


def disaggregate(
    stats: SpeakerStats,
    by: Sequence[str | Sequence[str]],
    bootstrap: SpeakerBootstrap | None,
    *,
    confidence: float = 0.95,
    min_speakers: int = 10,
) -> list[GroupWER]:
    """WER by each column (or intersection) in ``by``, with one bootstrap product for all.

    Args:
        stats: per-speaker statistics.
        by: e.g. ``["accent", "gender", ("accent", "gender")]``.
        bootstrap: speaker bootstrap over ``stats``' speakers, or None for point estimates.
        confidence: interval level.
        min_speakers: groups below this size are pooled or suppressed (privacy).
    """
    parts = [apply_min_size(partition_by(stats, b), min_speakers) for b in by]
    tables, overall = compare_partitions(parts, stats, bootstrap, confidence=confidence)
    return [_group_wer(p.columns, t, overall) for p, t in zip(parts, tables)]
