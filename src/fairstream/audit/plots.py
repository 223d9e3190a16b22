"""The audit report's plots, as base64 PNG strings embedded in report.html.

Every plot draws only the numbers of the table it is given: report.html passes the tables as
published (cells withheld for privacy are missing, NaN or None, and are not drawn).
matplotlib is imported when a plot is drawn, not with this module; figures are drawn with its
object API and the Agg canvas (no pyplot: no global figure state, and nothing switches the
caller's backend).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairstream.audit.privacy import PrivacyConfig, coarse_locations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["geo_map", "methods_plot", "region_map", "wer_bars"]

#: the bounding-box columns of a table of geographic regions.
BOX_COLUMNS = ("lat_min", "lat_max", "lon_min", "lon_max")


def _figure(width: float, height: float) -> Figure:
    """A figure of that size (inches) with one axes, outside pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.add_subplot()
    return fig


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _col(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64 (NaN for missing, None or non-numeric cells)."""
    if name not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)


def _error_bars(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(2, N) distances from ``value`` to its interval ends (0 where an end is missing)."""
    return np.vstack([np.nan_to_num(value - low), np.nan_to_num(high - value)]).clip(0)


def wer_bars(table: pd.DataFrame, title: str, overall: float | None,
             max_rows: int = 25) -> str | None:
    """WER per cohort with its interval, the overall WER as a line (None: nothing to plot).

    Rows without a WER (suppressed) are left out.
    """
    keep = np.isfinite(_col(table, "wer"))
    if "status" in table.columns:
        keep &= (table["status"] != "suppressed").to_numpy()
    t = table[keep].head(max_rows)
    if t.empty:
        return None
    fig = _figure(7, 0.35 * len(t) + 1.2)
    ax = fig.axes[0]
    y = np.arange(len(t))[::-1]
    wer = 100 * _col(t, "wer")
    err = _error_bars(wer, 100 * _col(t, "wer_ci_low"), 100 * _col(t, "wer_ci_high"))
    ax.barh(y, wer, xerr=err, color="#4c78a8", ecolor="#333", capsize=3)
    ax.set_yticks(y, [str(g) for g in t["group"]])
    if overall is not None and np.isfinite(overall):
        ax.axvline(100 * overall, color="#d62728", ls="--", lw=1, label="overall WER")
        ax.legend(loc="lower right")
    ax.set_xlabel("WER (%) with speaker-bootstrap interval")
    ax.set_title(title)
    return _png(fig)


def region_map(regions: pd.DataFrame, title: str,
               points: tuple[np.ndarray, np.ndarray, np.ndarray | float, str] | None = None
               ) -> str | None:
    """Regions' bounding boxes coloured by WER (grey: WER not reported).

    Args:
        regions: a table with ``lat_min``, ``lat_max``, ``lon_min``, ``lon_max``, ``wer``
            and ``group``.
        title: the plot's title.
        points: (latitudes, longitudes, marker sizes, legend label) drawn over the boxes.

    Returns:
        The PNG, or None when there is no region with a bounding box.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    if regions.empty or not set(BOX_COLUMNS) <= set(regions.columns):
        return None
    box = {c: _col(regions, c) for c in BOX_COLUMNS}
    drawn = np.logical_and.reduce([np.isfinite(v) for v in box.values()])
    if not drawn.any():
        return None
    fig = _figure(8, 5)
    ax = fig.axes[0]
    wers = 100 * _col(regions, "wer")
    finite = np.isfinite(wers) & drawn
    vmin, vmax = (wers[finite].min(), wers[finite].max()) if finite.any() else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-6
    cmap = colormaps["RdYlGn_r"]
    labelled = drawn.sum() <= 12
    for i in np.flatnonzero(drawn):
        color = cmap((wers[i] - vmin) / (vmax - vmin)) if finite[i] else "#cccccc"
        x0, y0 = box["lon_min"][i], box["lat_min"][i]
        w, h = box["lon_max"][i] - x0, box["lat_max"][i] - y0
        ax.add_patch(Rectangle((x0, y0), w, h, facecolor=color, alpha=0.55, edgecolor="#333",
                               lw=0.8))
        if labelled:
            ax.annotate(str(regions["group"].iloc[i]), (x0 + w / 2, y0 + h / 2), ha="center",
                        va="center", fontsize=8)
    if points is not None:
        lat, lon, size, label = points
        ax.scatter(lon, lat, s=size, c="k", alpha=0.5, label=label)
        ax.legend(loc="lower left", fontsize=8)
    sm = ScalarMappable(cmap=cmap, norm=Normalize(vmin, vmax))
    fig.colorbar(sm, ax=ax, label="region WER (%)")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title)
    ax.autoscale_view()
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
    points: tuple[np.ndarray, np.ndarray, np.ndarray | float, str]
    if privacy.include_speaker_ids:
        points = (lat[placed], lon[placed], 4.0, "speakers")
    else:
        cell = privacy.location_cell_deg
        clat, clon, cnt = coarse_locations(lat[placed], lon[placed], cell)
        points = (clat, clon, 4 + 40 * cnt / max(cnt.max(), 1) if len(cnt) else 4.0,
                  f"speakers per {cell:g}° cell")
    return region_map(regions, f"Geographic tree: {len(regions)} regions coloured by WER",
                      points)


def methods_plot(methods: pd.DataFrame, labels: Sequence[str] | None = None) -> str | None:
    """WER gap of each method's bottom cohort against the rest, with its interval.

    Args:
        methods: the methods table (``method``, ``wer_gap_pct``, ``wer_gap_ci_low``,
            ``wer_gap_ci_high``); rows without a gap are left out.
        labels: each row's name on the plot (default: its ``method``).
    """
    gap = _col(methods, "wer_gap_pct")
    keep = np.isfinite(gap)
    if not keep.any():
        return None
    names = np.asarray(list(labels) if labels is not None else list(methods["method"]),
                       dtype=object)[keep]
    g = gap[keep]
    fig = _figure(7, 0.4 * len(g) + 1.2)
    ax = fig.axes[0]
    y = np.arange(len(g))[::-1]
    err = _error_bars(g, _col(methods, "wer_gap_ci_low")[keep],
                      _col(methods, "wer_gap_ci_high")[keep])
    ax.barh(y, g, xerr=err, color="#f58518", ecolor="#333", capsize=3)
    ax.set_yticks(y, [str(n) for n in names])
    ax.set_xlabel("WER gap (%) of the bottom cohort vs the rest, with interval")
    ax.axvline(0, color="k", lw=0.8)
    return _png(fig)
