"""benchmarks/encoders.py on the tiny corpus: two tiny encoders, one seed, three steps."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "encoders.py"
ONNX_SCRIPT = SCRIPT.with_name("encoders_onnx.py")

FIELDS = {
    "encoder", "size", "seed", "params", "steps", "train_s", "flops_per_audio_s",
    "rtf_1thread", "algorithmic_latency_ms", "greedy_wer", "greedy_wer_ci", "recipe_wer",
    "paired_diff_vs_lstm", "paired_diff_vs_lstm_ci",
}

COMMON = (
    "tokenizer.kind=char",
    "data.max_duration=20",
    "data.max_valid_utterances=4",
    "data.feature_cache=null",  # the corpus fixture is shared: write nothing into it
    "model.predictor.embed_dim=32",
    "model.predictor.dropout=0.0",
    "model.joiner.joint_dim=64",
    "optim.warmup_steps=1",
    "schedule.log_interval=1",
    "schedule.average_last_n=1",
    "schedule.valid_wer_utterances=0",
    "spec_augment=null",
    "decode.beam=2",
    "decode.lm_order=3",
)
PER_ENCODER = {
    "lstm": ("model.encoder.kwargs.hidden_dim=48", "model.encoder.kwargs.output_dim=48",
             "model.encoder.kwargs.num_layers=1", "model.encoder.kwargs.conv_channels=8",
             "model.encoder.kwargs.dropout=0.0"),
    "contextnet": ("model.encoder.kwargs.channels=32", "model.encoder.kwargs.num_blocks=3",
                   "model.encoder.kwargs.layers_per_block=1",
                   "model.encoder.kwargs.output_dim=48", "model.encoder.kwargs.dropout=0.0"),
}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load(SCRIPT, "bench_encoders")


def test_encoder_benchmark_fields_pairing_and_resume(
    bench: ModuleType, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "encoders.json"
    settings = bench.BenchSettings(
        corpus=tiny_corpus, encoders=("contextnet", "lstm"), seeds=(0,), steps=3, out=out,
        workdir=tmp_path / "work", overrides=COMMON, encoder_overrides=PER_ENCODER,
        rtf_seconds=2.0, rtf_runs=1, bootstrap=200, progress=False,
    )
    messages: list[str] = []
    bench.run_benchmark(settings, echo=messages.append)

    data = json.loads(out.read_text())
    runs = {r["encoder"]: r for r in data["runs"]}
    assert set(runs) == {"lstm", "contextnet"}
    for run in runs.values():
        assert FIELDS <= set(run), FIELDS - set(run)
        assert run["size"] == "demo" and run["seed"] == 0 and run["steps"] == 3
        assert run["params"] > 0 and run["train_s"] > 0
        assert run["flops_per_audio_s"] > 0
        assert run["model_flops_per_audio_s"] > run["flops_per_audio_s"]
        assert run["rtf_1thread"] > 0 and run["rtf_mode"] == "streaming"
        assert run["algorithmic_latency_ms"] == 80.0  # (1 + 0) x 8 x 10 ms
        low, high = run["greedy_wer_ci"]
        assert low <= run["greedy_wer"] <= high
        assert isinstance(run["recipe_wer"], float)
    assert runs["lstm"]["paired_diff_vs_lstm"] is None
    assert runs["lstm"]["paired_diff_vs_lstm_ci"] is None
    diff = runs["contextnet"]["paired_diff_vs_lstm"]
    assert isinstance(diff, float)
    assert diff == pytest.approx(runs["contextnet"]["greedy_wer"] - runs["lstm"]["greedy_wer"])
    low, high = runs["contextnet"]["paired_diff_vs_lstm_ci"]
    assert low <= diff <= high
    # the LSTM reference ran first although listed second
    assert messages[0].startswith("[1/2] lstm")

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(bench, "run_one", must_not_run)
    before = out.read_text()
    skipped: list[str] = []
    resumed = bench.BenchSettings(**{**settings.__dict__, "resume": True})
    bench.run_benchmark(resumed, echo=skipped.append)
    assert out.read_text() == before
    assert len(skipped) == 2 and all("skipped" in m for m in skipped)

    # runs written before the held-out slot rates existed: the backfill decodes again, must
    # find the stored per-utterance errors, and adds the fields without touching the others
    monkeypatch.undo()
    stripped = json.loads(before)
    for r in stripped["runs"]:
        for key in ("greedy_heldout_slot_er", "recipe_heldout_slot_er", "heldout_slot_words"):
            del r[key]
    out.write_text(json.dumps(stripped))
    filled = {r["encoder"]: r for r in bench.backfill_heldout(settings, echo=skipped.append)}
    for name, run in runs.items():
        assert filled[name] == run  # the tiny corpus holds no slot values out: null rates
    stored = (tmp_path / "work" / "lstm-demo-seed0" / "test_utterances.csv").read_text()
    assert stored.splitlines()[0].split(",") == [
        "utt_id", "speaker_id", "n_ref_words", "ref", "greedy", "greedy_hyp", "recipe",
        "recipe_hyp"]

    bench.plot(data["runs"], tmp_path / "encoders.png")
    assert (tmp_path / "encoders.png").stat().st_size > 1000
    table = bench.format_table(data["runs"])
    assert "contextnet" in table and "lstm" in table
    summary = bench.format_summary(data["runs"]).splitlines()
    assert len(summary) == 4 and summary[2].startswith("| lstm | demo | 0 |")
    assert "seed 0: " in summary[3] and summary[3].startswith("| contextnet |")

    # the same trained runs streamed in PyTorch and in their ONNX export, side by side
    onnx_bench = _load(ONNX_SCRIPT, "bench_encoders_onnx")
    onnx_out = tmp_path / "encoders_onnx.json"
    rows = [onnx_bench.measure_one(tiny_corpus, tmp_path / "work" / f"{enc}-demo-seed0", enc,
                                   "demo", 0, 160, 2.0, 1, 6, echo=skipped.append)
            for enc in ("lstm", "contextnet")]
    onnx_bench.merge_rows(onnx_out, rows, {"rtf": "test"})
    stored_rows = json.loads(onnx_out.read_text())["runs"]
    assert [(r["encoder"], r["seed"]) for r in stored_rows] == [("lstm", 0), ("contextnet", 0)]
    for row in stored_rows:
        assert row["onnx_refused"] is None
        assert row["rtf_1thread_pytorch"] > 0 and row["rtf_1thread_onnxruntime"] > 0
        assert row["speedup"] == pytest.approx(
            row["rtf_1thread_pytorch"] / row["rtf_1thread_onnxruntime"])
        assert row["agreement_utterances"] == 6
        assert row["transcripts_equal"] == 1.0  # the export is a faithful copy
        assert row["wer_pytorch"] == row["wer_onnxruntime"]
    assert "| contextnet | demo | 0 |" in onnx_bench.format_table(stored_rows)
    with pytest.raises(SystemExit, match="no trained lstm \\(demo, seed 1\\)"):
        onnx_bench.measure_one(tiny_corpus, tmp_path / "work" / "lstm-demo-seed1", "lstm", "demo",
                               1, 160, 2.0, 1, 1)
    with pytest.raises(SystemExit, match="nothing to measure: no run of lstm at seeds 5"):
        onnx_bench.main(["--corpus", str(tiny_corpus), "--encoders", "lstm", "--seeds", "5",
                         "--results", str(out), "--out", str(onnx_out)])


def test_unknown_encoder_is_named(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="convrnn-t"):
        bench.recipe_path("convrnn-t", "demo")
    with pytest.raises(ValueError, match="8m recipe for conformer"):
        bench.recipe_path("conformer", "8m")
    assert bench.recipe_path("lstm", "8m").name == "lstm_transducer_8m.yaml"


def test_latency_from_declared_lookahead(bench: ModuleType) -> None:
    from fairstream.models.encoders.conformer import algorithmic_latency_ms

    class Declared:
        subsampling = 8
        right_context = 3  # a Conformer with 4-frame chunks, no lookahead

    assert bench.algorithmic_latency_ms(Declared()) == algorithmic_latency_ms(4, 0, 8)


def test_lstm_flops_are_counted(bench: ModuleType) -> None:
    """The flop counter sees no nn.LSTM matmul on CPU; the benchmark adds 2 x 4H(I + H) a
    frame and layer, once."""
    import torch

    lstm = torch.nn.LSTM(20, 16, num_layers=2, batch_first=True)
    proj = torch.nn.Linear(16, 4)
    model = torch.nn.Sequential()
    model.add_module("lstm", lstm)
    x = torch.randn(3, 10, 20)
    got = bench.count_flops(model, lambda: proj(lstm(x)[0]))
    want = 2 * 30 * 4 * 16 * ((20 + 16) + (16 + 16)) + 2 * 30 * 16 * 4
    assert got == want


def test_cost_only_measures_untrained_models(
    bench: ModuleType, tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "encoders_cost.json"
    settings = bench.BenchSettings(
        corpus=tiny_corpus, encoders=("lstm", "contextnet"), seeds=(0,), steps=0, out=out,
        overrides=COMMON, encoder_overrides=PER_ENCODER, rtf_seconds=2.0, rtf_runs=1,
        progress=False,
    )
    bench.run_costs(settings, train_steps=1, nproc=1, echo=lambda _: None)

    data = json.loads(out.read_text())
    assert data["benchmark"] == "encoders_cost"
    assert len(data["machine"]["load_average_before"]) == 3
    runs = {r["encoder"]: r for r in data["runs"]}
    assert set(runs) == {"lstm", "contextnet"}
    for run in runs.values():
        assert run["trained"] is False and "greedy_wer" not in run
        assert 0 < run["encoder_params"] < run["params"]
        assert run["model_flops_per_audio_s"] > run["flops_per_audio_s"] > 0
        assert run["train_steps_timed"] == 1 and run["train_s_per_step"] > 0
        assert run["train_batch_s"] == 20.0  # data.max_duration over one process
        assert 0 < run["encoder_rtf_1thread"] < run["rtf_1thread_greedy_untrained"]
        assert run["algorithmic_latency_ms"] == 80.0
    table = bench.format_cost_table(data["runs"])
    assert "| lstm |" in table and "(1.00x)" in table


def test_dev_curves_come_from_the_training_logs(bench: ModuleType, tmp_path: Path) -> None:
    run_dir = tmp_path / "lstm-demo-seed0"
    run_dir.mkdir()
    events = [
        {"step": 20, "loss": 100.0},
        {"step": 148, "event": "validation", "valid_loss": 90.0, "valid_wer": 0.9},
        {"step": 296, "event": "validation", "valid_loss": 80.0, "valid_wer": 0.5},
        {"step": 300, "event": "validation", "valid_loss": 79.0},  # WER off: skipped
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    run = {"encoder": "lstm", "seed": 0, "run_dir": str(run_dir)}
    assert bench.dev_curve(run) == [(148, 0.9), (296, 0.5)]
    missing = {"encoder": "convrnnt", "seed": 0, "run_dir": str(tmp_path / "elsewhere")}
    assert bench.dev_curve(missing) == []
    assert bench.plot_curves([missing], tmp_path / "none.png") is None
    png = bench.plot_curves([run, missing], tmp_path / "curves.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_heldout_rates_per_search(bench: ModuleType, tmp_path: Path) -> None:
    import pandas as pd

    (tmp_path / "heldout_slots.json").write_text(json.dumps(
        {"slots": {"first_name": ["susan", "mary ann"]}}))
    df = pd.DataFrame({
        "ref": ["call susan now", "play mary ann songs", "no slot here"],
        "greedy_hyp": ["call susan now", "play mary and songs", "no slot"],
        "recipe_hyp": ["call suzan now", "play mary ann songs", "no slot here"],
    })
    rates = bench.heldout_rates(df, tmp_path)
    assert rates["heldout_slot_words"] == 3
    assert rates["greedy_heldout_slot_er"] == pytest.approx(1 / 3)  # "ann" missed
    assert rates["recipe_heldout_slot_er"] == pytest.approx(1 / 3)  # "susan" missed
    assert bench.heldout_rates(df.drop(columns="recipe_hyp"), tmp_path)[
        "recipe_heldout_slot_er"] is None
    assert bench.heldout_rates(df, tmp_path / "elsewhere") == {
        "greedy_heldout_slot_er": None, "recipe_heldout_slot_er": None, "heldout_slot_words": 0}


def test_runs_written_side_by_side_are_all_kept(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "encoders.json"
    a = {"encoder": "convrnnt", "size": "demo", "seed": 0, "steps": 5, "run_dir": "x"}
    b = {"encoder": "contextnet", "size": "demo", "seed": 1, "steps": 5, "run_dir": "y"}
    bench.merge_run(out, a, 10)
    runs = bench.merge_run(out, b, 10)  # a second process that never read ``a``
    assert [r["encoder"] for r in runs] == ["convrnnt", "contextnet"]
    again = bench.merge_run(out, {**a, "greedy_wer": 0.5}, 10)
    assert [r.get("greedy_wer") for r in again] == [None, 0.5]  # replaced, not duplicated


def test_ablations_are_paired_with_the_full_convrnnt(bench: ModuleType, tmp_path: Path) -> None:
    import pandas as pd

    def run(encoder: str, errors: list[int]) -> dict[str, object]:
        run_dir = tmp_path / encoder
        run_dir.mkdir()
        pd.DataFrame({"utt_id": ["a1", "a2", "b1", "b2"], "speaker_id": ["a", "a", "b", "b"],
                      "n_ref_words": [5, 5, 5, 5], "greedy": errors}).to_csv(
            run_dir / "test_utterances.csv", index=False)
        return {"encoder": encoder, "size": "demo", "seed": 0, "steps": 5,
                "run_dir": str(run_dir)}

    runs = [run("lstm", [1, 1, 1, 1]), run("convrnnt", [2, 2, 1, 1]),
            run("convrnnt-no-global", [2, 2, 3, 3])]
    bench.add_paired_differences(runs, 50)
    ablation = runs[2]
    assert ablation["paired_diff_vs_convrnnt"] == pytest.approx((10 - 6) / 20)
    low, high = ablation["paired_diff_vs_convrnnt_ci"]
    assert low <= ablation["paired_diff_vs_convrnnt"] <= high
    assert ablation["paired_diff_vs_lstm"] == pytest.approx((10 - 4) / 20)
    assert "paired_diff_vs_convrnnt" not in runs[1]
    out = tmp_path / "encoders.json"
    for r in runs:
        del r["paired_diff_vs_lstm"]
    out.write_text(json.dumps({"benchmark": "encoders", "runs": runs}))
    again = bench.merge_run(out, None, 50)  # --recompute-pairs
    assert again[2]["paired_diff_vs_convrnnt"] == pytest.approx(0.2)
    assert json.loads(out.read_text())["runs"][1]["paired_diff_vs_lstm"] == pytest.approx(0.1)
