"""report.html: the answer first, then the methods side by side, then the details.

Layout, top to bottom:

1. **Summary**: one sentence per method, generated from the numbers: the cohort it finds
   served worst, the WER gap with its interval, the p-value, the speakers (and words) the
   cohort covers, the recovery of planted cohorts when the corpus has them; then the privacy
   rule applied and what it suppressed.
2. **Methods side by side**: one row per method with human column labels and units, and the
   WER-gap plot.
3. **Details** (collapsible): each method's text, plots and cohort table; definitions;
   exclusions; privacy; provenance.

Every number shown comes from the report as published (``report.json``'s data after privacy
protection): a cell withheld there shows as "—" here, and plots are drawn from the same
tables. A method's own images (:attr:`~fairstream.audit.ReportSection.images`) are drawn from
the audit in memory, not from the published tables, so they are not embedded; the region map
is drawn here from the published cohort table (speaker locations only when speaker ids are
allowed). Numbers are rounded to what their interval supports (:func:`interval_digits`).
Tables sit in boxes that scroll sideways when the window is narrow, and a print stylesheet
sets them on landscape A4 pages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from fairstream.audit.plots import methods_plot, region_map, wer_bars
from fairstream.audit.result import DEFINITIONS, AuditResult

__all__ = [
    "COLUMNS",
    "Column",
    "format_p",
    "format_value",
    "interval_digits",
    "method_title",
    "render_html",
    "summary_sentences",
]

#: shown in place of a number that is not reported (suppressed or undefined).
MISSING = "—"

#: Any below: report.json data (JSON-like values of any shape) and table cells of any type.
Record = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """How a column of a published table is shown.

    Attributes:
        label: the header, with its unit.
        kind: ``text``; ``count`` (integer); ``rate`` (a fraction, shown in %); ``pct``
            (already in %); ``p`` (a p-value); ``score`` (precision, recall, ARI);
            ``degrees``.
        interval: the columns of the value's interval, shown in the same cell as
            ``value [low, high]``; None: no interval.
        bracket_only: show only ``[low, high]`` (the value is shown in another column).
        share: a column in % shown after the value in the same cell, ``66 (27.5 %)``.
        p_value: a p-value column shown after the value in the same cell, ``…, p = 0.01``.
        optional: left out of a table when no row has a value (recovery without planted
            cohorts).
    """

    label: str
    kind: str
    interval: tuple[str, str] | None = None
    bracket_only: bool = False
    share: str | None = None
    p_value: str | None = None
    optional: bool = False

    @property
    def parts(self) -> tuple[str, ...]:
        """The other columns this column's cell shows."""
        return (*(self.interval or ()), *(c for c in (self.share, self.p_value) if c))


_WER_CI = ("wer_ci_low", "wer_ci_high")
_GAP_CI = ("gap_ci_low", "gap_ci_high")

#: every column report.html shows, by its name in the published tables.
COLUMNS: dict[str, Column] = {
    # cohort tables
    "group": Column("Cohort", "text"),
    "path": Column("Region", "text"),
    "status": Column("Status", "text"),
    "n_speakers": Column("Speakers (share)", "count", share="share_speakers_pct"),
    "n_utterances": Column("Utterances", "count"),
    "ref_words": Column("Reference words", "count"),
    "errors": Column("Errors", "count"),
    "substitutions": Column("Substitutions", "count"),
    "deletions": Column("Deletions", "count"),
    "insertions": Column("Insertions", "count"),
    "wer": Column("WER (%) [interval]", "rate", _WER_CI),
    "wer_rest": Column("WER of the rest (%)", "rate"),
    "difference": Column("WER difference (points)", "rate"),
    "gap_pct": Column("WER gap (%) [interval]", "pct", _GAP_CI),
    "share_speakers_pct": Column("Share of speakers (%)", "pct"),
    "share_words_pct": Column("Share of words (%)", "pct"),
    "lat_min": Column("Latitude from (°)", "degrees"),
    "lat_max": Column("Latitude to (°)", "degrees"),
    "lon_min": Column("Longitude from (°)", "degrees"),
    "lon_max": Column("Longitude to (°)", "degrees"),
    "depth": Column("Depth", "count"),
    # the methods table
    "method": Column("Method", "text"),
    "bottom_cohort": Column("Cohort served worst", "text"),
    "n_speakers_bottom": Column("Speakers (share)", "count",
                                share="bottom_share_speakers_pct"),
    "bottom_share_speakers_pct": Column("Share of speakers (%)", "pct"),
    "bottom_share_words_pct": Column("Share of words (%)", "pct"),
    "wer_bottom": Column("WER of the cohort (%)", "rate"),
    "wer_gap_pct": Column("WER gap (%) [interval]", "pct",
                          ("wer_gap_ci_low", "wer_gap_ci_high")),
    "p_value": Column("p-value", "p"),
    "wer_gap_ci_low_naive": Column("Conditional on this choice: WER-gap interval (%), p",
                                   "pct", ("wer_gap_ci_low_naive", "wer_gap_ci_high_naive"),
                                   bracket_only=True, p_value="p_value_naive"),
    "p_value_naive": Column("p-value conditional on this choice", "p"),
    "n_candidates": Column("Candidate cohorts searched", "count"),
    "precision": Column("Precision (planted)", "score", optional=True),
    "recall": Column("Recall (planted)", "score", optional=True),
    "ari_accent": Column("ARI vs accent", "score", optional=True),
    # exclusions
    "stage": Column("Stage", "text"),
    "reason": Column("Reason", "text"),
    "count": Column("Count", "count"),
    "unit": Column("Unit", "text"),
    "examples": Column("Examples", "text"),
}

