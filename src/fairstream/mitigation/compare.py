"""Before/after comparison of two results tables on the same utterances, paired by speaker.

``compare_results(before, after, cohort_of)`` answers what a mitigation did, cohort by cohort:
WER before and after for every cohort, overall WER, the mean, max and variance of WER across
the cohorts, the audit's gap of the bottom cohort against the rest, and *forgetting* (the
largest WER increase over the cohorts other than the one mitigated). Every difference has a
95 % **paired** speaker-bootstrap interval: one set of replicates resamples the test speakers,
and each replicate computes the statistic before and after on the same resampled speakers,
so speaker-to-speaker variation common to both runs cancels out.

Definitions (WER = Σ errors / Σ reference words, fractions; ``diff`` = after − before):

* ``variance`` = population variance (``ddof=0``) of the cohorts' WERs, unweighted;
* ``gap_pct`` = (WER_bottom / WER_rest − 1) × 100, rest = every other test speaker (as in
  the audit);
* ``forgetting_max`` = max over the other cohorts of (WER_after − WER_before); its interval
  is the percentile interval of that maximum over the replicates.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap, percentile_interval, ratio_replicates

__all__ = ["Comparison", "compare_results", "errors_column"]

_ERRORS = ("sub", "del", "ins")


def errors_column(df: pd.DataFrame) -> pd.Series:
    """Errors per utterance (substitutions + deletions + insertions)."""
    missing = [c for c in (*_ERRORS, "n_ref_words", "utt_id", "speaker_id") if c not in df]
    if missing:
        raise InputDataError(f"results table lacks the column(s) {missing}")
    return df["sub"] + df["del"] + df["ins"]


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_results` returns.

    Attributes:
        cohorts: one row per cohort: ``cohort``, ``n_speakers``, ``ref_words``,
            ``wer_before``, ``wer_after``, ``diff``, ``diff_ci_low``, ``diff_ci_high``,
            ``mitigated`` (the cohort acted on).
        summary: overall, mean, max, variance, gap and forgetting: ``<stat>_before``,
            ``<stat>_after``, ``<stat>_diff`` and ``<stat>_diff_ci`` ([low, high]);
            ``forgetting_max`` with ``forgetting_max_ci``; counts of utterances and speakers.
        bottom: the cohort acted on (None: no cohort named; no gap then).
    """

    cohorts: pd.DataFrame
    summary: dict[str, Any]
    bottom: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The comparison as JSON (NaN → null)."""
        rows = json.loads(self.cohorts.to_json(orient="records"))
        return json.dumps({"bottom": self.bottom, "summary": _clean(self.summary),
                           "cohorts": rows, "notes": self.notes}, indent=1)

    def markdown(self) -> str:
        """A Markdown table of the cohorts and the summary lines."""
        s = self.summary
        lines = ["| cohort | speakers | WER before | WER after | after − before [95 % CI] |",
                 "|---|---:|---:|---:|---|"]
        for r in self.cohorts.itertuples():
            mark = " (mitigated)" if r.mitigated else ""
            lines.append(f"| {r.cohort}{mark} | {r.n_speakers} | {r.wer_before:.2%} | "
                         f"{r.wer_after:.2%} | {_pts(r.diff)} [{_pts(r.diff_ci_low)}, "
                         f"{_pts(r.diff_ci_high)}] |")
        lines.append("")
        for key, name in (("overall", "overall WER"), ("mean", "mean cohort WER"),
                          ("max", "max cohort WER"), ("variance", "variance across cohorts"),
                          ("gap_pct", "gap of the mitigated cohort (%)")):
            if f"{key}_before" not in s or s[f"{key}_before"] is None:
                continue
            lo, hi = s[f"{key}_diff_ci"]
            if key == "variance":
                lines.append(f"- {name}: {s[f'{key}_before']:.2e} → {s[f'{key}_after']:.2e} "
                             f"(diff {s[f'{key}_diff']:.2e} [{lo:.2e}, {hi:.2e}])")
            elif key == "gap_pct":
                lines.append(f"- {name}: {s[f'{key}_before']:.1f} → {s[f'{key}_after']:.1f} "
                             f"(diff {s[f'{key}_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}])")
            else:
                lines.append(f"- {name}: {s[f'{key}_before']:.2%} → {s[f'{key}_after']:.2%} "
                             f"(diff {_pts(s[f'{key}_diff'])} points [{_pts(lo)}, {_pts(hi)}])")
        if s.get("forgetting_max") is not None:
            lo, hi = s["forgetting_max_ci"]
            lines.append(f"- forgetting (largest WER increase on another cohort, "
                         f"{s['forgetting_cohort']}): {_pts(s['forgetting_max'])} points "
                         f"[{_pts(lo)}, {_pts(hi)}]")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path, stem: str = "comparison") -> dict[str, Path]:
        """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (atomically); their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": atomic_write_text(out / f"{stem}.json", self.to_json()),
                 "md": atomic_write_text(out / f"{stem}.md", self.markdown())}
        paths["png"] = plot_comparison(self, out / f"{stem}.png")
        return paths


