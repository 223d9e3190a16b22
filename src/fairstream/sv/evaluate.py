"""Speaker-verification evaluation with fairness breakdowns, and its written report.

:func:`evaluate_sv` scores a trial list against an embedding table and computes, with the
definitions of :mod:`fairstream.metrics.verification`:

* overall EER and minDCF (``P_target`` 0.01 and 0.05 by default, ``C_miss = C_fa = 1``,
  normalized as Kaldi's ``compute_min_dcf.py``), with a speaker-bootstrap interval for the EER;
* for every ``group_by`` column (gender, accent or any metadata column of the table): the EER
  and minDCF of each group (trials whose both sides are in the group), the absolute and
  relative EER gap, the standard deviation across groups, the fairness discrepancy rate, and
  bootstrap intervals for each group's EER, the gap and the spread.

Privacy: groups with fewer than ``min_group_speakers`` speakers are suppressed (listed by name
with their size class only, never scored), and no output names an individual speaker's
metadata.

:func:`write_evaluation` writes ``metrics.json``, ``report.md``, ``groups_<column>.csv``,
``det.png``, ``eer_by_<column>.png`` and ``scores.txt`` (``score label enroll test``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text as _atomic_text
from fairstream.data.trials import Trial
from fairstream.errors import InputDataError
from fairstream.metrics.verification import (
    DCF_NORMALIZATION,
    DEFAULT_P_TARGETS,
    BootstrapResult,
    GroupFairness,
    Interval,
    OperatingPoints,
    VerificationMetrics,
    bootstrap_eer,
    group_fairness,
    operating_points,
    trial_groups,
    verification_metrics,
)
from fairstream.sv.plots import plot_det, plot_group_eer
from fairstream.sv.scoring import index_trials, score_trials

__all__ = ["DEFINITIONS", "SvEvalConfig", "SvEvaluation", "evaluate_sv", "write_evaluation"]

logger = logging.getLogger(__name__)

DEFINITIONS: dict[str, str] = {
    "EER": "equal error rate: where P_miss = P_fa on the empirical ROC, linearly interpolated "
    "between the two adjacent operating points (ties never split)",
    "minDCF": DCF_NORMALIZATION,
    "group trials": "a trial belongs to a group when both of its sides do; cross-group "
    "non-target trials count only overall",
    "gap": "absolute gap = max group EER - min group EER; relative gap = gap / min group EER",
    "std": "population standard deviation of the per-group EERs",
    "FDR": "fairness discrepancy rate (de Freitas Pereira & Marcel 2021): 1 - (alpha * max "
    "|FMR_g - FMR_h| + beta * max |FNMR_g - FNMR_h|) at one threshold for all groups; 1 = fair",
    "CI": "percentile interval over speaker-bootstrap replicates (speakers drawn with "
    "replacement; a non-target trial of speakers a, b counts c_a * c_b times)",
}


@dataclass(frozen=True)
class SvEvalConfig:
    """Evaluation settings.

    Attributes:
        p_targets: target priors of the minDCF.
        c_miss: miss cost.
        c_fa: false-accept cost.
        group_by: metadata columns to break results down by.
        n_boot: speaker-bootstrap replicates (0: no intervals).
        level: interval coverage.
        seed: bootstrap seed.
        min_group_speakers: groups with fewer speakers are suppressed.
        fdr_alpha: FDR weight of the false-match term (beta = 1 - alpha).
    """

    p_targets: tuple[float, ...] = DEFAULT_P_TARGETS
    c_miss: float = 1.0
    c_fa: float = 1.0
    group_by: tuple[str, ...] = ("gender", "accent")
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    min_group_speakers: int = 5
    fdr_alpha: float = 0.5


@dataclass(frozen=True)
class SvEvaluation:
    """Everything :func:`evaluate_sv` computed."""

    config: SvEvalConfig
    scoring: str
    n_trials: int
    n_speakers: int
    overall: VerificationMetrics
    overall_ci: BootstrapResult | None
    groups: dict[str, GroupFairness]
    group_ci: dict[str, BootstrapResult]
    suppressed: dict[str, list[str]]
    curve: OperatingPoints = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:  # Any: nested JSON data of mixed value types
        """JSON-ready summary (definitions included, no per-speaker data)."""

        def iv(x: Interval | None) -> dict[str, Any] | None:  # Any: what asdict returns
            return None if x is None else asdict(x)

        def vm(m: VerificationMetrics) -> dict[str, object]:
            return {
                "n_target": m.n_target,
                "n_nontarget": m.n_nontarget,
                "eer": m.eer,
                "eer_threshold": m.eer_threshold,
                "min_dcf": [
                    {"p_target": p.p_target, "c_miss": p.c_miss, "c_fa": p.c_fa, "value": p.min_dcf,
                     "normalization": p.normalization}
                    for p in m.min_dcf
                ],
            }

        groups = {}
        for col, g in self.groups.items():
            ci = self.group_ci.get(col)
            groups[col] = {
                "by_group": {
                    k: {**vm(v), "eer_ci": iv(ci.group_eer.get(k)) if ci else None}
                    for k, v in g.by_group.items()
                },
                "skipped": g.skipped,
                "suppressed_below_min_speakers": self.suppressed.get(col, []),
                "group_min": g.group_min,
                "group_max": g.group_max,
                "difference": g.difference,
                "difference_ci": iv(ci.difference) if ci else None,
                "relative_gap": g.relative_gap if math.isfinite(g.relative_gap) else None,
                "ratio": g.ratio if math.isfinite(g.ratio) else None,
                "std": g.std,
                "std_ci": iv(ci.std) if ci else None,
                "fdr": g.fdr,
                "fdr_threshold": g.fdr_threshold,
                "fdr_alpha": g.fdr_alpha,
                "fdr_beta": g.fdr_beta,
            }
        return {
            "scoring": self.scoring,
            "n_trials": self.n_trials,
            "n_speakers": self.n_speakers,
            "overall": {**vm(self.overall),
                        "eer_ci": iv(self.overall_ci.eer) if self.overall_ci else None},
            "groups": groups,
            "config": asdict(self.config),
            "definitions": DEFINITIONS,
        }


def _column(table: pd.DataFrame, col: str, rows: np.ndarray) -> np.ndarray:
    if col not in table.columns:
        raise InputDataError(
            f"cannot group by {col!r}: the embedding table has no such column "
            f"(columns: {', '.join(c for c in table.columns if c != 'embedding')})"
        )
    return table[col].to_numpy(dtype=object)[rows]


def evaluate_sv(
    trials: Sequence[Trial],
    table: pd.DataFrame,
    embeddings: np.ndarray,
    *,
    config: SvEvalConfig | None = None,
    cohort: np.ndarray | None = None,
    top_k: int = 200,
    progress: bool = False,
) -> SvEvaluation:
    """Score ``trials`` against an embedding table and compute every metric.

    Args:
        trials: the trial list.
        table: (U rows) embedding table without vectors; ``path`` and ``speaker_id`` columns
            plus the ``group_by`` columns.
        embeddings: (U, E) utterance embeddings, row-aligned with ``table``.
        config: :class:`SvEvalConfig`.
        cohort: (M, E) AS-norm cohort, or ``None`` for raw cosine scores.
        top_k: AS-norm adaptive cohort size.
        progress: bootstrap progress bars.

    Raises:
        InputDataError: unknown utterances, mismatched dimensions, NaN scores, an all-target or
            all-non-target list, or a missing group column (each named).
    """
    cfg = config or SvEvalConfig()
    if len(table) != embeddings.shape[0]:
        raise InputDataError(f"{len(table)} table rows but {embeddings.shape[0]} embeddings")
    keys = table["path"].astype(str).tolist()
    index = index_trials(trials, keys)
    scores = score_trials(embeddings, index, cohort=cohort, top_k=top_k)
    names = [t.to_line() for t in trials]
    labels = index.labels
    overall = verification_metrics(scores, labels, p_targets=cfg.p_targets, c_miss=cfg.c_miss,
                                   c_fa=cfg.c_fa, names=names)
    spk = table["speaker_id"].astype(str).to_numpy(dtype=object)
    spk_a, spk_b = spk[index.enroll], spk[index.test]
    overall_ci = None
    if cfg.n_boot > 0:
        overall_ci = bootstrap_eer(scores, labels, spk_a, spk_b, n_boot=cfg.n_boot, level=cfg.level,
                                   seed=cfg.seed, progress=progress)
    groups: dict[str, GroupFairness] = {}
    group_ci: dict[str, BootstrapResult] = {}
    suppressed: dict[str, list[str]] = {}
    for col in cfg.group_by:
        g = trial_groups(_column(table, col, index.enroll), _column(table, col, index.test))
        speakers_in: dict[str, set[str]] = {}
        for grp, a in zip(g, spk_a):
            if grp is not None:
                speakers_in.setdefault(grp, set()).add(a)
        small = sorted(k for k, v in speakers_in.items() if len(v) < cfg.min_group_speakers)
        if small:
            g = np.asarray([None if x in small else x for x in g], dtype=object)
            suppressed[col] = small
            logger.info("%s: suppressed groups with < %d speakers: %s",
                        col, cfg.min_group_speakers, small)
        try:
            groups[col] = group_fairness(scores, labels, g, column=col, p_targets=cfg.p_targets,
                                         alpha=cfg.fdr_alpha)
        except InputDataError as exc:
            logger.warning("no per-group results for %s: %s", col, exc)
            continue
        if cfg.n_boot > 0:
            group_ci[col] = bootstrap_eer(scores, labels, spk_a, spk_b, groups=g, n_boot=cfg.n_boot,
                                          level=cfg.level, seed=cfg.seed, progress=progress)
    if cohort is None:
        scoring = "cosine"
    else:
        n_cohort = cohort.shape[0]
        scoring = f"cosine + AS-norm (top-{min(top_k, n_cohort)} of {n_cohort} cohort embeddings)"
    return SvEvaluation(
        config=cfg,
        scoring=scoring,
        n_trials=len(trials),
        n_speakers=len(set(spk_a) | set(spk_b)),
        overall=overall,
        overall_ci=overall_ci,
        groups=groups,
        group_ci=group_ci,
        suppressed=suppressed,
        curve=operating_points(scores, labels),
        scores=scores,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def _ci(x: Interval | None) -> str:
    return "" if x is None or x.n_valid == 0 else f"[{_pct(x.low)}, {_pct(x.high)}]"


def report_markdown(ev: SvEvaluation) -> str:
    """The human-readable report (Markdown)."""
    cfg = ev.config
    dcf_heads = " | ".join(f"minDCF(P_target={p.p_target:g})" for p in ev.overall.min_dcf)
    lines = [
        "# Speaker-verification evaluation",
        "",
        (
            f"Scoring: {ev.scoring}. {ev.n_trials} trials ({ev.overall.n_target} target, "
            f"{ev.overall.n_nontarget} non-target), {ev.n_speakers} speakers."
        ),
        (
            f"minDCF: C_miss={cfg.c_miss:g}, C_fa={cfg.c_fa:g}, "
            "normalized as Kaldi's compute_min_dcf.py "
            "(divided by min(C_miss·P_target, C_fa·(1−P_target)))."
        ),
        f"Intervals: {100 * cfg.level:g}% speaker bootstrap, {cfg.n_boot} replicates. EER in %.",
        "",
        f"| | EER | EER CI | {dcf_heads} |",
        "|---|---|---|" + "---|" * len(ev.overall.min_dcf),
        f"| overall | {_pct(ev.overall.eer)} "
        f"| {_ci(ev.overall_ci.eer if ev.overall_ci else None)} | "
        + " | ".join(f"{p.min_dcf:.4f}" for p in ev.overall.min_dcf) + " |",
        "",
    ]
    for col, g in ev.groups.items():
        ci = ev.group_ci.get(col)
        lines += [f"## By {col}", "",
                  f"| {col} | target | non-target | EER | EER CI | {dcf_heads} |",
                  "|---|---|---|---|---|" + "---|" * len(ev.overall.min_dcf)]
        for name, m in g.by_group.items():
            lines.append(
                f"| {name} | {m.n_target} | {m.n_nontarget} | {_pct(m.eer)} | "
                f"{_ci(ci.group_eer.get(name) if ci else None)} | "
                + " | ".join(f"{p.min_dcf:.4f}" for p in m.min_dcf) + " |"
            )
        rel = "n/a" if not math.isfinite(g.relative_gap) else f"{100 * g.relative_gap:.1f}%"
        lines += [
            "",
            (
                f"- EER gap (max − min): {_pct(g.difference)} points "
                f"({g.group_max} vs {g.group_min}) {_ci(ci.difference if ci else None)}; "
                f"relative gap {rel}"
            ),
            f"- std of group EERs: {_pct(g.std)} points {_ci(ci.std if ci else None)}",
            (
                f"- FDR (α={g.fdr_alpha:g}, β={g.fdr_beta:g}, "
                f"threshold {g.fdr_threshold:.4f} = overall EER threshold): {g.fdr:.4f}"
            ),
        ]
        if g.skipped:
            lines.append(f"- no EER (missing target or non-target trials): {', '.join(g.skipped)}")
        if ev.suppressed.get(col):
            hidden = ", ".join(ev.suppressed[col])
            lines.append(f"- suppressed (< {cfg.min_group_speakers} speakers): {hidden}")
        lines.append("")
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def write_evaluation(ev: SvEvaluation, trials: Sequence[Trial],
                     out_dir: str | Path) -> dict[str, Path]:
    """Write the evaluation files (see the module docstring); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["metrics"] = out / "metrics.json"
    metrics = json.dumps(ev.to_dict(), indent=2, allow_nan=False, default=str)
    _atomic_text(files["metrics"], metrics + "\n")
    files["report"] = out / "report.md"
    _atomic_text(files["report"], report_markdown(ev))
    files["scores"] = out / "scores.txt"
    _atomic_text(files["scores"], "".join(
        f"{s:.6f} {t.label} {t.enroll} {t.test}\n" for s, t in zip(ev.scores, trials)))
    files["det"] = plot_det({"overall": ev.curve}, out / "det.png",
                            title=f"DET ({ev.scoring}), EER {_pct(ev.overall.eer)}%")
    for col, g in ev.groups.items():
        ci = ev.group_ci.get(col)
        rows = []
        for name, m in g.by_group.items():
            row: dict[str, object] = {col: name, "n_target": m.n_target,
                                      "n_nontarget": m.n_nontarget, "eer": m.eer}
            if ci and name in ci.group_eer:
                row["eer_ci_low"] = ci.group_eer[name].low
                row["eer_ci_high"] = ci.group_eer[name].high
            for p in m.min_dcf:
                row[f"min_dcf_p{p.p_target:g}"] = p.min_dcf
            rows.append(row)
        path = out / f"groups_{col}.csv"
        _atomic_text(path, pd.DataFrame(rows).to_csv(index=False))
        files[f"groups_{col}"] = path
        if ci:
            intervals = ci.group_eer
        else:
            intervals = {k: Interval(v.eer, math.nan, math.nan, 0.0, 0)
                         for k, v in g.by_group.items()}
        files[f"plot_{col}"] = plot_group_eer(col, intervals, out / f"eer_by_{col}.png",
                                              overall=ev.overall.eer)
    return files
