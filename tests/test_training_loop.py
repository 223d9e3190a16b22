"""The training loop: exact resume, NaN skipping, budget stop, checkpoints, DDP, hooks.

Most tests use the tiny regression model of tests/_fake_training.py so that they check the
loop itself; the transducer tests at the end run it on the real model and data pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _fake_training import (
    OPTIM,
    RUN_CONFIG,
    SCHEDULE,
    CountingHook,
    Interrupted,
    KillAt,
    run,
    step_losses,
)

from fairstream.checkpoint import list_checkpoints, load_checkpoint
from fairstream.errors import CheckpointError, TrainingError
from fairstream.training.loop import lr_factor

TESTS = Path(__file__).parent
FAKE = TESTS / "_fake_training.py"


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


# ----------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 1, 1 / 3),
        ("constant", 3, 1.0),
        ("constant", 50, 1.0),
        ("noam", 12, 0.5),  # sqrt(3/12)
        ("cosine", 3, 1.0),
        ("cosine", 23, 0.05),  # end of decay_steps=20 -> min_lr_ratio
        ("cosine", 500, 0.05),
        ("cosine", 13, 0.525),  # half-way: (1 + 0.05) / 2
        ("exponential", 23, 0.5),  # one half-life of 20 steps after warm-up
        ("exponential", 10_000, 0.05),  # floored
    ],
)
def test_lr_factor_follows_the_named_schedule(schedule, step, expected):
    optim = replace(OPTIM, schedule=schedule, warmup_steps=3, decay_steps=20, min_lr_ratio=0.05)
    assert lr_factor(step, optim) == pytest.approx(expected)


# ----------------------------------------------------------------------- pinned losses

# Per-step losses of the fake set-up as the loop computed them before it was split into named
# steps (release 0.1.0): the restructured loop must reproduce them.
PINNED_LOSSES = {
    1: 2.4894371032714844, 2: 5.564236164093018, 3: 5.176808834075928, 4: 1.5245473384857178,
    5: 7.290884494781494, 6: 4.368968486785889, 7: 1.8093791007995605, 8: 1.6875839233398438,
    9: 0.669546902179718, 10: 2.8145296573638916, 11: 1.0287667512893677, 12: 2.148895263671875,
}
# The same with an extra loss term from a hook and a NaN batch (index 2) in every epoch.
PINNED_HOOK_LOSSES = {
    1: 2.4958345890045166, 2: 5.571514129638672, 3: None, 4: 1.5368508100509644,
    5: 8.474833488464355, 6: 4.257575988769531, 7: 3.0966010093688965, 8: 1.8895305395126343,
    9: 1.2211976051330566, 10: None, 11: 2.122220039367676, 12: 3.4013538360595703,
}
# The tiny transducer's first three steps (SpecAugment and dropout on), also from 0.1.0.
PINNED_TRANSDUCER_LOSSES = {1: 449.3177795410156, 2: 257.0962829589844, 3: 180.24444580078125}


def test_the_loop_reproduces_the_pinned_losses(tmp_path):
    run(tmp_path / "plain")
    assert step_losses(tmp_path / "plain") == pytest.approx(PINNED_LOSSES, rel=1e-6)
    run(tmp_path / "hook", hooks=(CountingHook(),), nan_batches=frozenset({2}))
    got = step_losses(tmp_path / "hook")
    assert [k for k, v in got.items() if v is None] == [3, 10]
    assert {k: v for k, v in got.items() if v is not None} == pytest.approx(
        {k: v for k, v in PINNED_HOOK_LOSSES.items() if v is not None}, rel=1e-6
    )


def test_compute_loss_sums_the_objective_and_the_hook_terms():
    from _fake_training import FakeData, FakeModel, fake_objective

    from fairstream.training.loop import compute_loss

    torch.manual_seed(0)
    model = FakeModel().eval()
    batch = FakeData().make(0, 0)
    hook = CountingHook(weight=0.5)
    terms = compute_loss(fake_objective, model, batch, {"counting": hook})
    assert set(terms.extra) == {"counting"}
    expected = fake_objective(model, batch).loss + hook.extra_loss(model, batch)
    assert torch.allclose(terms.total, expected)
    assert compute_loss(fake_objective, model, batch, {}).total.item() == pytest.approx(
        terms.objective.loss.item())


def test_the_loop_does_not_import_the_transducer_glue():
    code = ("import sys, fairstream.training.loop as loop; "
            "assert 'fairstream.training.transducer' not in sys.modules; "
            "assert not hasattr(loop, 'train') and not hasattr(loop, '__getattr__')")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


# ----------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    ("crash_at", "resume_from"),
    [(6, "step-00000005.pt"),  # mid-epoch checkpoint: resumes inside epoch 0
     (9, "step-00000007.pt")],  # end-of-epoch checkpoint: resumes at the start of epoch 1
)
def test_resume_after_crash_reproduces_uninterrupted_losses(tmp_path, crash_at, resume_from):
    """Crash after ``crash_at`` steps, resume: steps 1..12 equal an uninterrupted run."""
    ref_result, ref_model = run(tmp_path / "ref", hooks=(CountingHook(),))
    ref = step_losses(tmp_path / "ref")
    assert sorted(ref) == list(range(1, 13))
    assert ref_result.epochs == 1  # 7 batches per epoch: the run crosses an epoch boundary

    with pytest.raises(Interrupted):
        run(tmp_path / "b", kill_at=crash_at, hooks=(CountingHook(),))
    assert list_checkpoints(tmp_path / "b" / "checkpoints")[-1].name == resume_from
    hook = CountingHook()
    result, model = run(tmp_path / "b", hooks=(hook,))
    got = step_losses(tmp_path / "b")
    assert result.resumed_from is not None and result.resumed_from.name == resume_from
    assert got == ref  # bit-identical losses, the steps after the checkpoint recomputed
    assert torch.equal(_params(model), _params(ref_model))
    assert hook.seen == 12  # hook state restored from the checkpoint + the steps after it


def test_resume_after_sigkill_reproduces_uninterrupted_losses(tmp_path):
    """The process is killed with SIGKILL mid-run and resumed by a new process."""
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "b"
    run(ref_dir, schedule=replace(SCHEDULE, max_steps=14))
    cmd = [sys.executable, str(FAKE), str(dir_)]
    killed = subprocess.run([*cmd, "--kill-at", "12", "--max-steps", "14"], env=_env(),
                            capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (dir_ / "final.pt").exists()
    assert list_checkpoints(dir_ / "checkpoints")[-1].name == "step-00000010.pt"
    resumed = subprocess.run([*cmd, "--max-steps", "14"], env=_env(), capture_output=True,
                             timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert step_losses(dir_) == step_losses(ref_dir)
    a = load_checkpoint(dir_ / "final.pt").model
    b = load_checkpoint(ref_dir / "final.pt").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_model_config(tmp_path):
    run(tmp_path, schedule=replace(SCHEDULE, max_steps=5))
    other = {**RUN_CONFIG, "model": {"name": "fake", "hidden": 32}}
    with pytest.raises(CheckpointError, match=r"model\.hidden: 16 in checkpoint vs 32"):
        run(tmp_path, schedule=replace(SCHEDULE, max_steps=8), run_config=other)


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path):
    run(tmp_path, schedule=replace(SCHEDULE, max_steps=10))
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step-00000010.pt"
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    result, _ = run(tmp_path, schedule=replace(SCHEDULE, max_steps=12))
    assert result.resumed_from is not None and result.resumed_from.name == "step-00000007.pt"
    assert result.steps == 12


def test_no_resume_starts_over(tmp_path):
    run(tmp_path, schedule=replace(SCHEDULE, max_steps=6))
    result, _ = run(tmp_path, schedule=replace(SCHEDULE, max_steps=4), resume=False)
    assert result.resumed_from is None and result.steps == 4
    assert sorted(step_losses(tmp_path)) == [1, 2, 3, 4]


# ----------------------------------------------------------------------- outputs


def test_checkpoints_kept_final_and_averaged_models_written(tmp_path):
    result, model = run(tmp_path)
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    # every 5 steps + end of epoch 1 (step 7) + the stop (step 12); keep_last_n = 2
    assert [p.name for p in ckpts] == ["step-00000010.pt", "step-00000012.pt"]
    final = load_checkpoint(result.final_checkpoint)
    assert final.optimizer is None and final.config == RUN_CONFIG
    assert torch.equal(torch.cat([v.flatten() for v in final.model.values()]), _params(model))
    avg = load_checkpoint(result.averaged_checkpoint)
    a, b = (load_checkpoint(p).model for p in ckpts)
    for k, v in avg.model.items():
        assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-7)
    assert avg.extra["averaged_from"] == [p.name for p in ckpts]
    assert result.stop_reason == "max_steps" and result.steps == 12
    assert final.progress["stop_reason"] == avg.progress["stop_reason"] == "max_steps"


def test_metrics_log_has_the_documented_fields(tmp_path):
    run(tmp_path, schedule=replace(SCHEDULE, log_interval=4))
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("event") is None]
    assert [r["step"] for r in steps] == [4, 8, 12]
    for r in steps:
        assert {"step", "loss", "lr", "grad_norm", "utt_per_s", "elapsed_s", "mse"} <= set(r)
        assert r["loss"] > 0 and r["utt_per_s"] > 0
    valid = [r for r in records if r.get("event") == "validation"]
    assert valid and all(r["valid_loss"] > 0 for r in valid)
    assert records[-1]["event"] == "stop" and records[-1]["reason"] == "max_steps"


def test_training_reduces_the_loss(tmp_path):
    result, _ = run(tmp_path, schedule=replace(SCHEDULE, max_steps=None, max_epochs=6,
                                               log_interval=7, checkpoint_interval=0))
    losses = step_losses(tmp_path)
    first, last = losses[min(losses)], losses[max(losses)]
    assert result.stop_reason == "max_epochs" and result.steps == 42
    assert last < 0.5 * first


# ----------------------------------------------------------------------- bad batches, budget


def test_nonfinite_batches_are_skipped_and_counted(tmp_path):
    result, model = run(tmp_path, nan_batches=frozenset({2, 3}))
    assert result.skipped_batches == 2 * 2  # batches 2 and 3 of epochs 0 and 1
    assert torch.isfinite(_params(model)).all()
    events = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped_batch"]
    assert [e["step"] for e in skipped] == [3, 4, 10, 11]
    assert skipped[0]["cut_ids"][0] == "e0-b2-u0"


def test_persistent_nan_stops_with_training_error(tmp_path):
    sched = replace(SCHEDULE, max_consecutive_nonfinite=3)
    with pytest.raises(TrainingError, match=r"not finite for 3 batches in a row.*e0-b3-u0"):
        run(tmp_path, schedule=sched, nan_batches=frozenset({1, 2, 3, 4}))


def test_budget_stops_cleanly_and_writes_final_models(tmp_path):
    ticks = iter(range(0, 10_000, 7))  # every clock reading advances 7 "seconds"

    def clock() -> float:
        return float(next(ticks))

    sched = replace(SCHEDULE, max_steps=None, budget_minutes=1.0, checkpoint_interval=0)
    result, _ = run(tmp_path, schedule=sched, clock=clock)
    assert result.stop_reason == "budget"
    assert 60.0 <= result.elapsed_s < 80.0
    assert 0 < result.steps < 12
    assert load_checkpoint(result.averaged_checkpoint).step == result.steps
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == f"step-{result.steps:08d}.pt"
    # resuming a run whose budget is spent stops at once
    again, _ = run(tmp_path, schedule=sched, clock=clock)
    assert again.steps == result.steps and again.stop_reason == "budget"


def test_a_budget_stop_before_max_steps_is_warned_and_recorded(tmp_path, caplog):
    ticks = iter(range(0, 10_000, 7))

    def clock() -> float:
        return float(next(ticks))

    sched = replace(SCHEDULE, max_steps=1000, budget_minutes=1.0, checkpoint_interval=0)
    with caplog.at_level("WARNING", logger="fairstream.training.loop"):
        result, _ = run(tmp_path, schedule=sched, clock=clock)
    assert result.stop_reason == "budget" and result.steps < 1000
    warned = [r.getMessage() for r in caplog.records if "safety cap" in r.getMessage()]
    assert warned == [f"the wall-clock safety cap (schedule.budget_minutes=1) stopped training "
                      f"at step {result.steps} of schedule.max_steps=1000: this model is "
                      "trained less than the recipe asks"]
    for path in (result.final_checkpoint, result.averaged_checkpoint):
        assert load_checkpoint(path).progress["stop_reason"] == "budget"
    # a step limit reached first is no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="fairstream.training.loop"):
        short, _ = run(tmp_path / "b", schedule=replace(sched, max_steps=3), clock=clock)
    assert short.stop_reason == "max_steps"
    assert not [r for r in caplog.records if "safety cap" in r.getMessage()]


# ----------------------------------------------------------------------- DDP


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_train_in_lockstep_and_resume_exactly(tmp_path):
    """torchrun, 2 ranks: same weights on both ranks; a SIGKILL + resume changes nothing."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")

    def launch(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(FAKE), str(out),
               "--max-steps", "8", *extra]
        return subprocess.run(cmd, env=_env(), capture_output=True, timeout=120, check=False)

    proc = launch(tmp_path / "ref")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    # 7 batches over 2 ranks (4 + 3): the shorter shard ends each epoch for both ranks
    assert summary == {"world_size": 2, "steps": 8, "epochs": 2,
                       "params_equal_across_ranks": True, "stop_reason": "max_steps"}
    assert load_checkpoint(tmp_path / "ref" / "final.pt").progress["world_size"] == 2
    assert sorted(step_losses(tmp_path / "ref")) == list(range(1, 9))

    killed = launch(tmp_path / "b", "--kill-at", "6")  # after the step-5 checkpoint, mid-epoch
    assert killed.returncode != 0
    assert list_checkpoints(tmp_path / "b" / "checkpoints")[-1].name == "step-00000005.pt"
    proc = launch(tmp_path / "b")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert step_losses(tmp_path / "b") == step_losses(tmp_path / "ref")
    a = load_checkpoint(tmp_path / "b" / "final.pt").model
    b = load_checkpoint(tmp_path / "ref" / "final.pt").model
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------- transducer end to end


