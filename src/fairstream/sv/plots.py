"""Plots of a verification evaluation: DET curves (probit axes) and per-group EER bars with CIs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fairstream._io import atomic_path
from fairstream.metrics.verification import Interval, OperatingPoints

__all__ = ["plot_det", "plot_group_eer"]

_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


def _save(fig: object, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight",  # type: ignore[attr-defined]
                    format=path.suffix.lstrip(".") or "png")
    return path


def plot_det(curves: Mapping[str, OperatingPoints], path: str | Path, *,
             title: str = "DET curve") -> Path:
    """DET curves (miss vs false-alarm probability on normal-deviate axes), one line per entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    lo, hi = 5e-4, 0.5
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for name, pts in curves.items():
        x = norm.ppf(np.clip(pts.p_fa, lo, hi))
        y = norm.ppf(np.clip(pts.p_miss, lo, hi))
        ax.plot(x, y, label=name, linewidth=1.4)
    ticks = norm.ppf(_TICKS)
    labels = [f"{100 * t:g}" for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.plot([norm.ppf(lo), norm.ppf(hi)], [norm.ppf(lo), norm.ppf(hi)], "k:", linewidth=0.7)
    ax.set_xlabel("False-accept probability (%)")
    ax.set_ylabel("Miss probability (%)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_group_eer(column: str, eers: Mapping[str, Interval], path: str | Path, *,
                   overall: float | None = None) -> Path:
    """Bar chart of EER (%) per group with bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(eers)
    est = np.array([100 * eers[n].estimate for n in names])
    low = np.array([100 * eers[n].low for n in names])
    high = np.array([100 * eers[n].high for n in names])
    err = np.vstack([np.nan_to_num(est - low), np.nan_to_num(high - est)])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3.4))
    ax.bar(range(len(names)), est, yerr=err, capsize=3, color="#4c72b0")
    if overall is not None:
        ax.axhline(100 * overall, color="k", linestyle="--", linewidth=0.8, label="overall")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("EER (%)")
    ax.set_title(f"EER by {column} (speaker-bootstrap CI)")
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
