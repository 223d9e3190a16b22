"""Audit report: offline HTML with embedded PNG plots, report.json and CSV tables.

Files written to ``out_dir`` (each atomically):

* ``report.html`` — opens offline (plots are base64 PNGs): the summary first, then the methods
  side by side and the details (:mod:`fairstream.audit.html`), drawn from the published data;
* ``report.json`` — the same numbers, machine-readable (NaN → null);
* ``methods.csv``, ``cohorts_<method>.csv``, ``exclusions.csv`` and the tables a method adds
  (:meth:`~fairstream.audit.AuditMethod.report_tables`: ``geo_split_tests.csv``,
  ``geodemographic_candidates.csv``);
* ``speaker_cohorts.csv`` only when speaker ids are allowed (privacy);
* ``cohorts.json`` — a definition of every reportable cohort that applies to other speakers
  (attribute values, tree boxes, zip predicates, embedding centres;
  :mod:`fairstream.audit.cohorts`), for mitigation on the training speakers.

Everything is assembled first (:func:`~fairstream.audit.publish.published_report`: the JSON
data, every table and the privacy ledger of the sets of speakers they publish), protected once
(:func:`~fairstream.audit.privacy.protect`: primary and complementary suppression, so that no
set below the minimum cohort size can be derived from the report), and only then written;
report.html is drawn from the same protected data and tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairstream._io import atomic_write_text as _atomic_write
from fairstream.audit.cohorts import write_cohorts
from fairstream.audit.html import render_html
from fairstream.audit.publish import published_report
from fairstream.audit.result import AuditResult

__all__ = ["report_dict", "write_report"]


def report_dict(result: AuditResult) -> dict[str, Any]:  # Any: the JSON report
    """Everything in report.json, as published (privacy protection applied; no speaker ids
    unless the privacy config allows them)."""
    return published_report(result).data


def write_report(result: AuditResult, out_dir: str | Path) -> Path:
    """Write the HTML/JSON/CSV report; returns the path of report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pub = published_report(result)
    _atomic_write(out / "report.json", json.dumps(pub.data, indent=2, allow_nan=False))
    for name, table in pub.tables.items():
        _atomic_write(out / name, table.to_csv(index=False))
    _atomic_write(out / "report.html", render_html(pub.data, pub.tables, result))
    write_cohorts(result, out)
    return out / "report.html"
