"""Speaker-verification metrics: EER, minDCF, DET points, per-group fairness, speaker bootstrap.

Conventions (used by every function here):

* A *trial* is a score and a label (1 = target, same speaker; 0 = non-target). Higher scores
  mean "more likely the same speaker". A threshold ``t`` **accepts** trials with ``score > t``.
* **Operating points.** With the distinct scores sorted ascending ``u_1 < ... < u_m``, operating
  point ``k`` (``k = 0..m``) rejects every trial scoring ``<= u_k`` (point 0 rejects nothing).
  ``P_miss(k)`` = rejected targets / targets, ``P_fa(k)`` = accepted non-targets / non-targets.
  Ties are never split: all trials with the same score get the same decision. These are the
  vertices of the empirical (step) ROC; scikit-learn's ``roc_curve`` returns the same vertices.
* **EER** is where the polyline through consecutive operating points crosses
  ``P_miss = P_fa``: with ``k`` the first point where ``P_miss >= P_fa``, the segment from point
  ``k-1`` to ``k`` is interpolated linearly. Interpolating between two adjacent operating points
  is achievable (randomize between the two thresholds), so the EER is exact for this
  definition; it is not the ROC-convex-hull EER of BOSARIS (which can only be lower or equal).
  The *EER threshold* is ``u_k`` or ``u_{k-1}``, whichever point has the smaller
  ``|P_miss - P_fa|``.
* **minDCF** (as Kaldi's ``sid/compute_min_dcf.py``):
  ``DCF(k) = C_miss * P_miss(k) * P_target + C_fa * P_fa(k) * (1 - P_target)``, minimized over the
  operating points and divided by ``C_default = min(C_miss * P_target, C_fa * (1 - P_target))``,
  the cost of the best trivial system (accept all or reject all). Defaults: ``P_target`` 0.01 and
  0.05, ``C_miss = C_fa = 1``.
* **Per group** (gender, accent, any metadata column): a trial belongs to group ``g`` when both
  of its sides belong to ``g`` (targets always do; non-targets across groups count only in the
  overall result). The fairness summary follows fairlearn's vocabulary: ``by_group``,
  ``group_min``/``group_max``, ``difference`` (absolute EER gap = max − min), ``relative_gap``
  ((max − min) / min), ``ratio`` (max / min), ``std`` (population standard deviation of the
  per-group EERs) and the fairness discrepancy rate.
* **Fairness discrepancy rate** (de Freitas Pereira & Marcel, "Fairness in biometrics: a figure of
  merit to assess biometric verification systems", IEEE T-BIOM 2021; used for SV by Hutiri & Ding
  2022): at one threshold ``τ`` shared by all groups,
  ``FDR(τ) = 1 − (α · max_{g,h} |FMR_g(τ) − FMR_h(τ)| + β · max_{g,h} |FNMR_g(τ) − FNMR_h(τ)|)``
  with ``α = β = 0.5`` by default. ``FMR`` is the false-match (false-accept) rate and ``FNMR`` the
  false-non-match (miss) rate. 1 = perfectly fair, 0 = maximally unfair. Default ``τ``: the EER
  threshold of the pooled trials.
* **Speaker bootstrap**: a replicate draws the speakers with replacement (``c_s`` copies of
  speaker ``s``). A target trial of ``s`` then counts ``c_s`` times and a non-target trial of
  speakers ``a`` and ``b`` counts ``c_a · c_b`` times (every copy of ``a`` meets every copy of
  ``b``). Speaker draws come from :class:`fairstream.metrics.bootstrap.SpeakerBootstrap`
  (the same resampling as the ASR audit). Percentile intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap

__all__ = [
    "DEFAULT_P_TARGETS",
    "BootstrapResult",
    "DcfPoint",
    "GroupFairness",
    "Interval",
    "OperatingPoints",
    "PairedDifference",
    "VerificationMetrics",
    "bootstrap_eer",
    "bootstrap_eer_difference",
    "cosine_scores",
    "det_curve",
    "eer",
    "fairness_discrepancy_rate",
    "group_fairness",
    "min_dcf",
    "operating_points",
    "trial_groups",
    "verification_metrics",
]

logger = logging.getLogger(__name__)

DEFAULT_P_TARGETS: tuple[float, ...] = (0.01, 0.05)
DCF_NORMALIZATION = (
    "minDCF = min_t [C_miss*P_miss(t)*P_target + C_fa*P_fa(t)*(1-P_target)] "
    "/ min(C_miss*P_target, C_fa*(1-P_target))  (Kaldi compute_min_dcf.py)"
)


@dataclass(frozen=True)
class OperatingPoints:
    """Vertices of the empirical ROC / DET curve (see the module docstring).

    Attributes:
        thresholds: (K,) point ``k`` rejects scores ``<= thresholds[k]``; ``thresholds[0] = -inf``.
        p_miss: (K,) miss (false-reject) rate, non-decreasing, from 0 to 1.
        p_fa: (K,) false-accept rate, non-increasing, from 1 to 0.
    """

    thresholds: np.ndarray
    p_miss: np.ndarray
    p_fa: np.ndarray


@dataclass(frozen=True)
class DcfPoint:
    """The minimum normalized detection cost at one prior and cost setting."""

    p_target: float
    c_miss: float
    c_fa: float
    min_dcf: float
    threshold: float
    normalization: str = DCF_NORMALIZATION


@dataclass(frozen=True)
class VerificationMetrics:
    """EER and minDCF of one trial set."""

    n_target: int
    n_nontarget: int
    eer: float
    eer_threshold: float
    min_dcf: tuple[DcfPoint, ...]

    def dcf(self, p_target: float) -> float:
        """The minDCF at ``p_target`` (must be one of the computed priors)."""
        for point in self.min_dcf:
            if math.isclose(point.p_target, p_target):
                return point.min_dcf
        raise KeyError(f"minDCF was not computed for P_target={p_target}")


@dataclass(frozen=True)
class GroupFairness:
    """Per-group verification metrics and their disparity summary for one metadata column.

    ``by_group`` holds every group with at least one target and one non-target trial;
    the other groups are in ``skipped`` with the reason. Summary statistics use ``by_group``.
    """

    column: str
    overall: VerificationMetrics
    by_group: dict[str, VerificationMetrics]
    skipped: dict[str, str]
    group_min: str
    group_max: str
    difference: float
    relative_gap: float
    ratio: float
    std: float
    fdr: float
    fdr_threshold: float
    fdr_alpha: float
    fdr_beta: float


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval.

    ``n_valid`` counts the replicates in which the statistic was defined (a replicate can draw
    no target trial of a small group).
    """

    estimate: float
    low: float
    high: float
    level: float
    n_valid: int


