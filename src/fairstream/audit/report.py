"""Audit report: offline HTML with embedded PNG plots, report.json and CSV tables.

Files written to ``out_dir`` (each atomically):

* ``report.html`` — opens offline (plots are base64 PNGs): methods side by side, definitions,
  per-method cohort tables and plots, exclusions, privacy statement, provenance;
* ``report.json`` — the same numbers, machine-readable (NaN → null);
* ``methods.csv``, ``cohorts_<method>.csv``, ``exclusions.csv`` and the tables a method adds
  (:meth:`~fairstream.audit.AuditMethod.report_tables`: ``geo_split_tests.csv``,
  ``geodemographic_candidates.csv``);
* ``speaker_cohorts.csv`` only when speaker ids are allowed (privacy).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text as _atomic_write
from fairstream.audit.plots import methods_plot, wer_bars
from fairstream.audit.result import DEFINITIONS, AuditResult

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
    return _clean(df.to_dict(orient="records"))


def report_dict(result: AuditResult) -> dict[str, Any]:  # Any: the JSON report
    """Everything in report.json (no speaker ids unless the privacy config allows them)."""
    show = result.config.privacy.include_speaker_ids
    d: dict[str, Any] = {  # Any: as above
        "format": "fairstream-audit",
        "version": 1,
        "overall": result.overall,
        "definitions": DEFINITIONS,
        "methods": _records(result.methods),
        "cohorts": {m: _records(o.table) for m, o in result.outcomes.items()},
        "exclusions": [x.to_dict(with_examples=show) for x in result.exclusions],
        "notes": list(result.notes),
        "provenance": result.provenance,
        "config": asdict(result.config),
    }
    for outcome in result.outcomes.values():
        d.update(outcome.method.report_data(outcome))
    return _clean(d)


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


# Any: template context of strings, tables and images
def _sections(result: AuditResult) -> list[dict[str, Any]]:
    """One section per method: its own text and plots, the WER bars and its cohort table."""
    secs = []
    ow = result.overall["wer"]
    for m, outcome in result.outcomes.items():
        tab = outcome.table
        own = outcome.method.report_section(outcome, result.stats, result.config)
        paragraphs, images = list(own.paragraphs), list(own.images)
        img = wer_bars(tab, f"WER per cohort: {m}", ow)
        if img:
            images.insert(0, img)
        names, rows = _display(tab, [c for c in own.columns if c in tab.columns])
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
    methods = result.methods
    _atomic_write(out / "methods.csv", methods.to_csv(index=False))
    for m, outcome in result.outcomes.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", m)
        _atomic_write(out / f"cohorts_{safe}.csv", outcome.table.to_csv(index=False))
        for name, extra in outcome.method.report_tables(outcome).items():
            _atomic_write(out / name, extra.to_csv(index=False))
    show = result.config.privacy.include_speaker_ids
    ex_cols = ["stage", "reason", "count", "unit"] + (["examples"] if show else [])
    _atomic_write(out / "exclusions.csv", pd.DataFrame(
        [x.to_dict(with_examples=show) for x in result.exclusions], columns=ex_cols
    ).to_csv(index=False))
    if result.config.privacy.include_speaker_ids:
        assign = pd.DataFrame(index=result.stats.table.index)
        for outcome in result.outcomes.values():
            column = outcome.method.speaker_column
            if column is not None:
                p = outcome.partition
                assign[column] = np.array(p.labels + ("",))[p.codes]
        _atomic_write(out / "speaker_cohorts.csv", assign.to_csv())

    mcols = ["method", "bottom_cohort", "n_speakers_bottom", "wer_bottom", "wer_rest",
             "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high", "p_value",
             "bottom_share_speakers_pct", "bottom_share_words_pct", "precision", "recall",
             "ari_accent"]
    mnames, mrows = _display(methods, [c for c in mcols if c in methods.columns])
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
        paper=any(o.method.cites_paper_figures for o in result.outcomes.values()),
        methods_plot=methods_plot(methods),
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
