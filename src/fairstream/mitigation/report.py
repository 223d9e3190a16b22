"""The before/after section a mitigation adds to an audit's ``report.html``.

The section sits between the methods table and the details; a report that already has one
gets it replaced (the markers ``<!-- mitigation -->`` … ``<!-- /mitigation -->``), so running
a mitigation again does not stack sections. The page stays self-contained (the chart is a
base64 PNG).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from fairstream._io import atomic_write_text
from fairstream.errors import InputDataError
from fairstream.mitigation.run import MitigationConfig, MitigationResult

__all__ = ["add_to_report", "mitigation_section"]

_BEGIN, _END = "<!-- mitigation -->", "<!-- /mitigation -->"
_ANCHOR = '<h2 id="details">'


def _pts(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f}"


def _ci(v: list[float] | None) -> str:
    return "" if not v else f" [{_pts(v[0])}, {_pts(v[1])}]"


def _audit_again(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Methods side by side on the measured speakers, before → after."""
    rows = []
    b, a = before.set_index("method"), after.set_index("method")
    for m in b.index:
        cells = []
        for t in (b, a):
            if m not in t.index:
                cells.append("—")
                continue
            r = t.loc[m]
            gap = r.get("wer_gap_pct")
            p = r.get("p_value")
            cells.append(html.escape(str(r.get("bottom_cohort"))) + (
                f" ({gap:+.1f} %, p = {p:.3g})" if pd.notna(gap) and pd.notna(p) else ""))
        rows.append(f"<tr><td><code>{html.escape(str(m))}</code></td><td>{cells[0]}</td>"
                    f"<td>{cells[1]}</td></tr>")
    return ("<div class='tablebox'><table><caption>Audit again on the test speakers: each "
            "method's bottom cohort (WER gap, selection-corrected p) before → after</caption>"
            "<thead><tr><th>method</th><th>before</th><th>after</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def mitigation_section(result: MitigationResult, cfg: MitigationConfig,
                       audit_again: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> str:
    """The HTML fragment: what was done, the per-cohort chart and table, the summary, and
    (``audit_again``: the methods tables of the audit of the measured speakers before and
    after) the audit run again."""
    comp = result.comparison
    s = comp.summary
    c = result.cohort
    p = c.evidence.get("p_value")
    lam = f", λ = {cfg.lam:g}" if cfg.method in ("ewc", "l2sp") else ""
    intro = (
        f"Cohort <b>{html.escape(c.label)}</b>, found by <code>{html.escape(c.method)}</code> "
        f"(selection-corrected p = {p:.3g}) on the audited speakers, mapped onto "
        f"{len(result.train_speakers)} training speakers by its definition. Method "
        f"<code>{cfg.method}</code>{lam}: {cfg.steps} steps from the audited model. "
        f"Measured on the {s['n_speakers']} test speakers ({s['n_utterances']} utterances), "
        "disjoint from the audited ones, so a cohort chosen for being worst cannot improve by "
        "regression to the mean alone. Differences are after − before, in WER points, with "
        "paired speaker-bootstrap 95 % intervals.")
    rows = []
    for r in comp.cohorts.itertuples():
        name = html.escape(str(r.cohort)) + (" <b>(mitigated)</b>" if r.mitigated else "")
        rows.append(f"<tr><td>{name}</td><td class='num'>{r.n_speakers}</td>"
                    f"<td class='num'>{100 * r.wer_before:.2f}</td>"
                    f"<td class='num'>{100 * r.wer_after:.2f}</td>"
                    f"<td class='num'>{_pts(r.diff)} [{_pts(r.diff_ci_low)}, "
                    f"{_pts(r.diff_ci_high)}]</td></tr>")
    items = [
        f"Overall WER {100 * s['overall_before']:.2f} % → {100 * s['overall_after']:.2f} % "
        f"({_pts(s['overall_diff'])}{_ci(s['overall_diff_ci'])}).",
    ]
    if s.get("bottom_before") is not None:
        items.append(f"Mitigated cohort {100 * s['bottom_before']:.2f} % → "
                     f"{100 * s['bottom_after']:.2f} % ({_pts(s['bottom_diff'])}"
                     f"{_ci(s['bottom_diff_ci'])}); its gap to the rest "
                     f"{s['gap_pct_before']:.1f} % → {s['gap_pct_after']:.1f} %.")
    if s.get("variance_before") is not None:
        lo, hi = s["variance_diff_ci"]
        items.append(f"Variance of WER across the cohorts {s['variance_before']:.2e} → "
                     f"{s['variance_after']:.2e} (difference {s['variance_diff']:.2e} "
                     f"[{lo:.2e}, {hi:.2e}]); max cohort WER {100 * s['max_before']:.2f} % → "
                     f"{100 * s['max_after']:.2f} %.")
    if s.get("forgetting_max") is not None:
        items.append(f"Forgetting: the largest WER increase on another cohort is "
                     f"{_pts(s['forgetting_max'])}{_ci(s['forgetting_max_ci'])} points "
                     f"({html.escape(str(s['forgetting_cohort']))}).")
    png = result.out_dir / "comparison.png"
    img = ""
    if png.exists():
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        img = f'<img alt="WER per cohort before and after" src="data:image/png;base64,{b64}">'
    return "\n".join([
        _BEGIN, '<h2 id="mitigation">Mitigation: before and after</h2>', f"<p>{intro}</p>",
        "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>", img,
        "<div class='tablebox'><table><caption>WER per cohort (%), test speakers</caption>"
        "<thead><tr><th>cohort</th><th class='num'>speakers</th><th class='num'>before</th>"
        "<th class='num'>after</th><th class='num'>after − before [95 % CI]</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table></div>",
        _audit_again(*audit_again) if audit_again is not None else "", _END, ""])


def add_to_report(report: str | Path, section: str) -> Path:
    """Put ``section`` into ``report`` (replacing an earlier one), atomically.

    Raises:
        InputDataError: the file is not an audit report.html.
    """
    path = Path(report)
    try:
        page = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputDataError(f"cannot read the report {path}: {exc}") from exc
    if _BEGIN in page and _END in page:
        a, b = page.index(_BEGIN), page.index(_END) + len(_END)
        page = page[:a] + page[b:].lstrip("\n")
    if _ANCHOR not in page:
        raise InputDataError(f"{path} is not an audit report.html (no details heading)")
    i = page.index(_ANCHOR)
    atomic_write_text(path, page[:i] + section + "\n" + page[i:])
    return path