#: the methods table's columns, in order (those the published table lacks are skipped).
METHOD_COLUMNS = (
    "method", "bottom_cohort", "n_speakers_bottom", "bottom_share_words_pct", "wer_bottom",
    "wer_rest", "wer_gap_pct", "p_value", "wer_gap_ci_low_naive", "n_candidates", "precision",
    "recall", "ari_accent",
)

_DEFINITION_TITLES = {
    "wer": "Word error rate (WER)",
    "wer_gap": "WER gap",
    "bottom_share": "Bottom-cohort share",
    "bootstrap": "Intervals and p-values",
    "empty_reference": "Empty references",
    "recovery": "Recovery of planted cohorts",
}

_KIND_TITLES = {
    "geo": "Geographic tree",
    "geodemo": "Geodemographic partition",
    "embedding": "Embedding clusters",
}


# ----------------------------------------------------------------------------- numbers


def _number(v: object) -> float | None:
    """``v`` as a finite float, or None (missing, None, NaN, text)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)  # type: ignore[arg-type]  # numbers of any numeric type; text fails
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def interval_digits(low: object, high: object, default: int = 1, most: int = 3) -> int:
    """Decimals that show an interval's width with two significant digits.

    ``[7.7, 92.2]`` (width 84.5) → 0 decimals; ``[8.98, 11.18]`` (width 2.2) → 1; a missing
    or empty interval → ``default``. Never more than ``most``.
    """
    lo, hi = _number(low), _number(high)
    if lo is None or hi is None or hi == lo:
        return default
    return max(0, min(most, 1 - math.floor(math.log10(abs(hi - lo)))))


def format_p(p: object) -> str:
    """A p-value with two significant digits ("< 0.001" below 0.001; "—" if missing)."""
    v = _number(p)
    if v is None:
        return MISSING
    if v < 0.001:
        return "< 0.001"
    r = float(f"{v:.2g}")
    return f"{r:.{max(0, 1 - math.floor(math.log10(r)))}f}"


def format_value(v: object, kind: str, digits: int = 1) -> str:
    """One cell: ``kind`` as in :class:`Column`; rates are fractions shown in %."""
    if kind == "text":
        return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    if kind == "p":
        return format_p(v)
    x = _number(v)
    if x is None:
        return MISSING
    if kind == "count":
        return f"{round(x):,}"
    if kind in ("score", "degrees"):
        digits = 2 if kind == "score" else 1
    text = f"{100 * x if kind == 'rate' else x:.{digits}f}"  # "-0.00" → "0.00" below
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def _scale(kind: str, v: object) -> float | None:
    x = _number(v)
    return None if x is None else (100 * x if kind == "rate" else x)


def _with_interval(rec: Record, column: str, spec: Column, digits: int | None = None) -> str:
    """``value [low, high]`` rounded to the interval's width (or to ``digits``)."""
    assert spec.interval is not None
    lo_c, hi_c = spec.interval
    lo, hi = _scale(spec.kind, rec.get(lo_c)), _scale(spec.kind, rec.get(hi_c))
    d = interval_digits(lo, hi) if digits is None else digits
    bracket = ("" if lo is None or hi is None
               else f"[{format_value(lo, 'pct', d)}, {format_value(hi, 'pct', d)}]")
    if spec.bracket_only:
        return bracket or MISSING
    value = format_value(rec.get(column), spec.kind, d)
    return f"{value} {bracket}" if bracket and value != MISSING else value


