"""Audit report: offline HTML with embedded PNG plots, report.json and CSV tables.

Files written to ``out_dir`` (each atomically):

* ``report.html`` — opens offline (plots are base64 PNGs): methods side by side, definitions,
  per-method cohort tables and plots, exclusions, privacy statement, provenance;
* ``report.json`` — the same numbers, machine-readable (NaN → null);
* ``methods.csv``, ``cohorts_<method>.csv``, ``geo_split_tests.csv``,
  ``geodemographic_candidates.csv``, ``exclusions.csv``;
* ``speaker_cohorts.csv`` only when speaker ids are allowed (privacy).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text as _atomic_write
from fairstream.audit.privacy import coarse_locations
from fairstream.audit.result import DEFINITIONS, AuditResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["report_dict", "write_report"]


def _clean(obj: Any) -> Any:  # Any: JSON-like data of any shape, in and out
    """JSON-safe: NaN/inf → None, numpy scalars → python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if not math.isfinite(v) else v
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:  # Any: table cells of any type
    return _clean(df.to_dict(orient="records"))  # type: ignore[no-any-return]


def report_dict(result: AuditResult) -> dict[str, Any]:  # Any: the JSON report
    """Everything in report.json (no speaker ids unless the privacy config allows them)."""
    show = result.config.privacy.include_speaker_ids
    d: dict[str, Any] = {  # Any: as above
        "format": "fairstream-audit",
        "version": 1,
        "overall": result.overall,
        "definitions": DEFINITIONS,
        "methods": _records(result.methods),
        "cohorts": {m: _records(t) for m, t in result.cohort_tables.items()},
        "exclusions": [x.to_dict(with_examples=show) for x in result.exclusions],
        "notes": list(result.notes),
        "provenance": result.provenance,
        "config": asdict(result.config),
    }
    if result.geo is not None:
        d["geo_split_tests"] = [asdict(t) for t in result.geo.tests]
    if result.geodemographic is not None:
        g = result.geodemographic
        d["geodemographic"] = {"attribute": g.attribute, "bottom_definition": g.bottom_definition,
                               "n_candidates": g.n_candidates,
                               "top_candidates": _records(g.candidates.head(20))}
    if result.embedding is not None:
        em = result.embedding
        d["embedding"] = {"k": em.k, "silhouette": em.silhouette, "source": em.source,
                          "bottom_clusters": list(em.bottom_labels)}
    return _clean(d)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- plots


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _wer_bars(table: pd.DataFrame, title: str, overall: float, max_rows: int = 25) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
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


def _geo_map(result: AuditResult) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    regions = result.geo_regions
    if regions is None or regions.empty:
        return None
    cfg = result.config.geo
    lat = result.stats.table[cfg.lat_col].to_numpy(np.float64)
    lon = result.stats.table[cfg.lon_col].to_numpy(np.float64)
    ok = result.geo.partition.codes >= 0 if result.geo is not None else np.isfinite(lat)
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
    if result.config.privacy.include_speaker_ids:
        ax.scatter(lon[ok], lat[ok], s=4, c="k", alpha=0.5, label="speakers")
    else:
        cell = result.config.privacy.location_cell_deg
        clat, clon, cnt = coarse_locations(lat[ok], lon[ok], cell)
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


def _methods_plot(methods: pd.DataFrame) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
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


# ----------------------------------------------------------------------------- html