@dataclass(frozen=True)
class BootstrapResult:
    """Speaker-bootstrap intervals for the EER overall, per group, gap and spread."""

    n_boot: int
    n_speakers: int
    level: float
    eer: Interval
    group_eer: dict[str, Interval] = field(default_factory=dict)
    difference: Interval | None = None
    std: Interval | None = None


# --------------------------------------------------------------------------------------------
# input checks


def _as_trials(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise InputDataError(f"scores and labels must be 1-D, got shapes {s.shape} and {y.shape}")
    if s.shape != y.shape:
        raise InputDataError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    bad = ~np.isfinite(s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f"trial {i}" + (f" ({names[i]})" if names is not None else "")
        raise InputDataError(
            f"score of {where} is {s[i]}; {int(bad.sum())} of {s.size} scores are not finite"
        )
    if y.dtype == bool:
        y = y.astype(np.int8)
    ok = (y == 0) | (y == 1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputDataError(f"label of trial {i} is {y[i].item()!r}; labels must be 1 (target) "
                             "or 0")
    y = y.astype(np.int8)
    n_t = int(y.sum())
    if n_t == 0 or n_t == y.size:
        kind = "target" if n_t == 0 else "non-target"
        raise InputDataError(
            f"EER and minDCF are undefined: the trial list has no {kind} trials "
            f"({y.size} trials, {n_t} targets); both kinds are needed"
        )
    return s, y


# --------------------------------------------------------------------------------------------
# core: operating points from sorted scores


def _sort(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort once. Returns (order, distinct sorted scores (m,), end index of each tie run (m,))."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return order, s[ends], ends


def _rates(
    sorted_labels: np.ndarray, ends: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """P_miss and P_fa at operating points 0..m given labels (and weights) in score order."""
    if weights is None:
        tgt = np.cumsum(sorted_labels, dtype=np.float64)
        non = np.cumsum(1 - sorted_labels, dtype=np.float64)
    else:
        tgt = np.cumsum(weights * sorted_labels, dtype=np.float64)
        non = np.cumsum(weights * (1 - sorted_labels), dtype=np.float64)
    n_t, n_n = tgt[-1], non[-1]
    p_miss = np.empty(ends.size + 1)
    p_fa = np.empty(ends.size + 1)
    p_miss[0], p_fa[0] = 0.0, 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        p_miss[1:] = tgt[ends] / n_t
        p_fa[1:] = 1.0 - non[ends] / n_n
    return p_miss, p_fa


def _eer_from_rates(p_miss: np.ndarray, p_fa: np.ndarray) -> tuple[float, int]:
    """EER by linear interpolation on the segment where P_miss first reaches P_fa.

    Returns (eer, index of the operating point closest to P_miss = P_fa).
    """
    k = int(np.argmax(p_miss >= p_fa))  # exists: the last point has P_miss = 1 >= P_fa = 0
    assert k >= 1, "point 0 has P_miss = 0 < P_fa = 1"
    m0, m1, f0, f1 = p_miss[k - 1], p_miss[k], p_fa[k - 1], p_fa[k]
    denom = (m1 - m0) + (f0 - f1)
    a = (f0 - m0) / denom
    value = float(m0 + a * (m1 - m0))
    best = k if abs(m1 - f1) <= abs(f0 - m0) else k - 1
    return value, best


def _threshold_at(distinct: np.ndarray, k: int) -> float:
    return -math.inf if k == 0 else float(distinct[k - 1])


def operating_points(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> OperatingPoints:
    """Every operating point of the trial set (see the module docstring).

    Args:
        scores: (N,) trial scores, higher = more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials.
    """
    s, y = _as_trials(scores, labels)
    order, distinct, ends = _sort(s)
    p_miss, p_fa = _rates(y[order], ends)
    return OperatingPoints(np.r_[-math.inf, distinct], p_miss, p_fa)


def det_curve(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> OperatingPoints:
    """DET curve points: the operating points (plot ``p_fa`` vs ``p_miss`` on probit axes)."""
    return operating_points(scores, labels)


def eer(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Equal error rate in [0, 1] (interpolated on the step ROC; see the module docstring)."""
    pts = operating_points(scores, labels)
    return _eer_from_rates(pts.p_miss, pts.p_fa)[0]


def _min_dcf_from_rates(
    p_miss: np.ndarray, p_fa: np.ndarray, p_target: float, c_miss: float, c_fa: float
) -> tuple[float, int]:
    if not 0.0 < p_target < 1.0:
        raise InputDataError(f"P_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise InputDataError(f"costs must be positive, got C_miss={c_miss}, C_fa={c_fa}")
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    k = int(np.argmin(dcf))
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[k] / c_def), k


def min_dcf(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalized minimum detection cost, as Kaldi's ``compute_min_dcf.py``."""
    pts = operating_points(scores, labels)
    return _min_dcf_from_rates(pts.p_miss, pts.p_fa, p_target, c_miss, c_fa)[0]


def verification_metrics(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    p_targets: Sequence[float] = DEFAULT_P_TARGETS,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    names: Sequence[str] | None = None,
) -> VerificationMetrics:
    """EER and minDCF at each ``p_targets`` value from one sort of the scores.

    Args:
        scores: (N,) trial scores.
        labels: (N,) 1 target / 0 non-target.
        p_targets: priors of a target trial for the minDCF.
        c_miss: cost of a miss.
        c_fa: cost of a false accept.
        names: optional (N,) trial names used in error messages.
    """
    s, y = _as_trials(scores, labels, names)
    order, distinct, ends = _sort(s)
    p_miss, p_fa = _rates(y[order], ends)
    value, k = _eer_from_rates(p_miss, p_fa)
    dcfs = []
    for p in p_targets:
        d, kd = _min_dcf_from_rates(p_miss, p_fa, float(p), c_miss, c_fa)
        dcfs.append(DcfPoint(float(p), c_miss, c_fa, d, _threshold_at(distinct, kd)))
    n_t = int(y.sum())
    return VerificationMetrics(n_t, int(y.size - n_t), value, _threshold_at(distinct, k),
                               tuple(dcfs))


# --------------------------------------------------------------------------------------------
# groups


def trial_groups(
    group_a: Sequence[object] | np.ndarray, group_b: Sequence[object] | np.ndarray
) -> np.ndarray:
    """The group of each trial: the common group of its two sides, ``None`` when they differ.

    Args:
        group_a: (N,) group of the enrollment side of each trial.
        group_b: (N,) group of the test side.

    Returns:
        (N,) object array of group names (``str``) or ``None``.
    """
    a = np.asarray([None if _missing(g) else str(g) for g in group_a], dtype=object)
    b = np.asarray([None if _missing(g) else str(g) for g in group_b], dtype=object)
    if a.shape != b.shape:
        raise InputDataError(f"{a.size} enrollment groups but {b.size} test groups")
    same = a == b
    out = np.full(a.shape, None, dtype=object)
    out[same] = a[same]
    return out


def _missing(g: object) -> bool:
    return g is None or (isinstance(g, float) and math.isnan(g))


def fairness_discrepancy_rate(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    *,
    threshold: float,
    alpha: float = 0.5,
) -> float:
    """Fairness discrepancy rate at ``threshold`` (accept ``score > threshold``); see module doc.

    Trials whose group is ``None`` are ignored; groups without targets or without non-targets
    take part only in the term they can define.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputDataError(f"alpha must be in [0, 1], got {alpha}")
    s, y = _as_trials(scores, labels)
    g = np.asarray(groups, dtype=object)
    if g.shape != s.shape:
        raise InputDataError(f"{s.size} scores but {g.size} group labels")
    fmr: list[float] = []
    fnmr: list[float] = []
    for name in _group_names(g):
        m = g == name
        tgt = m & (y == 1)
        non = m & (y == 0)
        if non.any():
            fmr.append(float((s[non] > threshold).mean()))
        if tgt.any():
            fnmr.append(float((s[tgt] <= threshold).mean()))
    a = (max(fmr) - min(fmr)) if len(fmr) > 1 else 0.0
    b = (max(fnmr) - min(fnmr)) if len(fnmr) > 1 else 0.0
    return 1.0 - (alpha * a + (1.0 - alpha) * b)


def _group_names(g: np.ndarray) -> list[str]:
    return sorted({x for x in g.tolist() if x is not None})


def group_fairness(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    *,
    column: str = "group",
    p_targets: Sequence[float] = DEFAULT_P_TARGETS,
    threshold: float | None = None,
    alpha: float = 0.5,
) -> GroupFairness:
    """Per-group EER/minDCF, gaps, spread and fairness discrepancy rate for one column.

    Args:
        scores: (N,) trial scores.
        labels: (N,) 1 target / 0 non-target.
        groups: (N,) group of each trial (see :func:`trial_groups`), ``None`` = no group.
        column: name of the metadata column, carried into the result.
        p_targets: priors for the minDCF.
        threshold: FDR threshold; default the EER threshold of all trials pooled.
        alpha: FDR weight of the false-match term (the false-non-match term gets ``1 - alpha``).

    Raises:
        InputDataError: fewer than two groups have both target and non-target trials.
    """
    s, y = _as_trials(scores, labels)
    g = np.asarray(groups, dtype=object)
    if g.shape != s.shape:
        raise InputDataError(f"{s.size} scores but {g.size} group labels for column {column!r}")
    overall = verification_metrics(s, y, p_targets=p_targets)
    by_group: dict[str, VerificationMetrics] = {}
    skipped: dict[str, str] = {}
    for name in _group_names(g):
        m = g == name
        n_t = int(y[m].sum())
        n_n = int(m.sum() - n_t)
        if n_t == 0 or n_n == 0:
            skipped[name] = f"{n_t} target and {n_n} non-target trials: EER undefined"
            continue
        by_group[name] = verification_metrics(s[m], y[m], p_targets=p_targets)
    if len(by_group) < 2:
        raise InputDataError(
            f"column {column!r}: fewer than two groups have both target and non-target trials "
            f"(usable: {sorted(by_group)}, skipped: {skipped})"
        )
    eers = {k: v.eer for k, v in by_group.items()}
    lo = min(eers, key=lambda k: eers[k])
    hi = max(eers, key=lambda k: eers[k])
    diff = eers[hi] - eers[lo]
    tau = overall.eer_threshold if threshold is None else float(threshold)
    fdr = fairness_discrepancy_rate(s, y, g, threshold=tau, alpha=alpha)
    return GroupFairness(
        column=column,
        overall=overall,
        by_group=by_group,
        skipped=skipped,
        group_min=lo,
        group_max=hi,
        difference=diff,
        relative_gap=diff / eers[lo] if eers[lo] > 0 else math.inf,
        ratio=eers[hi] / eers[lo] if eers[lo] > 0 else math.inf,
        std=float(np.std(list(eers.values()))),
        fdr=fdr,
        fdr_threshold=tau,
        fdr_alpha=alpha,
        fdr_beta=1.0 - alpha,
    )


# --------------------------------------------------------------------------------------------
# speaker bootstrap


def _weighted_eer(sorted_labels: np.ndarray, ends: np.ndarray, w: np.ndarray) -> float:
    p_miss, p_fa = _rates(sorted_labels, ends, w)
    if not (np.isfinite(p_miss[-1]) and np.isfinite(p_fa[-1])):
        return math.nan  # no target or no non-target weight in this replicate
    return _eer_from_rates(p_miss, p_fa)[0]


def _speaker_codes(
    y: np.ndarray, speaker_a: Sequence[object], speaker_b: Sequence[object]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Speaker indices of both trial sides; checks that target trials have one speaker."""
    spk_a = np.asarray([str(x) for x in speaker_a], dtype=object)
    spk_b = np.asarray([str(x) for x in speaker_b], dtype=object)
    if spk_a.size != y.size or spk_b.size != y.size:
        raise InputDataError(f"{y.size} trials but {spk_a.size}/{spk_b.size} speaker labels")
    bad = (y == 1) & (spk_a != spk_b)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"target trial {i} pairs two speakers ({spk_a[i]!r}, {spk_b[i]!r}); "
            "a target trial must have one speaker"
        )
    names, inv = np.unique(np.r_[spk_a, spk_b].astype(str), return_inverse=True)
    return inv[: y.size], inv[y.size :], int(names.size)


def _replicate_eers(
    s: np.ndarray,
    y: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    groups: np.ndarray | None,
    draws: np.ndarray,
    progress: bool,
) -> tuple[dict[str | None, np.ndarray], dict[str, float]]:
    """EER of every replicate, overall (key ``None``) and per usable group; plus point EERs."""
    same = ia == ib
    subsets: dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def prepare(key: str | None, mask: np.ndarray | None) -> None:
        idx = np.arange(s.size) if mask is None else np.flatnonzero(mask)
        order, _, ends = _sort(s[idx])
        subsets[key] = (idx[order], ends, y[idx[order]])

    prepare(None, None)
    point_groups: dict[str, float] = {}
    if groups is not None:
        for name in _group_names(groups):
            m = groups == name
            if 0 < int(y[m].sum()) < int(m.sum()):
                prepare(name, m)
                point_groups[name] = verification_metrics(s[m], y[m], p_targets=()).eer
    n_boot = draws.shape[1]
    stats = {k: np.full(n_boot, math.nan) for k in subsets}
    for r in tqdm(range(n_boot), disable=not progress, desc="speaker bootstrap"):
        c = draws[:, r].astype(np.float64)
        w = np.where(same, c[ia], c[ia] * c[ib])
        for key, (idx, ends, ys) in subsets.items():
            stats[key][r] = _weighted_eer(ys, ends, w[idx])
    return stats, point_groups


def _spread(
    stats: dict[str | None, np.ndarray], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate: max − min and std of the group EERs (nan if a group is undefined)."""
    mat = np.stack([stats[k] for k in names])  # (G, R)
    with np.errstate(invalid="ignore"):
        complete = np.isfinite(mat).all(axis=0)
        diffs = np.where(complete, mat.max(axis=0) - mat.min(axis=0), math.nan)
        stds = np.where(complete, mat.std(axis=0), math.nan)
    return diffs, stds


def _interval(values: np.ndarray, estimate: float, level: float) -> Interval:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return Interval(estimate, math.nan, math.nan, level, 0)
    lo, hi = np.percentile(ok, (100 * (1 - level) / 2, 100 * (1 + level) / 2))
    return Interval(estimate, float(lo), float(hi), level, int(ok.size))


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise InputDataError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise InputDataError(f"level must be in (0, 1), got {level}")


def _as_groups(groups: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups, dtype=object)
    if g.shape != (n,):
        raise InputDataError(f"{n} trials but {g.size} group labels")
    return g


def bootstrap_eer(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    speaker_a: Sequence[object],
    speaker_b: Sequence[object],
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> BootstrapResult:
    """Speaker-level bootstrap intervals for the EER (and per-group EER, gap and std).

    Args:
        scores: (N,) trial scores.
        labels: (N,) 1 target / 0 non-target.
        speaker_a: (N,) speaker of the enrollment side.
        speaker_b: (N,) speaker of the test side (equal to ``speaker_a`` for targets).
        groups: optional (N,) trial groups (see :func:`trial_groups`).
        n_boot: number of replicates.
        level: coverage of the percentile interval.
        seed: random seed.
        progress: show a progress bar.
    """
    _check_boot(n_boot, level)
    s, y = _as_trials(scores, labels)
    ia, ib, n_spk = _speaker_codes(y, speaker_a, speaker_b)
    g = _as_groups(groups, s.size)
    draws = SpeakerBootstrap.draw(n_spk, n_boot, seed=seed).weights_t  # (S, R)
    stats, point_groups = _replicate_eers(s, y, ia, ib, g, draws, progress)
    overall = verification_metrics(s, y, p_targets=()).eer
    diff_iv = std_iv = None
    if len(point_groups) >= 2:
        diffs, stds = _spread(stats, list(point_groups))
        pv = np.array(list(point_groups.values()))
        diff_iv = _interval(diffs, float(pv.max() - pv.min()), level)
        std_iv = _interval(stds, float(pv.std()), level)
    logger.info("speaker bootstrap: %d replicates over %d speakers", n_boot, n_spk)
    return BootstrapResult(
        n_boot=n_boot,
        n_speakers=n_spk,
        level=level,
        eer=_interval(stats[None], overall, level),
        group_eer={k: _interval(stats[k], v, level) for k, v in point_groups.items()},
        difference=diff_iv,
        std=std_iv,
    )


@dataclass(frozen=True)
class PairedDifference:
    """System B minus system A on the same trials, with paired speaker-bootstrap intervals.

    ``eer``: difference of overall EERs; ``difference``: of the group EER gaps (max − min);
    ``std``: of the group EER standard deviations (``None`` without two usable groups).
    """

    n_boot: int
    level: float
    eer: Interval
    difference: Interval | None = None
    std: Interval | None = None


def bootstrap_eer_difference(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    speaker_a: Sequence[object],
    speaker_b: Sequence[object],
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> PairedDifference:
    """Paired speaker bootstrap of ``system B − system A`` (EER, group gap, group std).

    Both systems are scored on the same trials; each replicate draws the speakers once and
    evaluates both systems on that draw, so the interval reflects the difference, not the
    two systems' separate sampling noise.
    """
    _check_boot(n_boot, level)
    sa, y = _as_trials(scores_a, labels)
    sb, _ = _as_trials(scores_b, labels)
    ia, ib, n_spk = _speaker_codes(y, speaker_a, speaker_b)
    g = _as_groups(groups, y.size)
    draws = SpeakerBootstrap.draw(n_spk, n_boot, seed=seed).weights_t
    stats_a, pa = _replicate_eers(sa, y, ia, ib, g, draws, progress)
    stats_b, pb = _replicate_eers(sb, y, ia, ib, g, draws, progress)
    est = (verification_metrics(sb, y, p_targets=()).eer
           - verification_metrics(sa, y, p_targets=()).eer)
    eer_iv = _interval(stats_b[None] - stats_a[None], est, level)
    names = [k for k in pa if k in pb]
    if len(names) < 2:
        return PairedDifference(n_boot, level, eer_iv)
    da, sd_a = _spread(stats_a, names)
    db, sd_b = _spread(stats_b, names)
    va = np.array([pa[k] for k in names])
    vb = np.array([pb[k] for k in names])
    return PairedDifference(
        n_boot,
        level,
        eer_iv,
        _interval(db - da, float((vb.max() - vb.min()) - (va.max() - va.min())), level),
        _interval(sd_b - sd_a, float(vb.std() - va.std()), level),
    )


# --------------------------------------------------------------------------------------------
# scoring


def cosine_scores(
    emb_a: np.ndarray, emb_b: np.ndarray, *, chunk: int = 200_000
) -> np.ndarray:
    """Cosine similarity of paired rows.

    Args:
        emb_a: (N, D) embeddings of the enrollment sides.
        emb_b: (N, D) embeddings of the test sides.
        chunk: rows per chunk (bounds memory for millions of trials).

    Returns:
        (N,) float64 scores in [-1, 1].
    """
    a = np.asarray(emb_a)
    b = np.asarray(emb_b)
    if a.ndim != 2 or b.ndim != 2:
        raise InputDataError(f"embeddings must be 2-D, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise InputDataError(
            f"embedding dimensions differ: {a.shape[1]} (enrollment) vs {b.shape[1]} (test)"
        )
    if a.shape[0] != b.shape[0]:
        raise InputDataError(f"{a.shape[0]} enrollment rows but {b.shape[0]} test rows")
    out = np.empty(a.shape[0], dtype=np.float64)
    for start in range(0, a.shape[0], chunk):
        x = a[start : start + chunk].astype(np.float64)
        z = b[start : start + chunk].astype(np.float64)
        num = np.einsum("nd,nd->n", x, z)
        den = np.linalg.norm(x, axis=1) * np.linalg.norm(z, axis=1)
        out[start : start + chunk] = num / np.maximum(den, 1e-12)
    return out