def _cell(rec: Record, column: str, spec: Column, rate_digits: int) -> str:
    if spec.interval is not None:
        text = _with_interval(rec, column, spec)
    elif column == "method":
        text = method_title(str(rec.get(column, "")))
    else:
        text = format_value(rec.get(column), spec.kind, rate_digits if spec.kind == "rate" else 1)
    share = _number(rec.get(spec.share)) if spec.share else None
    if share is not None and text != MISSING:
        text += f" ({share:.1f} %)"
    if spec.p_value and _number(rec.get(spec.p_value)) is not None:
        text += f", p = {format_p(rec.get(spec.p_value))}"
    return text


def _label(column: str, confidence: str) -> str:
    spec = COLUMNS.get(column)
    if spec is None:  # a column added by a method: readable, never the raw name
        words = column.replace("_pct", " (%)").replace("_", " ").strip()
        return words[:1].upper() + words[1:]
    return spec.label.replace("[interval]", f"[{confidence} interval]")


def _breakable(text: str) -> Markup:
    """``text`` with line-break opportunities after ``_`` (long cohort names wrap)."""
    return escape(text).replace("_", Markup("_<wbr>"))


# Any: template context of strings
def _table(records: Sequence[Record], columns: Sequence[str], confidence: str,
           rate_digits: int, caption: str) -> dict[str, Any]:
    """A table for the template: human headers, formatted cells, which columns are numbers.

    Columns no record has are left out (optional ones also when no record has a value); a
    rate without its own interval (``wer_rest``) is rounded like the row's WER interval, or to
    ``rate_digits``.
    """
    shown = [c for c in columns if any(
        c in r and (not COLUMNS.get(c, Column("", "")).optional or _number(r[c]) is not None)
        for r in records)]
    inside = {p for c in shown for p in COLUMNS.get(c, Column("", "")).parts if p != c}
    present = [c for c in shown if c not in inside]
    numeric = [COLUMNS.get(c, Column("", "pct")).kind != "text" for c in present]
    rows = []
    for rec in records:
        d = interval_digits(_scale("rate", rec.get(_WER_CI[0])),
                            _scale("rate", rec.get(_WER_CI[1])), default=rate_digits)
        cells = [_cell(rec, c, COLUMNS.get(c, Column("", "pct")), d) for c in present]
        rows.append([c if num else _breakable(c) for c, num in zip(cells, numeric)])
    return {"caption": caption, "head": [_label(c, confidence) for c in present],
            "numeric": numeric, "rows": rows}


# ----------------------------------------------------------------------------- words


def method_title(name: str) -> str:
    """A method's name for readers: ``attribute:accent+gender`` → "Accent × gender"."""
    kind, _, arg = name.partition(":")
    if kind == "attribute" and arg:
        text = " × ".join(a.replace("_", " ") for a in arg.split("+"))
        return text[:1].upper() + text[1:]
    return _KIND_TITLES.get(name, name)


def _pct(v: float, digits: int) -> str:
    return f"{v:.{digits}f} %"


def _is_corrected(row: Record) -> bool:
    """Whether the row's p-value and interval account for the choice of the cohort."""
    return "p_value_naive" in row or "n_candidates" in row


def _held_out(row: Record) -> bool:
    """Whether the row's headline test ran on the held-out half (``--confirm-split``)."""
    return "split" in str(row.get("inference") or "")


def _inference_words(row: Record, level: str) -> str:
    """How the row's interval was obtained, in words."""
    n = _number(row.get("n_candidates"))
    if not _is_corrected(row):
        return f"{level} interval"
    if _held_out(row):
        return (f"{level} interval on the held-out half of the speakers, which took no part in "
                "choosing the cohort")
    if n is not None and n > 1:
        return f"{level} interval, corrected for choosing the worst of {round(n):,} candidates"
    if n == 1:
        return f"{level} interval; a single candidate, so nothing was chosen"
    return f"{level} interval, corrected for the choice of the cohort"


