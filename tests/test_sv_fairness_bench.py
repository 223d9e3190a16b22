"""benchmarks/sv_fairness.py on the tiny corpus: four methods, one seed, a few steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fairstream.sv.train import load_extractor, method_name

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sv_fairness.py"

FIELDS = {
    "method", "seed", "eer", "eer_ci", "min_dcf_001", "gender_gap", "accent_std",
    "paired_eer_diff_vs_baseline", "paired_eer_diff_ci", "gender_gap_diff_ci",
    "accent_std_diff_ci",
}
SMALL = ("model.channels=32", "data.speakers_per_batch=8", "data.crop_frames=80",
         "schedule.log_interval=1", "arw.n_clusters=2")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sv_fairness", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_end_to_end(bench: ModuleType, tiny_corpus: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    argv = ["--corpus", str(tiny_corpus), "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "sv_fairness.json"), "--seeds", "0", "--steps", "3",
            "--jobs", "0", "--select-split", "dev", "--eval-split", "test",
            "--crops", "1.0,1.5", "--snrs", "5", "--targets", "3", "--same-gender", "3",
            "--same-accent", "3", "--random", "3", "--n-boot", "20",
            "--min-group-speakers", "2"]
    for s in SMALL:
        argv += ["--set", s]
    try:
        result = bench.main(argv)
    finally:
        torch.set_num_threads(before)
    written = json.loads((tmp_path / "sv_fairness.json").read_text())
    assert written["methods"] == json.loads(json.dumps(result["methods"]))
    rows = written["methods"]
    assert [r["method"] for r in rows] == ["baseline", "balanced_sampling", "inverse_weights",
                                           "arw"]
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert 0.0 <= r["eer"] <= 1.0 and r["seed"] == 0
        assert r["eer_ci"] is None or r["eer_ci"][0] <= r["eer_ci"][1]
        if r["method"] == "baseline":
            assert r["paired_eer_diff_vs_baseline"] is None and r["paired_eer_diff_ci"] is None
            assert r["gender_gap_diff_ci"] is None and r["accent_std_diff_ci"] is None
        else:
            diff = r["eer"] - rows[0]["eer"]
            assert r["paired_eer_diff_vs_baseline"] == pytest.approx(diff, abs=1e-12)
            assert len(r["paired_eer_diff_ci"]) == 2
    setup = written["setup"]
    assert setup["condition"]["crop_seconds"] in (1.0, 1.5)
    assert len(setup["selection"]["grid"]) == 2
    # the ARW override went to the ARW run only; balancing options to their runs only
    cfg = {m: load_extractor(tmp_path / "runs" / f"{m}_s0" / "final.pt").config
           for m in ("baseline", "balanced_sampling", "inverse_weights", "arw")}
    assert {m: method_name(c) for m, c in cfg.items()} == {m: m for m in cfg}
    assert cfg["arw"].arw is not None and cfg["arw"].arw.n_clusters == 2
    assert all(c.schedule.max_steps == 3 and c.seed == 0 for c in cfg.values())

    # resume: every final.pt exists, so nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/final.pt")}
    bench.train_all(bench.parse_args(argv))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