def _transducer_config(corpus, *extra):
    from _tiny_asr import tiny_config

    # SpecAugment and dropout on: both must replay identically after a resume
    return tiny_config(corpus, "spec_augment.num_freq_masks=2", "spec_augment.time_warp=5",
                       "model.encoder.kwargs.dropout=0.2", "model.predictor.dropout=0.2",
                       "schedule.checkpoint_interval=3", "schedule.max_steps=6", *extra)


def test_transducer_resume_after_crash_is_exact(tmp_path, tiny_corpus):
    from fairstream.training.transducer import train

    corpus = tiny_corpus
    ref = train(_transducer_config(corpus), out_dir=tmp_path / "ref", progress=False)
    assert ref.steps == 6 and ref.stop_reason == "max_steps"
    with pytest.raises(Interrupted):
        train(_transducer_config(corpus), out_dir=tmp_path / "b", progress=False,
              hooks=(KillAt(5, hard=False),))
    resumed = train(_transducer_config(corpus), out_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-00000003.pt"
    assert step_losses(tmp_path / "b") == step_losses(tmp_path / "ref")
    # the checkpoint is self-contained: tokenizer files and CMVN travel with it
    ck = load_checkpoint(resumed.averaged_checkpoint)
    assert {"tokenizer.json"} <= set(ck.extra["tokenizer_files"])
    assert ck.extra["cmvn_mean"].shape == (80,)
    # another architecture in the same directory is refused, naming the key
    with pytest.raises(CheckpointError, match=r"model\.encoder\.kwargs\.hidden_dim: 64"):
        train(_transducer_config(corpus, "model.encoder.kwargs.hidden_dim=32",
                                 "schedule.max_steps=8"), out_dir=tmp_path / "b", progress=False)


def test_transducer_reproduces_the_pinned_losses(tmp_path, tiny_corpus):
    from fairstream.training.transducer import train

    config = _transducer_config(tiny_corpus, "schedule.max_steps=3",
                                "schedule.checkpoint_interval=10")
    train(config, out_dir=tmp_path, progress=False)
    assert step_losses(tmp_path) == pytest.approx(PINNED_TRANSDUCER_LOSSES, rel=1e-4)


def test_train_cli_init_reuses_the_checkpoint_and_selects_speakers(tmp_path, tiny_corpus,
                                                                   tmp_path_factory, caplog):
    from _tiny_asr import TINY_OVERRIDES, tiny_trained_model
    from click.testing import CliRunner

    from fairstream.checkpoint import save_checkpoint
    from fairstream.cli import main
    from fairstream.data.corpus import load_corpus
    from fairstream.training.config import load_config

    base = load_checkpoint(tiny_trained_model(tiny_corpus, tmp_path_factory) / "final.pt")
    # a base model whose CMVN differs from the corpus's: the fine-tuned model must keep it
    shifted = base.extra | {"cmvn_mean": base.extra["cmvn_mean"] + 1.0}
    init = save_checkpoint(tmp_path / "base.pt", config=base.config, model=base.model,
                           progress=base.progress, extra=shifted, kind=base.kind)
    speakers = load_corpus(tiny_corpus).speakers
    accent = speakers[speakers.split == "train"].accent.iloc[0]
    recipe = TESTS.parent / "recipes" / "lstm_transducer.yaml"
    out = tmp_path / "exp"
    args = ["train", "--config", str(recipe), "--corpus", str(tiny_corpus), "--out", str(out),
            "--init", str(init), "--max-steps", "2", "--no-progress"]
    for o in TINY_OVERRIDES:
        if not o.startswith("tokenizer."):  # the recipe's bpe tokenizer gives way to init's
            args += ["--set", o]
    subsampling = base.config["model"]["encoder"]["kwargs"]["subsampling"]
    args += ["--set", "optim.lr=0", "--set", f"data.select.where=accent == '{accent}'",
             "--set", "data.select.oversample=2", "--set", "schedule.valid_wer_utterances=0",
             "--set", "data.feature_cache=null",
             "--set", f"model.encoder.kwargs.subsampling={subsampling}"]
    with caplog.at_level("INFO", logger="fairstream"):
        res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert any("taken 2 times" in r.getMessage() for r in caplog.records)  # data.select
    assert any(r.getMessage().startswith(f"init from {init}") for r in caplog.records)
    resolved = load_config(out / "config.yaml")
    assert resolved.init == str(init) and resolved.tokenizer.kind == "char"
    assert resolved.data.select.oversample == 2
    final = load_checkpoint(out / "final.pt")
    assert final.extra["tokenizer_files"].keys() == base.extra["tokenizer_files"].keys()
    for name, data in base.extra["tokenizer_files"].items():
        assert torch.equal(final.extra["tokenizer_files"][name], data)
    assert torch.equal(final.extra["cmvn_mean"], shifted["cmvn_mean"])
    # lr 0: the weights are still the checkpoint's after two steps
    assert [k for k, v in base.model.items() if not torch.equal(final.model[k], v)] == []
    bad = CliRunner().invoke(main, [*args, "--set", "data.select.where=accnt == 'x'",
                                          "--no-resume"])
    assert bad.exit_code != 0 and "unknown column 'accnt'" in bad.output


def test_train_cli_with_the_default_recipe(tmp_path, tiny_corpus):
    from _tiny_asr import TINY_OVERRIDES
    from click.testing import CliRunner

    from fairstream.cli import main
    from fairstream.training.config import load_config

    corpus = tiny_corpus
    recipe = TESTS.parent / "recipes" / "lstm_transducer.yaml"
    out = tmp_path / "exp"
    args = ["train", "--config", str(recipe), "--corpus", str(corpus), "--out", str(out),
            "--max-steps", "2", "--no-progress", "--budget-minutes", "5",
            "--set", f"data.feature_cache={tmp_path / 'features'}"]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    threads = torch.get_num_threads()
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "stopped (max_steps) after 2 steps" in res.output
    assert torch.get_num_threads() == threads  # the recipe's `threads: 1` is undone afterwards
    resolved = load_config(out / "config.yaml")
    assert resolved.model.vocab_size == 39 and resolved.schedule.budget_minutes == 5.0
    assert resolved.data.corpus == str(corpus)
    assert (out / "averaged.pt").is_file() and (out / "tokenizer").is_dir()
    assert any((tmp_path / "features").glob("cuts_*.jsonl.gz"))  # the feature cache
    bad = CliRunner().invoke(main, [*args, "--set", "optim.lrr=1"])
    assert bad.exit_code != 0 and "optim.lrr" in bad.output


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_transducer_smoke(tmp_path, tiny_corpus):
    from _tiny_asr import TINY_OVERRIDES

    corpus = tiny_corpus
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fairstream", "train",
           "--config", str(TESTS.parent / "recipes" / "lstm_transducer.yaml"),
           "--corpus", str(corpus), "--out", str(tmp_path / "exp"), "--max-steps", "3",
           "--no-progress", "--set", f"data.feature_cache={tmp_path / 'features'}"]
    for o in TINY_OVERRIDES:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout.decode().count("stopped (max_steps) after 3 steps") == 1  # rank 0 only
    ck = load_checkpoint(tmp_path / "exp" / "final.pt")
    assert ck.progress["world_size"] == 2 and ck.step == 3
    assert sorted(step_losses(tmp_path / "exp")) == [1, 2, 3]
    assert any((tmp_path / "features").glob("cuts_*.jsonl.gz"))
