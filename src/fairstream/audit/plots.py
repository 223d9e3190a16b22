"""The audit report's plots, as base64 PNG strings embedded in report.html.

matplotlib is imported when a plot is drawn (with the ``Agg`` backend), not with this module.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairstream.audit.privacy import PrivacyConfig, coarse_locations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["geo_map", "methods_plot", "wer_bars"]


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def wer_bars(table: pd.DataFrame, title: str, overall: float, max_rows: int = 25) -> str | None:
    """WER per cohort with its interval, the overall WER as a line (None: nothing to plot)."""
    _agg()
    import matplotlib.pyplot as plt

    t = table[table["status"] != "suppressed"].dropna(subset=["wer"]).head(max_rows)
    if t.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    wer = 100 * t["wer"].to_numpy()
    lo = 100 * t["wer_ci_low"].to_numpy()
    hi = 100 * t["wer_ci_high"].to_numpy()
    err = np.vstack([np.nan_to_num(wer - lo), np.nan_to_num(hi - wer)])
    ax.barh(y, wer, xerr=err, color="#4c78a8", ecolor="#333", capsize=3)
    ax.set_yticks(y, [str(g) for g in t["group"]])
    ax.axvline(100 * overall, color="#d62728", ls="--", lw=1, label="overall")
    ax.set_xlabel("WER (%) with speaker-bootstrap CI")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _png(fig)


def geo_map(regions: pd.DataFrame, lat: np.ndarray, lon: np.ndarray, placed: np.ndarray,
            privacy: PrivacyConfig) -> str | None:
    """The regions' bounding boxes coloured by WER over the speakers' locations.

    Args:
        regions: the geographic method's cohort table (bounding boxes and WER per region).
        lat: (S,) speaker latitudes.
        lon: (S,) speaker longitudes.
        placed: (S,) True for the speakers the tree placed in a region.
        privacy: exact locations only when speaker ids are allowed, else counts per cell.

    Returns:
        The PNG, or None when there is no region.
    """
    _agg()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if regions.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    wers = 100 * regions["wer"].to_numpy(np.float64)
    finite = np.isfinite(wers)
    vmin, vmax = (np.nanmin(wers), np.nanmax(wers)) if finite.any() else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    cmap = plt.get_cmap("RdYlGn_r")
    for _, r in regions.iterrows():
        wv = 100 * r["wer"]
        color = cmap((wv - vmin) / (vmax - vmin)) if np.isfinite(wv) else "#cccccc"
        ax.add_patch(Rectangle((r["lon_min"], r["lat_min"]), r["lon_max"] - r["lon_min"],
                               r["lat_max"] - r["lat_min"], facecolor=color, alpha=0.55,
                               edgecolor="#333", lw=0.8))
    if privacy.include_speaker_ids:
        ax.scatter(lon[placed], lat[placed], s=4, c="k", alpha=0.5, label="speakers")
    else:
        cell = privacy.location_cell_deg
        clat, clon, cnt = coarse_locations(lat[placed], lon[placed], cell)
        ax.scatter(clon, clat, s=4 + 40 * cnt / max(cnt.max(), 1) if len(cnt) else 4, c="k",
                   alpha=0.5, label=f"speakers per {cell:g}° cell")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin, vmax))
    fig.colorbar(sm, ax=ax, label="region WER (%)")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"Geographic tree: {len(regions)} regions coloured by WER")
    ax.legend(loc="lower left", fontsize=8)
    ax.autoscale_view()
    return _png(fig)


def methods_plot(methods: pd.DataFrame) -> str | None:
    """WER gap of each method's bottom cohort against the rest, with its interval."""
    _agg()
    import matplotlib.pyplot as plt

    t = methods.dropna(subset=["wer_gap_pct"])
    if t.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    g = t["wer_gap_pct"].to_numpy()
    err = np.vstack([np.nan_to_num(g - t["wer_gap_ci_low"].to_numpy()),
                     np.nan_to_num(t["wer_gap_ci_high"].to_numpy() - g)])
    ax.barh(y, g, xerr=err, color="#f58518", ecolor="#333", capsize=3)
    ax.set_yticks(y, list(t["method"]))
    ax.set_xlabel("WER gap (%) of the bottom cohort vs the rest, with CI")
    ax.axvline(0, color="k", lw=0.8)
    return _png(fig)