def _fmt(v: object, pct: bool = False, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{100 * v:.{digits}f}" if pct else f"{v:.{digits}f}"
    return str(v)


_WER_COLS = ("wer", "wer_ci_low", "wer_ci_high", "wer_rest", "wer_bottom", "difference")


def _display(df: pd.DataFrame, cols: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    rows = []
    for rec in df[cols].to_dict(orient="records"):
        rows.append({c: _fmt(rec[c], pct=c in _WER_COLS,
                             digits=3 if c == "p_value" else 2) for c in cols})
    names = [f"{c} (%)" if c in _WER_COLS else c for c in cols]
    return names, [dict(zip(names, r.values())) for r in rows]


_COHORT_COLS = ["group", "status", "n_speakers", "n_utterances", "ref_words", "wer", "wer_ci_low",
                "wer_ci_high", "wer_rest", "gap_pct", "gap_ci_low", "gap_ci_high", "p_value",
                "share_speakers_pct", "share_words_pct"]


# Any: template context of strings, tables and images
def _sections(result: AuditResult) -> list[dict[str, Any]]:
    secs = []
    ow = result.overall["wer"]
    for m, tab in result.cohort_tables.items():
        paragraphs, images = [], []
        cols = list(_COHORT_COLS)
        if m == "geo" and result.geo is not None:
            g = result.geo
            cols = ["group", "path"] + cols[1:]
            paragraphs.append(
                f"{len(g.regions)} regions from {len(g.tests)} split tests "
                f"(min {g.config.min_speakers} speakers and {g.config.min_words} words per "
                f"region, at most {g.config.max_regions} regions, "
                f"family-wise α = {g.config.alpha}). "
                "A region is split only when the simultaneous speaker-bootstrap interval of the "
                "best split's WER difference (max-statistic over all candidate thresholds, level "
                "α × region share of speakers) excludes 0."
            )
            img = _geo_map(result)
            if img:
                images.append(img)
        if m == "geodemo" and result.geodemographic is not None:
            gd = result.geodemographic
            paragraphs.append(
                f"Largest WER gap among {gd.n_candidates} binary zip partitions: "
                f"{gd.bottom_definition}. The interval is conditional on this choice (the search "
                "is not corrected for)."
            )
        if m == "embedding" and result.embedding is not None:
            em = result.embedding
            sil = ", ".join(f"k={k}: {v:.3f}" for k, v in sorted(em.silhouette.items()))
            paragraphs.append(f"Embeddings: {em.source}. k = {em.k} (silhouette {sil}). "
                              f"Bottom cohort: {', '.join(em.bottom_labels)}.")
        img = _wer_bars(tab, f"WER per cohort: {m}", ow)
        if img:
            images.insert(0, img)
        names, rows = _display(tab, [c for c in cols if c in tab.columns])
        if (tab["status"] != "ok").any():
            paragraphs.append("Groups below the minimum cohort size were pooled (status "
                              "'merged') or, if still too small, suppressed.")
        secs.append({"title": f"Cohorts: {m}", "paragraphs": paragraphs, "images": images,
                     "cols": names, "rows": rows})
    return secs


def write_report(result: AuditResult, out_dir: str | Path) -> Path:
    """Write the HTML/JSON/CSV report; returns the path of report.html."""
    import jinja2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_dict(result)
    _atomic_write(out / "report.json", json.dumps(data, indent=2, allow_nan=False))
    _atomic_write(out / "methods.csv", result.methods.to_csv(index=False))
    for m, tab in result.cohort_tables.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", m)
        _atomic_write(out / f"cohorts_{safe}.csv", tab.to_csv(index=False))
    show = result.config.privacy.include_speaker_ids
    ex_cols = ["stage", "reason", "count", "unit"] + (["examples"] if show else [])
    _atomic_write(out / "exclusions.csv", pd.DataFrame(
        [x.to_dict(with_examples=show) for x in result.exclusions], columns=ex_cols
    ).to_csv(index=False))
    if result.geo is not None:
        _atomic_write(out / "geo_split_tests.csv",
                      pd.DataFrame([asdict(t) for t in result.geo.tests]).to_csv(index=False))
    if result.geodemographic is not None:
        _atomic_write(out / "geodemographic_candidates.csv",
                      result.geodemographic.candidates.to_csv(index=False))
    if result.config.privacy.include_speaker_ids:
        assign = pd.DataFrame(index=result.stats.table.index)
        if result.geo is not None:
            p = result.geo.partition
            assign["geo"] = np.array(p.labels + ("",))[p.codes]
        if result.embedding is not None:
            p = result.embedding.partition
            assign["embedding"] = np.array(p.labels + ("",))[p.codes]
        if result.geodemographic is not None:
            p = result.geodemographic.partition
            assign["geodemographic"] = np.array(p.labels + ("",))[p.codes]
        _atomic_write(out / "speaker_cohorts.csv", assign.to_csv())

    mcols = ["method", "bottom_cohort", "n_speakers_bottom", "wer_bottom", "wer_rest",
             "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high", "p_value",
             "bottom_share_speakers_pct", "bottom_share_words_pct", "precision", "recall",
             "ari_accent"]
    mnames, mrows = _display(result.methods, [c for c in mcols if c in result.methods.columns])
    pv = result.config.privacy
    privacy = (
        f"Cohorts below {pv.min_cohort_speakers} speakers are pooled or suppressed. "
        + ("Speaker ids were allowed for this report (speaker_cohorts.csv, exact locations)."
           if pv.include_speaker_ids else
           "No speaker id or individual's metadata appears in this report; speaker locations "
           f"are shown aggregated to {pv.location_cell_deg:g}° cells.")
    )
    ov = result.overall
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fairstream.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    html = env.get_template("report.html").render(
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=result.provenance.get("fairstream_version", ""),
        overall={"n_speakers": int(ov["n_speakers"]), "n_utterances": int(ov["n_utterances"]),
                 "ref_words": int(ov["ref_words"]), "wer": _fmt(ov["wer"], pct=True) + " %",
                 "wer_ci_low": _fmt(ov["wer_ci_low"], pct=True),
                 "wer_ci_high": _fmt(ov["wer_ci_high"], pct=True)},
        confidence=f"{100 * result.config.confidence:g} %",
        n_boot=result.provenance.get("n_replicates", 0),
        methods_cols=mnames, methods_rows=mrows,
        paper=any(m in {"geodemo", "embedding"} for m in result.methods["method"]),
        methods_plot=_methods_plot(result.methods),
        definitions=DEFINITIONS,
        sections=_sections(result),
        exclusions=[x.to_dict(with_examples=True) for x in result.exclusions],
        show_examples=pv.include_speaker_ids,
        notes=list(result.notes),
        privacy=privacy,
        provenance=json.dumps(_clean(result.provenance), indent=2),
    )
    _atomic_write(out / "report.html", html)
    return out / "report.html"
