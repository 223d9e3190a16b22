"""`fairstream mt train|decode|score` on sessions mixed from the tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny_asr import tiny_config, tiny_trained_model
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.data.mixing import MixConfig, mix_corpus
from fairstream.errors import CheckpointError, InputDataError


@pytest.fixture(scope="module")
def mixed(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix")
    mix_corpus(tiny_corpus, out, MixConfig(sessions=(("train", 6), ("dev", 2), ("test", 3)),
                                           max_turns=3))
    return out


@pytest.fixture(scope="module")
def mt_exp(tiny_corpus: Path, mixed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fairstream.multitalker.train import train_multitalker

    base = tiny_trained_model(tiny_corpus, tmp_path_factory)
    out = tmp_path_factory.mktemp("mt")
    config = tiny_config(tiny_corpus, "schedule.max_steps=3", "data.max_duration=40")
    result = train_multitalker(config, mixed, out, init=base / "averaged.pt", channels=2,
                               separator_dim=16, eot_weight=1.0, progress=False)
    assert result.steps == 3 and result.stop_reason == "max_steps"
    return out


def _invoke(args: list[object]):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _random_weights(mt_exp: Path, path: Path) -> Path:
    """The trained checkpoint with fresh random weights: a model that emits tokens (and
    turn tokens) everywhere, which is what decoding plumbing needs."""
    import torch

    from fairstream.checkpoint import load_checkpoint, save_checkpoint
    from fairstream.multitalker.train import load_multitalker

    ck = load_checkpoint(mt_exp / "averaged.pt")
    model = load_multitalker(mt_exp / "averaged.pt").model
    torch.manual_seed(5)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return save_checkpoint(path, config=ck.config, model=model.state_dict(), extra=ck.extra,
                           kind=ck.kind)


def test_decode_offline_and_streaming_agree_and_score(mt_exp: Path, mixed: Path,
                                                      tiny_corpus: Path, tmp_path: Path
                                                      ) -> None:
    ckpt = _random_weights(mt_exp, tmp_path / "random.pt")
    off = _invoke(["mt", "decode", "--checkpoint", ckpt, "--mix", mixed, "--out",
                   tmp_path / "off.json", "--no-progress"])
    on = _invoke(["mt", "decode", "--checkpoint", ckpt, "--mix", mixed, "--out",
                  tmp_path / "on.json", "--stream", "--chunk-ms", "80", "--no-progress"])
    assert off.exit_code == 0 and on.exit_code == 0, off.output + on.output
    hyp = json.loads((tmp_path / "off.json").read_text())
    assert hyp == json.loads((tmp_path / "on.json").read_text())
    assert {h["speaker"] for h in hyp} <= {"ch0", "ch1"}
    assert sum(bool(h["words"]) for h in hyp) >= 2  # random weights: turns on both channels
    res = _invoke(["mt", "score", "--ref", mixed / "test.seglst.json", "--hyp",
                   tmp_path / "off.json", "--out", tmp_path / "scores.json",
                   "--results", tmp_path / "rows.parquet", "--speakers",
                   tiny_corpus / "speakers.csv"])
    assert res.exit_code == 0, res.output
    # the audit's rows: one per session and reference speaker, errors of the cpWER assignment
    from fairstream.metrics.multitalker import cp_wer, read_seglst
    from fairstream.results import read_results

    rows, _ = read_results(tmp_path / "rows.parquet")
    ref_segs = read_seglst(mixed / "test.seglst.json")
    assert len(rows) == len({(s.session_id, s.speaker) for s in ref_segs})
    cp = cp_wer(ref_segs, read_seglst(tmp_path / "off.json"))
    for row in rows.to_dict("records"):
        session, speaker = row["utt_id"].split("/")
        errors = row["sub"] + row["del"] + row["ins"]
        assert (errors, row["n_ref_words"]) == cp.speaker_errors[(session, speaker)]
    assert rows["accent"].notna().all()  # speaker metadata joined
    aud = _invoke(["audit", "--results", tmp_path / "rows.parquet", "--methods",
                   "attribute:accent", "--min-cohort", "1", "--n-boot", "50", "--out",
                   tmp_path / "audit", "--no-progress"])
    assert aud.exit_code == 0, aud.output  # the audit reads the multi-talker rows
    assert any((tmp_path / "audit").iterdir())
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["sessions"] == 3 and 0 <= scores["turn_count_acc"] <= 1
    assert scores["orc_wer"] <= scores["cpwer"] + 1e-12  # ORC never charges more than cp

    # meeteval reads our hypothesis and agrees on cpWER
    from meeteval.io.seglst import SegLST
    from meeteval.wer import cp_word_error_rate_multifile

    ref = SegLST.load(mixed / "test.seglst.json")
    theirs = cp_word_error_rate_multifile(ref, SegLST.load(tmp_path / "off.json"))
    errors = sum(e.errors for e in theirs.values())
    length = sum(e.length for e in theirs.values())
    assert scores["cpwer"] == pytest.approx(errors / length)
    # and meeteval's own command runs on our files with the same cpWER and ORC-WER
    import shutil
    import subprocess
    import sys

    tool = Path(sys.executable).parent / "meeteval-wer"
    shutil.copy(mixed / "test.seglst.json", tmp_path / "ref.json")
    for metric, key in (("cpwer", "cpwer"), ("orcwer", "orc_wer")):
        subprocess.run([str(tool), metric, "-r", "ref.json", "-h", "off.json"], cwd=tmp_path,
                       check=True, capture_output=True)
        theirs = json.loads((tmp_path / f"off_{metric}.json").read_text())
        assert scores[key] == pytest.approx(theirs["error_rate"]), metric


def test_unknown_sessions_and_bad_checkpoints_are_named(mt_exp: Path, mixed: Path,
                                                        tiny_corpus: Path,
                                                        tmp_path_factory, tmp_path: Path
                                                        ) -> None:
    from fairstream.multitalker.train import load_multitalker

    extra = [{"session_id": "nope", "speaker": "ch0", "start_time": 0.0, "end_time": 1.0,
              "words": "a"}]
    (tmp_path / "h.json").write_text(json.dumps(extra))
    res = _invoke(["mt", "score", "--ref", mixed / "test.seglst.json", "--hyp",
                   tmp_path / "h.json"])
    assert res.exit_code != 0 and "session(s) the reference does not have: nope" in res.output
    res = _invoke(["mt", "score", "--ref", mixed / "test.seglst.json", "--hyp",
                   tmp_path / "h.json", "--on-error", "skip"])
    assert res.exit_code == 0 and "excluded 1 hypothesis session" in res.output
    with pytest.raises(CheckpointError, match="not a multi-talker checkpoint"):
        load_multitalker(tiny_trained_model(tiny_corpus, tmp_path_factory) / "averaged.pt")
    bad = json.loads((mixed / "test.seglst.json").read_text())
    bad[0]["end_time"] = 1e4
    broken = tmp_path / "mix"
    broken.mkdir()
    (broken / "test.seglst.json").write_text(json.dumps(bad))
    (broken / "audio").symlink_to(mixed / "audio")
    from fairstream.multitalker.train import load_sessions

    with pytest.raises(InputDataError, match="lies outside the recording"):
        load_sessions(broken, "test")
