"""benchmarks/mitigation.py end to end on the tiny corpus: dev selection, test runs, fields."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
from _tiny_asr import tiny_trained_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mitigation.py"

FIELDS = {
    "method", "seed", "cohort", "bottom_wer_before", "bottom_wer_after", "bottom_diff",
    "bottom_diff_ci", "overall_before", "overall_after", "overall_diff_ci", "variance_before",
    "variance_after", "gap_before", "gap_after", "forgetting_max",
}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mitigation", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_mitigation"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_chooses_on_dev_runs_on_test_and_writes_the_contract(
        tiny_corpus: Path, tmp_path_factory, tmp_path: Path) -> None:
    exp = tiny_trained_model(tiny_corpus, tmp_path_factory)
    spk = pd.read_csv(tiny_corpus / "speakers.csv")
    train = spk[spk["split"] == "train"]["gender"].value_counts()
    gender = str(train.index[0])  # the tiny corpus has both genders in every split
    doc = {"version": 1, "methods": [{
        "method": "attribute:gender", "bottom": gender,
        "evidence": {"p_value": 0.01, "wer_gap_ci_low": 3.0},
        "cohorts": [{"label": str(a), "bottom": a == gender, "wer": 0.3, "n_speakers": 3,
                     "definition": {"kind": "attribute", "values": {"gender": str(a)}}}
                    for a in sorted(spk["gender"].unique())]}]}
    cohorts = tmp_path / "cohorts.json"
    cohorts.write_text(json.dumps(doc))
    out = tmp_path / "mitigation.json"
    bench = _script()
    args = ["--checkpoint", str(exp / "averaged.pt"), "--corpus", str(tiny_corpus),
            "--cohorts", str(cohorts), "--methods", "finetune,ewc", "--seeds", "0",
            "--steps", "2", "--lrs", "1e-4,3e-4", "--lambdas", "0.1,1", "--bootstrap", "20",
            "--fisher-batches", "2", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    # dev: both learning rates with finetune, then both λ of ewc at the chosen rate
    sel = data["selection"]
    assert sorted((s["method"], s["lr"], s["lam"]) for s in sel) == sorted(
        [("finetune", 1e-4, None), ("finetune", 3e-4, None)]
        + [("ewc", data["settings"]["lr_chosen"], lam) for lam in (0.1, 1.0)])
    assert data["settings"]["lambda_chosen"]["ewc"] in (0.1, 1.0)
    rows = data["methods"]
    assert sorted(r["method"] for r in rows) == ["ewc", "finetune"]
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["cohort"] == f"attribute:gender={gender}"
        assert r["bottom_diff"] == r["bottom_wer_after"] - r["bottom_wer_before"]
        assert 0.0 <= r["overall_before"] <= 5.0 and len(r["overall_diff_ci"]) == 2
    assert out.with_suffix(".png").stat().st_size > 0
    # resumed: nothing to run again, the file is unchanged
    before = out.read_text()
    assert bench.main(args) == 0
    assert json.loads(out.read_text())["methods"] == json.loads(before)["methods"]
