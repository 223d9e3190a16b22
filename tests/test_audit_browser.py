"""report.html read as a reader would: rendered by headless Chromium, the page must fit the
window and no table may stick out of its box unless that box scrolls.

A copy of the report gets a script that opens every collapsed section (as a reader would),
measures the laid-out page and writes the result into the DOM; Chromium's ``--dump-dom``
returns it. Printing is checked the same way, with
the rules of the report's ``@media print`` block applied to the screen at the width of a
landscape A4 page: on paper nothing can scroll, so there no table may overflow at all.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _audit_fixture import ALL_METHODS, write_fixed_input

from fairstream.audit import AuditConfig, run_audit

# Landscape A4 minus 12 mm margins on each side, at 96 px per inch: 273 mm ≈ 1031 px.
PRINT_WIDTH = 1030

_MEASURE = r"""
<pre id="fs-measure"></pre>
<script>
function fsApplyPrintRules() {
  for (const sheet of Array.from(document.styleSheets)) {
    for (const rule of Array.from(sheet.cssRules)) {
      if (rule.media && Array.from(rule.media).includes("print")) {
        for (const inner of Array.from(rule.cssRules)) {
          if (!inner.selectorText) continue;  // @page and the like
          sheet.insertRule(inner.cssText, sheet.cssRules.length);
        }
      }
    }
  }
}
function fsScrollBox(el) {
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    const o = getComputedStyle(a).overflowX;
    if (o === "auto" || o === "scroll") return a;
  }
  return null;
}
function fsMeasure() {
  if (FS_PRINT) fsApplyPrintRules();
  for (const d of document.querySelectorAll("details")) d.open = true;  // a reader opens them
  const view = document.documentElement.clientWidth;
  const tables = [];
  for (const t of document.querySelectorAll("table")) {
    const box = t.parentElement;
    const width = t.getBoundingClientRect().width;
    const room = box.clientWidth;
    const scroller = fsScrollBox(t);
    const sb = scroller ? scroller.getBoundingClientRect() : null;
    tables.push({
      caption: (t.caption ? t.caption.textContent
                : Array.from(t.rows[0] ? t.rows[0].cells : []).map(c => c.textContent)
                    .join(" | ")).trim().slice(0, 80),
      width: Math.round(width), room: room,
      overflows: width > room + 1,
      scroll_box_fits: sb !== null && sb.left >= -1 && sb.right <= view + 1,
    });
  }
  document.getElementById("fs-measure").textContent = JSON.stringify({
    view: view, page: document.documentElement.scrollWidth, tables: tables,
    print_rules: FS_PRINT,
  });
}
window.addEventListener("load", fsMeasure);
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium or chromium-browser on PATH: install Debian's chromium: "
                "apt-get install chromium")


def measure(report: Path, width: int, tmp: Path, *, print_rules: bool = False
            ) -> dict[str, Any]:  # Any: the JSON the page wrote
    """Lay ``report`` out in headless Chromium at ``width`` px and return its measurements."""
    page = report.read_text(encoding="utf-8")
    script = _MEASURE.replace("FS_PRINT", "true" if print_rules else "false")
    assert "</body>" in page, f"{report} has no </body>"
    probe = tmp / f"measure_{width}_{int(print_rules)}.html"
    probe.write_text(page.replace("</body>", script + "</body>", 1), encoding="utf-8")
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="fs-measure">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1), (
        f"chromium wrote no measurement for {probe} (exit {proc.returncode}): "
        f"{proc.stderr[-2000:]}")
    return json.loads(html.unescape(found.group(1)))


def problems(m: dict[str, Any], *, scroll_allowed: bool = True) -> list[str]:  # Any: as above
    """What a reader would see wrong in the measurements ``m`` (empty: nothing)."""
    out = []
    if m["page"] > m["view"]:
        out.append(f"page is {m['page']} px wide in a {m['view']} px window")
    for t in m["tables"]:
        if not t["overflows"]:
            continue
        if scroll_allowed and t["scroll_box_fits"]:
            continue
        out.append(f"table {t['caption']!r} is {t['width']} px wide in a {t['room']} px box"
                   + ("" if scroll_allowed else " (printed: nothing scrolls)"))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real audit report of the fixed synthetic input with every method."""
    root = write_fixed_input(tmp_path_factory.mktemp("browser_input"))
    out = tmp_path_factory.mktemp("browser_report")
    run_audit(root / "results.csv", embeddings=root / "emb.npy",
              embedding_ids=root / "emb_ids.txt", corpus_dir=root, methods=ALL_METHODS,
              out_dir=out, config=AuditConfig(n_boot=200))
    return out / "report.html"


@pytest.mark.parametrize("width", [1300, 800])
def test_report_fits_the_window(report: Path, tmp_path: Path, width: int) -> None:
    m = measure(report, width, tmp_path)
    assert len(m["tables"]) >= 6, m  # the methods table and one cohort table per method
    found = problems(m)
    assert not found, "\n".join(found)


def test_report_fits_a_printed_page(report: Path, tmp_path: Path) -> None:
    m = measure(report, PRINT_WIDTH, tmp_path, print_rules=True)
    assert m["print_rules"] is True
    assert len(m["tables"]) >= 6, m
    found = problems(m, scroll_allowed=False)
    assert not found, "\n".join(found)


def test_the_check_sees_an_overflowing_table(tmp_path: Path) -> None:
    """The measurement itself: a wide table outside a scroll box is caught, inside one it is
    not."""
    cells = "".join(f"<td>column_{i}_with_a_long_name</td>" for i in range(30))
    page = tmp_path / "wide.html"
    page.write_text(f"<html><body><table><tr>{cells}</tr></table>"
                    f"<div style='overflow-x:auto'><table><tr>{cells}</tr></table></div>"
                    "</body></html>")
    m = measure(page, 1300, tmp_path)
    found = problems(m)
    assert len(found) == 2, found  # the page is too wide, and the first table
    assert found[0].startswith("page is") and "in a 1300 px window" in found[0]
    assert [t["scroll_box_fits"] for t in m["tables"]] == [False, True]
