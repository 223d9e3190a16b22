"""report.html says what report.json says: the summary's sentences carry its numbers, columns
have human labels, withheld numbers show as "—" and are not drawn."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _audit_fixture import ALL_METHODS, write_fixed_input

from fairstream.audit import AuditConfig, AuditResult, run_audit
from fairstream.audit.html import (
    COLUMNS,
    format_p,
    format_value,
    interval_digits,
    method_title,
    render_html,
    summary_sentences,
)
from fairstream.audit.plots import wer_bars
from fairstream.audit.synthetic import make_synthetic_audit


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _summary(page: str) -> list[str]:
    found = re.search(r'<div class="summary">(.*?)</div>', page, re.S)
    assert found, "report.html has no summary"
    return [_text(li) for li in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)]


def _tables(page: str) -> dict[str, list[list[str]]]:
    """Caption → rows of cell texts (header row first)."""
    out = {}
    for body in re.findall(r"<table>(.*?)</table>", page, re.S):
        caption = _text(re.search(r"<caption>(.*?)</caption>", body, re.S).group(1))
        rows = [[_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
                for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
        out[caption] = rows
    return out


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, dict[str, Any]]:
    """The fixed synthetic input audited with every method, and its report.json."""
    root = write_fixed_input(tmp_path_factory.mktemp("html_input"))
    out = tmp_path_factory.mktemp("html_report")
    result = run_audit(root / "results.csv", embeddings=root / "emb.npy",
                       embedding_ids=root / "emb_ids.txt", corpus_dir=root,
                       methods=ALL_METHODS, out_dir=out, config=AuditConfig(n_boot=200))
    return result, json.loads((out / "report.json").read_text())


def _render(result: AuditResult, data: dict[str, Any]) -> str:
    tables = {"methods.csv": pd.DataFrame(data["methods"])}
    return render_html(data, tables, result)


def test_rounding_follows_the_interval() -> None:
    assert interval_digits(7.7, 92.2) == 0  # width 84.5: two significant digits
    assert interval_digits(8.98, 11.18) == 1
    assert interval_digits(0.10, 0.15) == 3
    assert interval_digits(None, 3.0) == 1 and interval_digits(2.0, 2.0, default=2) == 2
    assert format_p(0.00995) == "0.010" and format_p(0.3217) == "0.32"
    assert format_p(0.0004) == "< 0.001" and format_p(None) == "—"
    assert format_p(float("nan")) == "—"
    assert format_value(0.23394, "rate", 1) == "23.4"
    assert format_value(-0.0023, "score") == "0.00"
    assert format_value(24019.0, "count") == "24,019"
    assert format_value(None, "pct") == "—"
    assert method_title("attribute:accent+age_band") == "Accent × age band"
    assert method_title("geodemo") == "Geodemographic partition"


def test_summary_sentences_carry_the_numbers(audit: tuple[AuditResult, dict[str, Any]]
                                            ) -> None:
    result, data = audit
    page = (result.out_dir / "report.html").read_text()
    summary = _summary(page)
    assert page.index('id="summary"') < page.index('id="methods"') < page.index('id="details"')
    rows = data["methods"]
    assert len(summary) == len(rows) + 1  # one per method, then privacy
    for sentence, row in zip(summary, rows):
        assert sentence.startswith(method_title(row["method"]) + ":"), sentence
        if row["bottom_cohort"].startswith("(none"):
            assert "no cohort stands out" in sentence, sentence
            continue
        assert f"{row['bottom_cohort']} is served worst" in sentence
        d = interval_digits(row["wer_gap_ci_low"], row["wer_gap_ci_high"])
        gap = (f"{row['wer_gap_pct']:.{d}f} % [{row['wer_gap_ci_low']:.{d}f}, "
               f"{row['wer_gap_ci_high']:.{d}f}]")
        assert gap in sentence, (gap, sentence)
        assert f"p = {format_p(row['p_value'])}" in sentence
        assert f"It covers {row['n_speakers_bottom']} speakers" in sentence
        assert f"{row['bottom_share_words_pct']:.1f} % of reference words" in sentence
        if "n_candidates" in row and row["n_candidates"] > 1:
            assert f"worst of {row['n_candidates']} candidates" in sentence
        naive = format_p(row.get("p_value_naive"))
        conditional = f"conditional on this choice: p = {naive}"
        assert (conditional in sentence) == (naive not in ("—", format_p(row["p_value"])))
        assert f"{100 * row['precision']:.0f} % are planted" in sentence
    privacy = summary[-1]
    assert privacy.startswith("Privacy: cohorts with fewer than 10 speakers")
    assert "No speaker id" in privacy
    # the methods table: one row per method, gap and interval in one cell
    table = _tables(page)["Methods side by side"]
    head = table[0]
    assert "WER gap (%) [95 % interval]" in head
    gap_col = head.index("WER gap (%) [95 % interval]")
    first = rows[0]
    d = interval_digits(first["wer_gap_ci_low"], first["wer_gap_ci_high"])
    assert table[1][gap_col] == (f"{first['wer_gap_pct']:.{d}f} [{first['wer_gap_ci_low']:.{d}f},"
                                 f" {first['wer_gap_ci_high']:.{d}f}]")
    assert len(table) == len(rows) + 1


def test_no_raw_column_name_is_shown(audit: tuple[AuditResult, dict[str, Any]]) -> None:
    result, data = audit
    page = (result.out_dir / "report.html").read_text()
    readable = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)  # provenance: JSON as recorded
    readable = re.sub(r"<code>.*?</code>", "", readable, flags=re.S)  # file and method names
    columns = set(data["methods"][0])
    for records in data["cohorts"].values():
        columns |= {c for r in records for c in r}
    columns |= {c for p in result.out_dir.glob("*.csv") for c in pd.read_csv(p, nrows=0)}
    raw = [c for c in columns if "_" in c and re.search(rf"\b{re.escape(c)}\b", readable)]
    assert raw == []
    for table in _tables(page).values():
        assert not [h for h in table[0] if "_" in h], table[0]
    assert "wer_gap_ci_low" in columns  # the check saw the interval columns


def test_withheld_numbers_show_as_dash_and_are_not_drawn(
        audit: tuple[AuditResult, dict[str, Any]]) -> None:
    result, published = audit
    data = copy.deepcopy(published)
    row = data["methods"][0]
    for k in ("wer_bottom", "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high", "p_value",
              "p_value_naive", "wer_gap_ci_low_naive", "wer_gap_ci_high_naive"):
        row[k] = None
    row["bottom_cohort"] = "(suppressed: below the minimum size)"
    cohort = data["cohorts"]["attribute:accent"][1]
    shown = format_value(cohort["wer"], "rate",
                         interval_digits(100 * cohort["wer_ci_low"], 100 * cohort["wer_ci_high"]))
    before = _tables(_render(result, published))["Cohorts: Accent"]
    assert any(r[_col_index(before, "wer")].startswith(shown + " [") for r in before[1:])
    for k in ("wer", "wer_ci_low", "wer_ci_high", "gap_pct", "gap_ci_low", "gap_ci_high"):
        cohort[k] = None
    page = _render(result, data)
    first = _summary(page)[0]
    assert "fewer than 10 speakers, so its numbers are suppressed" in first
    methods = _tables(page)["Methods side by side"]
    gap_col = methods[0].index("WER gap (%) [95 % interval]")
    assert methods[1][1] == "(suppressed: below the minimum size)"
    assert methods[1][gap_col] == "—"
    accent = _tables(page)["Cohorts: Accent"]
    withheld = accent[2]
    assert withheld[0] == cohort["group"]
    assert withheld[_col_index(accent, "wer")] == "—"
    assert withheld[_col_index(accent, "gap_pct")] == "—"
    # the plot of the published table does not draw the withheld WER: it is the plot of the
    # table without that row
    table = pd.DataFrame(data["cohorts"]["attribute:accent"])
    without = table.drop(index=1).reset_index(drop=True)
    assert wer_bars(table, "t", 0.2) == wer_bars(without, "t", 0.2)


def test_the_privacy_record_is_summarized(audit: tuple[AuditResult, dict[str, Any]]) -> None:
    """With report.json's privacy record (complementary suppression), the summary counts what
    was withheld, a withheld bottom cohort's gap reads as withheld, and the details state the
    rule and the reasons, never the names of the suppressed groups."""
    result, published = audit
    data = copy.deepcopy(published)
    reason = "complementary: it would let a set of fewer than 10 speakers be derived"
    data["privacy"] = {"min_cohort_speakers": 10, "rule": "No set of fewer than 10 speakers.",
                       "complementary": True, "primary_suppressed": ["cohort secret_name"],
                       "secondary_suppressed": [{"cell": "cohort a", "reason": reason},
                                                {"cell": "cohort b", "reason": reason}]}
    data["cohorts"]["attribute:accent"][3]["status"] = "suppressed (complementary)"
    row = data["methods"][1]
    row["wer_gap_pct"] = row["wer_gap_ci_low"] = row["wer_gap_ci_high"] = None
    sentences = [_text(s) for s in summary_sentences(data)]
    assert "its WER gap is withheld for privacy" in sentences[1]
    assert row["bottom_cohort"] + " is served worst" in sentences[1]
    privacy = sentences[-1]
    assert "1 cohort was withheld so that no smaller group can be derived" in privacy
    assert "2 further published number sets were withheld" in privacy
    page = _render(result, data)
    assert "No set of fewer than 10 speakers." in page
    assert f"2 number sets withheld: {reason}" in page
    assert "secret_name" not in page


def _col_index(table: list[list[str]], column: str) -> int:
    """Index of ``column``'s cell in a rendered table's rows."""
    label = COLUMNS[column].label.replace("[interval]", "[95 % interval]")
    return table[0].index(label)


def test_summary_without_the_new_fields_or_planted_data(
        audit: tuple[AuditResult, dict[str, Any]]) -> None:
    """Rows without selection-corrected fields read as plain intervals; without planted
    cohorts there is no recovery sentence."""
    result, published = audit
    assert "Precision (planted)" in _tables(_render(result, published))["Methods side by side"][0]
    data = copy.deepcopy(published)
    for row in data["methods"]:
        for k in ("p_value_naive", "wer_gap_ci_low_naive", "wer_gap_ci_high_naive",
                  "n_candidates", "inference"):
            row.pop(k, None)
        row.update(precision=None, recall=None, ari_accent=None)
    sentences = [_text(s) for s in summary_sentences(data)]
    for s, row in zip(sentences, data["methods"]):
        assert "(95 % interval)" in s, s
        assert "corrected" not in s and "conditional on this choice" not in s
        assert "planted" not in s
        assert f"p = {format_p(row['p_value'])}: significant at α = 0.05" in s
    head = _tables(_render(result, data))["Methods side by side"][0]
    assert not {"Precision (planted)", "Recall (planted)", "ARI vs accent"} & set(head)
    assert not [h for h in head if "conditional on this choice" in h]


def test_small_cohorts_and_no_bottom_cohort(tmp_path: Path) -> None:
    """A suppressed cohort's row shows "suppressed" and dashes; a method that finds no
    cohort says so."""
    d = make_synthetic_audit(n_speakers=60, n_accents=2, n_planted_accents=1, seed=1)
    spk = d.speakers.copy()
    spk.loc[:4, "accent"] = "rare"  # 5 speakers: below the minimum cohort size
    r = run_audit(d.results, speakers=spk, methods="attribute:accent,geo", out_dir=tmp_path,
                  config=AuditConfig(n_boot=50))
    page = (tmp_path / "report.html").read_text()
    accent = _tables(page)["Cohorts: Accent"]
    suppressed = [row for row in accent[1:] if row[1] == "suppressed"]
    assert len(suppressed) == 1
    assert "rare" not in page
    assert suppressed[0][_col_index(accent, "wer")] == "—"
    summary = _summary(page)
    assert "1 cohort was suppressed" in summary[-1]
    geo = r.methods.set_index("method").loc["geo", "bottom_cohort"]
    assert geo.startswith("(none")
    assert summary[1] == "Geographic tree: no cohort stands out (no split found)."
    assert np.isfinite(r.overall["wer"])


def test_print_stylesheet_and_scroll_boxes(audit: tuple[AuditResult, dict[str, Any]]) -> None:
    result, _ = audit
    page = (result.out_dir / "report.html").read_text()
    assert "@media print" in page and "size: A4 landscape" in page
    assert page.count('<div class="tablebox">') == page.count("<table>")
    assert ".tablebox { overflow-x: auto;" in page
    assert "http://" not in page and "https://" not in page  # opens offline