def _p_words(row: Record) -> str:
    n = _number(row.get("n_candidates"))
    if not _is_corrected(row) or n == 1:
        return ""
    return " on the held-out half" if _held_out(row) else " after that correction"


def _method_sentence(row: Record, level: str, alpha: float, min_cohort: int,
                     rate_digits: int) -> Markup:
    name = escape(method_title(str(row.get("method", ""))))
    cohort = str(row.get("bottom_cohort") or "")
    gap = _number(row.get("wer_gap_pct"))
    if cohort.startswith("(none"):
        reason = cohort.strip("()").removeprefix("none").lstrip(": ") or "none found"
        return Markup(f"<b>{name}</b>: no cohort stands out ({escape(reason)}).")
    if gap is None and (cohort.startswith("(suppressed") or not cohort):
        return Markup(f"<b>{name}</b>: the cohort served worst has fewer than {min_cohort} "
                      "speakers, so its numbers are suppressed.")
    parts = [f"<b>{name}</b>: <b>{escape(cohort)}</b> is served worst"]
    wb, wr = _number(row.get("wer_bottom")), _number(row.get("wer_rest"))
    if wb is not None and wr is not None:
        parts.append(f" — WER {_pct(100 * wb, rate_digits)} against "
                     f"{_pct(100 * wr, rate_digits)} for all other speakers")
    if gap is None:
        parts.append(f"; its WER gap is withheld for privacy (fewer than {min_cohort} speakers "
                     "could otherwise be derived from the report).")
    else:
        spec = COLUMNS["wer_gap_pct"]
        cell = _with_interval(row, "wer_gap_pct", spec)
        gap_text = cell.replace(" [", " % [", 1) if "[" in cell else cell + " %"
        sign = "+" if gap > 0 else ""
        parts.append(f", a WER gap of <b>{sign}{escape(gap_text)}</b> "
                     f"({escape(_inference_words(row, level))}).")
    p = _number(row.get("p_value"))
    if p is not None:
        after = _p_words(row)
        verdict = (f"significant at α = {alpha:g}" if p < alpha
                   else f"not significant at α = {alpha:g}")
        parts.append(f" p = {format_p(p)}{after}: {verdict}")
        naive = format_p(row.get("p_value_naive"))
        if _is_corrected(row) and naive not in (MISSING, format_p(p)):
            parts.append(f" (conditional on this choice: p = {naive})")
        parts.append(".")
    n = _number(row.get("n_speakers_bottom"))
    share_s = _number(row.get("bottom_share_speakers_pct"))
    share_w = _number(row.get("bottom_share_words_pct"))
    if n is not None:
        shares = [f"{_pct(s, 1)} of speakers" for s in (share_s,) if s is not None]
        shares += [f"{_pct(w, 1)} of reference words" for w in (share_w,) if w is not None]
        covers = f" ({', '.join(shares)})" if shares else ""
        half = " of the held-out half" if _held_out(row) else ""
        parts.append(f" It covers {round(n):,} speakers{half}{covers}.")
    prec, rec = _number(row.get("precision")), _number(row.get("recall"))
    if prec is not None and rec is not None:
        parts.append(f" Of its speakers {_pct(100 * prec, 0)} are planted (precision), and it "
                     f"holds {_pct(100 * rec, 0)} of the planted speakers (recall).")
    return Markup("".join(parts))


