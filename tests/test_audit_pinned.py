"""The audit's numbers on a fixed synthetic input are pinned, and methods are parts.

The pinned values were produced before run_audit became a composition of method objects; a
refactoring that changes any of them changes what reports say.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _audit_fixture import ALL_METHODS, write_fixed_input

from fairstream.audit import (
    AuditConfig,
    AuditInputs,
    AuditMethod,
    Proposal,
    parse_methods,
    register_method,
    run_audit,
)
from fairstream.audit import methods as audit_methods
from fairstream.audit.disaggregate import Partition
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap

# method → (bottom cohort, speakers, WER bottom, WER rest, gap %, gap CI low, gap CI high
#           conditional on the choice, precision, recall, ARI vs accent)
PINNED = {
    "attribute:accent": ("accent_3", 66, 0.41303002166511915, 0.16802414991171613,
                         145.8158674703219, 112.58670332095552, 182.2291256230351,
                         1.0, 1.0, 1.0),
    "attribute:accent+gender": ("accent_3 × female", 40, 0.4345915201654602,
                                0.19542454468760856, 122.3832839729352, 79.1526837276826,
                                164.62378013027566, 1.0, 0.6060606060606061,
                                0.6110064534076662),
    "geo": ("region 0", 90, 0.36911024062674874, 0.15387165208167594, 139.88189873390255,
            105.68605041870092, 175.9080636014768, 0.3, 0.4090909090909091,
            -0.0022878703192474744),
    "geodemo": ("urbanicity in {rural}", 74, 0.3100945076016984, 0.2006818997487738,
                54.52041663443199, 29.312462660158243, 84.63619337303291,
                0.35135135135135137, 0.3939393939393939, -0.0001659838009390459),
    "embedding": ("cluster 1", 66, 0.41303002166511915, 0.16802414991171613,
                  145.8158674703219, 112.58670332095552, 182.2291256230351, 1.0, 1.0, 1.0),
}
COLUMNS = ("bottom_cohort", "n_speakers_bottom", "wer_bottom", "wer_rest", "wer_gap_pct",
           "wer_gap_ci_low_naive", "wer_gap_ci_high_naive", "precision", "recall", "ari_accent")
# method → candidates of its search (the selection-corrected test takes the maximum over them)
N_CANDIDATES = {"attribute:accent": 4, "attribute:accent+gender": 8, "geo": 2, "geodemo": 36,
                "embedding": 4}


@pytest.fixture(scope="module")
def fixed_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixed_input(tmp_path_factory.mktemp("fixed"))


def test_report_numbers_are_pinned(fixed_input: Path, tmp_path: Path) -> None:
    root = fixed_input
    run_audit(root / "results.csv", embeddings=root / "emb.npy",
              embedding_ids=root / "emb_ids.txt", corpus_dir=root, methods=ALL_METHODS,
              out_dir=tmp_path, config=AuditConfig(n_boot=200))
    data = json.loads((tmp_path / "report.json").read_text())
    ov = data["overall"]
    assert (ov["n_speakers"], ov["n_utterances"], ov["ref_words"], ov["errors"]) == (
        240, 2400, 24019, 5619)
    assert ov["wer"] == pytest.approx(0.2339397976601857, rel=1e-12)
    assert ov["wer_ci_low"] == pytest.approx(0.2169706986452628, rel=1e-9)
    assert ov["wer_ci_high"] == pytest.approx(0.25712514733236663, rel=1e-9)
    rows = {r["method"]: r for r in data["methods"]}
    assert list(rows) == list(PINNED)
    for method, expected in PINNED.items():
        got = tuple(rows[method][c] for c in COLUMNS)
        assert got[:2] == expected[:2], method
        assert got[2:] == pytest.approx(expected[2:], rel=1e-9, abs=1e-12), method
        assert rows[method]["p_value_naive"] == pytest.approx(2 / 201), method
        assert rows[method]["n_candidates"] == N_CANDIDATES[method], method
        assert rows[method]["p_value"] >= rows[method]["p_value_naive"], method
        assert rows[method]["wer_gap_ci_low"] <= rows[method]["wer_gap_ci_low_naive"], method
        assert rows[method]["wer_gap_ci_high"] >= rows[method]["wer_gap_ci_high_naive"], method
    accent = [(r["group"], r["wer"]) for r in data["cohorts"]["attribute:accent"]]
    assert [g for g, _ in accent] == ["accent_3", "accent_1", "accent_0", "accent_2"]
    assert accent[1][1] == pytest.approx(0.17210990150336963, rel=1e-12)
    assert data["cohorts"]["geo"][0]["path"] == "lon < -100.012"
    assert len(data["geo_split_tests"]) == 3
    assert data["geodemographic"]["n_candidates"] == 36
    assert data["embedding"]["k"] == 4
    methods_csv = pd.read_csv(tmp_path / "methods.csv")
    assert methods_csv["wer_gap_pct"].tolist() == pytest.approx(
        [v[4] for v in PINNED.values()], rel=1e-12)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return out | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_no_audit_module_imports_the_api_back() -> None:
    """api imports report, methods, result and config; none of them imports api (no cycle)."""
    package = Path(audit_methods.__file__).parent
    for path in package.glob("*.py"):
        if path.name not in {"api.py", "__init__.py"}:
            assert "fairstream.audit.api" not in _imported_modules(path), path.name
    assert "fairstream.audit.report" in _imported_modules(package / "api.py")


class _LastDigit(AuditMethod):
    """A method written for this test: cohorts by the last digit of the speaker id."""

    kind = "lastdigit"
    usage = "lastdigit"
    needs = "speaker ids"

    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        ids = inputs.stats.table.index.astype(str)
        digit = np.array([int(s[-1]) % 2 for s in ids], dtype=np.int64)
        p = Partition(name="lastdigit", codes=digit, labels=("even", "odd"),
                      status=("ok", "ok"))
        return Proposal(partition=p, agreement_codes=digit)


def test_a_new_method_is_one_registered_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_methods, "_REGISTRY", dict(audit_methods._REGISTRY))
    with pytest.raises(InputDataError, match="or embedding$"):
        parse_methods("lastdigit")
    register_method(_LastDigit)
    assert parse_methods("lastdigit,geo") == ("lastdigit", "geo")
    d = make_synthetic_audit(n_speakers=60, seed=1)
    r = run_audit(d.results, speakers=d.speakers, config=AuditConfig(n_boot=20))
    # registered methods join the default selection when their inputs exist
    assert "lastdigit" in r.provenance["methods"]
    row = r.methods.set_index("method").loc["lastdigit"]
    assert row["bottom_cohort"] in {"even", "odd"}
    assert row["n_speakers_bottom"] == 30
    assert set(r.cohort_tables["lastdigit"]["group"]) == {"even", "odd"}
