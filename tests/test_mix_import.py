"""`fairstream corpus import-mix`: real recordings + SegLST/STM reference → a sessions dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.data.mix_import import import_sessions, read_stm
from fairstream.data.mixing import MixConfig, mix_corpus
from fairstream.errors import CorpusError, InputDataError
from fairstream.metrics.multitalker import read_seglst
from fairstream.multitalker.train import load_sessions


def _stm_line(s: dict) -> str:
    return (f"{s['session_id']} 1 {s['speaker']} {s['start_time']:.3f} {s['end_time']:.3f} "
            f"<o,f0,unknown> {s['words'].upper()}")


def test_an_stm_of_a_mixed_split_imports_to_the_same_sessions(tiny_corpus: Path,
                                                              tmp_path: Path) -> None:
    mix_corpus(tiny_corpus, tmp_path / "mix",
               MixConfig(sessions=(("test", 4),), single_speaker_share=0.0, overlap_prob=1.0,
                         seed=1))
    ref = json.loads((tmp_path / "mix" / "test.seglst.json").read_text())
    stm = tmp_path / "ref.stm"
    stm.write_text(";; a comment\n" + "\n".join(_stm_line(s) for s in ref)
                   + "\nextra 1 inter_segment_gap 0 1\n"
                   + f"{ref[0]['session_id']} 1 x 0.0 0.5 ignore_time_segment_in_scoring\n")
    # relative paths, one recording that no reference mentions
    (tmp_path / "wav.scp").write_text("".join(
        f"{s} mix/audio/test/{s}.flac\n" for s in sorted({r['session_id'] for r in ref}))
        + "orphan mix/audio/test/missing.flac\n")
    report = import_sessions(stm, tmp_path / "wav.scp", tmp_path / "imp", split="test")
    assert report.sessions == 4 and report.turns == len(ref)
    assert report.dropped_segments == 2 and report.unreferenced_recordings == ("orphan",)
    key = lambda s: (s.session_id, s.start_time, s.speaker)  # noqa: E731
    assert sorted(read_seglst(tmp_path / "imp" / "test.seglst.json"), key=key) == \
        sorted(read_seglst(tmp_path / "mix" / "test.seglst.json"), key=key)
    a = pd.read_csv(tmp_path / "mix" / "sessions.csv").set_index("session_id")
    b = pd.read_csv(tmp_path / "imp" / "sessions.csv").set_index("session_id")
    np.testing.assert_allclose(b.loc[a.index, "overlap_ratio"], a["overlap_ratio"], atol=0.01)
    assert (b.loc[a.index, "turns"] == a["turns"]).all()
    sessions = load_sessions(tmp_path / "imp", "test")  # what mt train/decode read
    assert [s.session_id for s in sessions] == sorted(a.index)
    assert json.loads((tmp_path / "imp" / "mix.json").read_text())["sessions"] == {"test": 4}


def _session(tmp_path: Path, sid: str, seconds: float = 3.0, rate: int = 8000,
             channels: int = 1) -> Path:
    path = tmp_path / f"{sid}.wav"
    rng = np.random.default_rng(0)
    sf.write(path, 0.1 * rng.standard_normal((int(seconds * rate), channels)), rate)
    return path


def _seglst(tmp_path: Path, segs: list[tuple]) -> Path:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps([{"session_id": s, "speaker": k, "start_time": a,
                                 "end_time": b, "words": w} for s, k, a, b, w in segs]))
    return path


def test_bad_sessions_are_named_or_skipped_and_reported(tmp_path: Path) -> None:
    for sid in ("good", "overlap", "outside"):
        _session(tmp_path, sid)
    _session(tmp_path, "stereo", channels=2)
    (tmp_path / "wav.scp").write_text("".join(f"{s} {s}.wav\n" for s in
                                              ("good", "overlap", "outside", "stereo")))
    ref = _seglst(tmp_path, [
        ("good", "A", 0.0, 1.5, "Hello there."), ("good", "B", 1.0, 2.5, "hi"),
        ("overlap", "A", 0.0, 1.5, "one"), ("overlap", "A", 1.0, 2.0, "two"),
        ("outside", "A", 2.0, 9.0, "late"),
        ("stereo", "A", 0.0, 1.0, "two channels"),
        ("absent", "A", 0.0, 1.0, "no audio")])
    with pytest.raises(CorpusError, match="session absent: no recording"):
        import_sessions(ref, tmp_path / "wav.scp", tmp_path / "o1")
    report = import_sessions(ref, tmp_path / "wav.scp", tmp_path / "o2", on_error="skip")
    assert report.sessions == 1 and set(report.skipped) == {"overlap", "outside", "stereo",
                                                             "absent"}
    assert "turns of speaker A overlap" in report.skipped["overlap"]
    assert "outside the recording" in report.skipped["outside"]
    assert "2 channels" in report.skipped["stereo"]
    saved = json.loads((tmp_path / "o2" / "import_report_test.json").read_text())
    assert set(saved["skipped"]) == set(report.skipped)
    [good] = load_sessions(tmp_path / "o2", "test")
    assert good.duration == pytest.approx(3.0) and good.turns[0].words == "hello there"
    assert sf.info(str(good.audio)).samplerate == 8000  # features resample on load


def test_a_second_split_keeps_the_first(tmp_path: Path) -> None:
    _session(tmp_path, "s1")
    _session(tmp_path, "s2")
    (tmp_path / "wav.scp").write_text(f"s1 {tmp_path / 's1.wav'}\ns2 {tmp_path / 's2.wav'}\n")
    import_sessions(_seglst(tmp_path, [("s1", "A", 0.0, 1.0, "a b")]), tmp_path / "wav.scp",
                    tmp_path / "o", split="train")
    import_sessions(_seglst(tmp_path, [("s2", "A", 0.0, 1.0, "c d")]), tmp_path / "wav.scp",
                    tmp_path / "o", split="test")
    table = pd.read_csv(tmp_path / "o" / "sessions.csv")
    assert dict(zip(table["session_id"], table["split"], strict=True)) == {"s1": "train",
                                                                           "s2": "test"}
    meta = json.loads((tmp_path / "o" / "mix.json").read_text())
    assert meta["sessions"] == {"train": 1, "test": 1}
    assert set(meta["imported_from"]) == {"train", "test"}


def test_malformed_inputs_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.stm"
    bad.write_text("s1 1 A 0.0 1.0 fine\ns1 1 A zero 1.0 words\n")
    with pytest.raises(InputDataError, match=r"bad.stm:2: begin/end are not numbers"):
        read_stm(bad)
    bad.write_text("s1 1 A\n")
    with pytest.raises(InputDataError, match=r"bad.stm:1: an STM line needs"):
        read_stm(bad)
    (tmp_path / "wav.scp").write_text("s1 sox in.wav -t wav - |\n")
    good = tmp_path / "ok.stm"
    good.write_text("s1 1 A 0.0 1.0 words\n")
    with pytest.raises(InputDataError, match="piped commands"):
        import_sessions(good, tmp_path / "wav.scp", tmp_path / "o")


def test_cli_import_mix(tmp_path: Path) -> None:
    _session(tmp_path, "m1")
    (tmp_path / "wav.scp").write_text("m1 m1.wav\n")
    stm = tmp_path / "m.stm"
    stm.write_text("m1 1 A 0.0 1.2 Good morning\nm1 1 B 0.8 2.0 morning to you\n")
    r = CliRunner().invoke(main, ["corpus", "import-mix", "--ref", str(stm), "--recordings",
                                  str(tmp_path / "wav.scp"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "1 sessions, 2 turns" in r.output
    row = pd.read_csv(tmp_path / "o" / "sessions.csv").iloc[0]
    assert row["overlap_ratio"] == pytest.approx(0.4 / 2.0, abs=0.01)
    (tmp_path / "bad.scp").write_text("m1 m1.wav\nm2\n")
    r = CliRunner().invoke(main, ["corpus", "import-mix", "--ref", str(stm), "--recordings",
                                  str(tmp_path / "bad.scp"), "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "bad.scp:2: expected '<session_id> <audio path>'" in r.output