def _status_counts(cohorts: Mapping[str, Sequence[Record]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for records in cohorts.values():
        for r in records:
            s = str(r.get("status", "ok"))
            if s != "ok":
                out[s] = out.get(s, 0) + 1
    return out


_STATUS_WORDS = {
    "merged": "pooled into a merged group",
    "suppressed": "suppressed (below the minimum)",
    "suppressed (complementary)": "withheld so that no smaller group can be derived by "
                                  "subtraction",
}


def _privacy_record(data: Record) -> Record:
    """report.json's ``privacy`` entry (what privacy protection withheld), or empty."""
    record = data.get("privacy")
    return record if isinstance(record, Mapping) else {}


def _withheld_counts(data: Record) -> tuple[int, int] | None:
    """(primary, complementary) suppressions recorded in report.json; None: not recorded."""
    record = _privacy_record(data)
    if "primary_suppressed" not in record and "secondary_suppressed" not in record:
        return None
    return (len(record.get("primary_suppressed") or []),
            len(record.get("secondary_suppressed") or []))


def _privacy_sentence(data: Record, show_ids: bool) -> Markup:
    """The privacy rule applied and what it pooled, suppressed or withheld (counts only: the
    names of suppressed groups are not repeated)."""
    min_cohort = _min_cohort(data)
    counts = _status_counts(data.get("cohorts") or {})
    done = [f"{n} {'cohort was' if n == 1 else 'cohorts were'} {_STATUS_WORDS.get(s, s)}"
            for s, n in sorted(counts.items())]
    withheld = _withheld_counts(data)
    if withheld is not None and withheld[1]:
        n = withheld[1]
        done.append(f"{n} further published {'number set was' if n == 1 else 'number sets were'}"
                    f" withheld so that no group below {min_cohort} speakers can be derived by "
                    "subtracting published numbers")
    what = ("; in this report " + ", and ".join(done) if done
            else "; nothing in this report needed pooling, suppression or withholding")
    ids = ("Speaker ids were allowed for this report (speaker_cohorts.csv)."
           if show_ids else "No speaker id or individual's metadata appears in this report.")
    return Markup(
        f"<b>Privacy</b>: cohorts with fewer than {min_cohort} speakers are never reported on "
        f"their own: they are pooled, and suppressed if still too small (numbers shown as "
        f"{MISSING}; their speakers still count in the rest and the overall){escape(what)}. "
        f"{escape(ids)}")


def _privacy_details(data: Record) -> list[str]:
    """The rule as report.json states it, and why numbers were withheld (reasons counted)."""
    record = _privacy_record(data)
    out = [str(record["rule"])] if record.get("rule") else []
    reasons: dict[str, int] = {}
    for item in record.get("secondary_suppressed") or []:
        why = str(item.get("reason", "")) if isinstance(item, Mapping) else ""
        reasons[why] = reasons.get(why, 0) + 1
    out += [f"{n} number {'set' if n == 1 else 'sets'} withheld: {why}"
            for why, n in reasons.items() if why]
    return out


def _min_cohort(data: Record) -> int:
    for source in (_privacy_record(data), (data.get("config") or {}).get("privacy") or {}):
        n = _number(source.get("min_cohort_speakers"))
        if n is not None:
            return round(n)
    return 0


def _confidence(data: Record) -> float:
    c = _number((data.get("config") or {}).get("confidence"))
    return c if c is not None else 0.95


def summary_sentences(data: Record) -> list[Markup]:
    """The report's opening sentences from report.json's data: one per method (which cohort
    is served worst, by how much, how sure, how many speakers), then the privacy rule."""
    conf = _confidence(data)
    level = f"{100 * conf:g} %"
    overall = data.get("overall") or {}
    digits = interval_digits(_scale("rate", overall.get("wer_ci_low")),
                             _scale("rate", overall.get("wer_ci_high")))
    out = [_method_sentence(row, level, round(1 - conf, 6), _min_cohort(data), digits)
           for row in data.get("methods") or []]
    show_ids = bool(((data.get("config") or {}).get("privacy") or {}).get(
        "include_speaker_ids"))
    out.append(_privacy_sentence(data, show_ids))
    return out


# ----------------------------------------------------------------------------- page


def _overall_line(overall: Record, level: str) -> Markup:
    parts = []
    for key, word in (("n_speakers", "speakers"), ("n_utterances", "utterances"),
                      ("ref_words", "reference words")):
        if _number(overall.get(key)) is not None:
            parts.append(f"<b>{format_value(overall.get(key), 'count')}</b> {word}")
    text = "Audited: " + ", ".join(parts) + "." if parts else ""
    wer = _number(overall.get("wer"))
    if wer is not None:
        spec = COLUMNS["wer"]
        cell = _with_interval(overall, "wer", spec)
        text += f" Overall WER <b>{escape(cell.replace(' [', ' % [', 1))}</b>"
        text += f" ({level} interval)." if "[" in cell else " %."
    return Markup(text)


def _speaker_points(result: AuditResult
                    ) -> tuple[np.ndarray, np.ndarray, float, str] | None:
    """Exact speaker locations for the map, only when speaker ids are allowed."""
    geo, table = result.config.geo, result.stats.table
    if not result.config.privacy.include_speaker_ids or not {geo.lat_col, geo.lon_col} <= set(
            table.columns):
        return None
    lat = pd.to_numeric(table[geo.lat_col], errors="coerce").to_numpy(np.float64)
    lon = pd.to_numeric(table[geo.lon_col], errors="coerce").to_numpy(np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    return lat[ok], lon[ok], 4.0, "speakers"


# Any: template context of strings, tables and images
def _sections(result: AuditResult, data: Record, level: str, digits: int
              ) -> list[dict[str, Any]]:
    """One section per method: its own text, the WER bars (and the region map) drawn from
    the published cohort table, and that table."""
    secs = []
    cohorts = data.get("cohorts") or {}
    rows = {str(r.get("method")): r for r in data.get("methods") or []}
    overall = _number((data.get("overall") or {}).get("wer"))
    for m, outcome in result.outcomes.items():
        records = list(cohorts.get(m) or [])
        published = pd.DataFrame.from_records(records)
        own = outcome.method.report_section(outcome, result.stats, result.config)
        paragraphs = [escape(p) for p in own.paragraphs]
        inference = rows.get(m, {}).get("inference")
        if inference:
            paragraphs.append(escape(f"Inference: {inference}"))
        if any(r.get("status", "ok") != "ok" for r in records):
            paragraphs.append(escape("Groups below the minimum cohort size were pooled "
                                     "(status 'merged') or, if still too small, suppressed."))
        title = method_title(m)
        images = [img for img in (
            wer_bars(published, f"WER per cohort: {title}", overall),
            region_map(published, f"{title}: regions coloured by WER", _speaker_points(result)),
        ) if img]
        secs.append({"title": title, "spec": m, "paragraphs": paragraphs, "images": images,
                     "table": _table(records, list(own.columns), level, digits,
                                     f"Cohorts: {title}")})
    return secs


def render_html(data: dict[str, Any], tables: dict[str, pd.DataFrame],
                result: AuditResult) -> str:
    """report.html from the report as published.

    Args:
        data: report.json's data as published (privacy protection applied; NaN → None).
        tables: the CSV files as published (file name → table); listed in the report.
        result: the audit, for what is not a published number (the methods' text and
            configuration).

    Returns:
        The page (self-contained: CSS inline, plots as base64 PNGs; opens offline).
    """
    import jinja2

    conf = _confidence(data)
    level = f"{100 * conf:g} %"
    overall = data.get("overall") or {}
    digits = interval_digits(_scale("rate", overall.get("wer_ci_low")),
                             _scale("rate", overall.get("wer_ci_high")))
    methods = list(data.get("methods") or [])
    show_ids = bool(result.config.privacy.include_speaker_ids)
    exclusions = [dict(x) for x in data.get("exclusions") or []]
    ex_cols = ["stage", "reason", "count", "unit"] + (["examples"] if show_ids else [])
    for x in exclusions:
        if isinstance(x.get("examples"), list):
            x["examples"] = ", ".join(str(e) for e in x["examples"])
    provenance = data.get("provenance") or {}
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fairstream.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    return env.get_template("report.html").render(
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=provenance.get("fairstream_version", ""),
        overall=_overall_line(overall, level),
        n_boot=provenance.get("n_replicates", ""),
        summary=summary_sentences(data),
        notes=list(data.get("notes") or []),
        methods=_table(methods, METHOD_COLUMNS, level, digits, "Methods side by side"),
        methods_plot=methods_plot(pd.DataFrame.from_records(methods),
                                  [method_title(str(r.get("method", ""))) for r in methods]),
        paper=any(o.method.cites_paper_figures for o in result.outcomes.values()),
        definitions=[(_DEFINITION_TITLES.get(k, k), v)
                     for k, v in (data.get("definitions") or DEFINITIONS).items()],
        sections=_sections(result, data, level, digits),
        exclusions=_table(exclusions, ex_cols, level, digits, "Exclusions")
        if exclusions else None,
        files=sorted(["report.json", *tables]),
        privacy=_privacy_sentence(data, show_ids),
        privacy_details=_privacy_details(data),
        provenance=json.dumps(provenance, indent=2),
    )