def _pts(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.2f}"


def _clean(v: Any) -> Any:  # Any: JSON-like data
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _interval(reps: np.ndarray) -> list[float]:
    lo, hi = percentile_interval(reps)
    return [float(lo), float(hi)]


def compare_results(before: pd.DataFrame, after: pd.DataFrame,
                    cohort_of: Mapping[str, str] | pd.Series, *,
                    bottom: str | None = None, n_boot: int = 1000, seed: int = 0,
                    exclude: Sequence[str] = ()) -> Comparison:
    """Compare two decodes of the same utterances, cohort by cohort (module docstring).

    Args:
        before, after: results tables (``utt_id``, ``speaker_id``, ``n_ref_words``, ``sub``,
            ``del``, ``ins``); only utterances in both are compared.
        cohort_of: speaker id → cohort label (speakers without one count in the overall
            figures only).
        bottom: the cohort acted on (its gap and the forgetting over the others).
        n_boot: bootstrap replicates; seed: their seed.
        exclude: cohort labels left out of mean / max / variance / forgetting (e.g. a pool
            of small cohorts).

    Raises:
        InputDataError: no shared utterance, the tables disagree on a shared utterance, or
            ``bottom`` is not a cohort of the test speakers.
    """
    b = before.assign(_e=errors_column(before))[["utt_id", "speaker_id", "n_ref_words", "_e"]]
    a = after.assign(_e=errors_column(after))[["utt_id", "speaker_id", "n_ref_words", "_e"]]
    both = b.merge(a, on="utt_id", suffixes=("_b", "_a"))
    if both.empty:
        raise InputDataError("the before and after results share no utterance id")
    for col in ("speaker_id", "n_ref_words"):
        bad = both[f"{col}_b"] != both[f"{col}_a"]
        if bad.any():
            raise InputDataError(f"before and after disagree on {col} of utterance "
                                 f"{both.loc[bad, 'utt_id'].iloc[0]!r}")
    notes = []
    dropped = len(b) + len(a) - 2 * len(both)
    if dropped:
        notes.append(f"{dropped} utterance rows are in only one of the two tables and are "
                     "left out")
    per = both.groupby("speaker_id_b", sort=True)[["_e_b", "_e_a", "n_ref_words_b"]].sum()
    speakers = per.index.astype(str)
    cohort_map = pd.Series(cohort_of) if not isinstance(cohort_of, pd.Series) else cohort_of
    cohort_map.index = cohort_map.index.astype(str)
    labels = cohort_map.reindex(speakers)
    names = sorted(str(x) for x in labels.dropna().unique())
    if bottom is not None and bottom not in names:
        raise InputDataError(f"cohort {bottom!r} has no test speaker; cohorts: {names}")
    eb, ea, w = (per[c].to_numpy(np.float64) for c in ("_e_b", "_e_a", "n_ref_words_b"))
    g = len(names)
    ind = np.stack([(labels == n).to_numpy() for n in names]) if g else np.zeros((0, len(w)))
    rows = [eb, ea, w]
    for k in range(g):
        rows += [eb * ind[k], ea * ind[k], w * ind[k]]
    x = np.vstack(rows)
    boot = SpeakerBootstrap.draw(len(w), n_boot, seed=seed)
    tot = np.concatenate([x.sum(axis=1, keepdims=True), boot.totals(x)], axis=1)  # col 0: point
    ob, oa = ratio_replicates(tot[0], tot[2]), ratio_replicates(tot[1], tot[2])
    cb = np.stack([ratio_replicates(tot[3 + 3 * k], tot[5 + 3 * k]) for k in range(g)]) \
        if g else np.zeros((0, tot.shape[1]))
    ca = np.stack([ratio_replicates(tot[4 + 3 * k], tot[5 + 3 * k]) for k in range(g)]) \
        if g else np.zeros((0, tot.shape[1]))
    summary: dict[str, Any] = {"n_utterances": len(both), "n_speakers": len(w),
                               "n_boot": n_boot, "seed": seed}

    def put(key: str, before_r: np.ndarray, after_r: np.ndarray) -> None:
        summary[f"{key}_before"] = float(before_r[0])
        summary[f"{key}_after"] = float(after_r[0])
        summary[f"{key}_diff"] = float(after_r[0] - before_r[0])
        summary[f"{key}_diff_ci"] = _interval((after_r - before_r)[1:])

    put("overall", ob, oa)
    keep = [k for k, n in enumerate(names) if n not in set(exclude)]
    # a cohort absent from a replicate is nan there; nan-aware reductions skip it
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if keep:
            put("mean", np.nanmean(cb[keep], axis=0), np.nanmean(ca[keep], axis=0))
            put("max", np.nanmax(cb[keep], axis=0), np.nanmax(ca[keep], axis=0))
            put("variance", np.nanvar(cb[keep], axis=0), np.nanvar(ca[keep], axis=0))
        if bottom is not None:
            k = names.index(bottom)
            rb = ratio_replicates(tot[0] - tot[3 + 3 * k], tot[2] - tot[5 + 3 * k])
            ra = ratio_replicates(tot[1] - tot[4 + 3 * k], tot[2] - tot[5 + 3 * k])
            put("bottom", cb[k], ca[k])
            put("gap_pct", 100.0 * (cb[k] / rb - 1.0), 100.0 * (ca[k] / ra - 1.0))
            others = [j for j in keep if j != k]
            if others:
                inc = ca[others] - cb[others]
                worst = int(np.nanargmax(inc[:, 0]))
                summary["forgetting_max"] = float(inc[worst, 0])
                summary["forgetting_cohort"] = names[others[worst]]
                summary["forgetting_max_ci"] = _interval(np.nanmax(inc[:, 1:], axis=0))
    table = []
    for k, n in enumerate(names):
        lo, hi = percentile_interval((ca[k] - cb[k])[1:])
        table.append({"cohort": n, "n_speakers": int(ind[k].sum()),
                      "ref_words": int((w * ind[k]).sum()),
                      "wer_before": float(cb[k, 0]), "wer_after": float(ca[k, 0]),
                      "diff": float(ca[k, 0] - cb[k, 0]), "diff_ci_low": float(lo),
                      "diff_ci_high": float(hi), "mitigated": n == bottom})
    frame = pd.DataFrame(table, columns=["cohort", "n_speakers", "ref_words", "wer_before",
                                         "wer_after", "diff", "diff_ci_low", "diff_ci_high",
                                         "mitigated"])
    frame = frame.sort_values("wer_before", ascending=False).reset_index(drop=True)
    return Comparison(cohorts=frame, summary=summary, bottom=bottom, notes=notes)


def plot_comparison(comp: Comparison, path: str | Path) -> Path:
    """Per-cohort WER before and after as paired bars (the mitigated cohort marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fairstream._io import atomic_path

    df = comp.cohorts
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(df) + 2), 3.6))
    xs = np.arange(len(df))
    ax.bar(xs - 0.2, 100 * df["wer_before"], 0.4, label="before", color="#9aa5b1")
    ax.bar(xs + 0.2, 100 * df["wer_after"], 0.4, label="after", color="#2b6cb0")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{c}{' *' if m else ''}" for c, m in zip(df["cohort"], df["mitigated"])],
                       rotation=30, ha="right")
    ax.set_ylabel("WER (%)")
    s = comp.summary
    ax.axhline(100 * s["overall_before"], color="#9aa5b1", ls="--", lw=1)
    ax.axhline(100 * s["overall_after"], color="#2b6cb0", ls="--", lw=1)
    ax.set_title("WER per cohort before and after (* mitigated; dashed: overall)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
