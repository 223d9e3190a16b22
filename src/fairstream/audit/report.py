"""Audit report: offline HTML with embedded PNG plots, report.json and CSV tables.

Files written to ``out_dir`` (each atomically):

* ``report.html`` — opens offline (plots are base64 PNGs): the summary first, then the methods
  side by side and the details (:mod:`fairstream.audit.html`), drawn from the published data;
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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text as _atomic_write
from fairstream.audit.html import render_html
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


def write_report(result: AuditResult, out_dir: str | Path) -> Path:
    """Write the HTML/JSON/CSV report; returns the path of report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_dict(result)
    _atomic_write(out / "report.json", json.dumps(data, indent=2, allow_nan=False))
    tables: dict[str, pd.DataFrame] = {"methods.csv": result.methods}
    for m, outcome in result.outcomes.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", m)
        tables[f"cohorts_{safe}.csv"] = outcome.table
        tables.update(outcome.method.report_tables(outcome))
    show = result.config.privacy.include_speaker_ids
    ex_cols = ["stage", "reason", "count", "unit"] + (["examples"] if show else [])
    tables["exclusions.csv"] = pd.DataFrame(
        [x.to_dict(with_examples=show) for x in result.exclusions], columns=ex_cols)
    for name, table in tables.items():
        _atomic_write(out / name, table.to_csv(index=False))
    if result.config.privacy.include_speaker_ids:
        assign = pd.DataFrame(index=result.stats.table.index)
        for outcome in result.outcomes.values():
            column = outcome.method.speaker_column
            if column is not None:
                p = outcome.partition
                assign[column] = np.array(p.labels + ("",))[p.codes]
        _atomic_write(out / "speaker_cohorts.csv", assign.to_csv())
        tables["speaker_cohorts.csv"] = assign
    _atomic_write(out / "report.html", render_html(data, tables, result))
    return out / "report.html"
