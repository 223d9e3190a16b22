"""``fairstream corpus``: build, info and import wired through click's runner."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.data import presets
from fairstream.data.corpus import load_corpus
from fairstream.data.speakers import SpeakerConfig


@pytest.fixture()
def mini_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `--preset tiny` build 12 utterances so that CLI tests stay fast."""
    mini = replace(presets.PRESETS["tiny"], speakers=SpeakerConfig(n_train=4, n_dev=2, n_test=2),
                   utterances_per_speaker=(2, 1, 1), cmvn_max_utterances=4)
    monkeypatch.setitem(presets.PRESETS, "tiny", mini)


def test_help_teaches_the_commands() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "--help"])
    assert result.exit_code == 0
    for word in ("build", "info", "import-kaldi", "import-lhotse", "Examples"):
        assert word in result.output
    result = runner.invoke(main, ["corpus", "build", "--help"])
    assert result.exit_code == 0
    assert "PLANTED DISPARITY" in result.output
    assert "--resume" in result.output and "--jobs" in result.output


def test_build_prints_summary_and_refuses_a_different_corpus(
        tmp_path: Path, mini_preset: None) -> None:
    runner = CliRunner()
    out = tmp_path / "c"
    build = ["corpus", "build", "--preset", "tiny", "--out", str(out), "--no-progress"]
    result = runner.invoke(main, [*build, "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "utt/s" in result.output and "utterances 12" in result.output
    assert load_corpus(out).info["seed"] == 5

    again = runner.invoke(main, [*build, "--seed", "5"])
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = runner.invoke(main, [*build, "--seed", "5", "--resume"])
    assert resumed.exit_code == 0 and "reused 12" in resumed.output
    other = runner.invoke(main, [*build, "--seed", "6"])
    assert other.exit_code != 0
    assert "different corpus" in other.output and str(out) in other.output


def test_build_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "x")
    result = runner.invoke(main, ["corpus", "build", "--preset", "huge", "--out", out])
    assert result.exit_code == 2 and "huge" in result.output
    result = runner.invoke(main, ["corpus", "build", "--preset", "tiny", "--out", out,
                                  "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs" in result.output


def test_info_tables(tiny_corpus: Path) -> None:
    result = CliRunner().invoke(main, ["corpus", "info", str(tiny_corpus)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "per split" in out and "per accent" in out and "per gender" in out
    assert "en-gb-scotland" in out and "train:spk" in out and "female" in out
    assert "planted under-represented accents: en-gb-scotland, en-029" in out
    n_utts = sum(json.loads((tiny_corpus / "corpus.json").read_text())["counts"][s]["utterances"]
                 for s in ("train", "dev", "test"))
    assert f"utterances {n_utts}" in out


def test_info_on_an_incomplete_corpus_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "corpus.json").write_text(
        json.dumps({"format": "fairstream-corpus", "complete": False}))
    result = CliRunner().invoke(main, ["corpus", "info", str(tmp_path)])
    assert result.exit_code != 0 and "incomplete" in result.output


def test_import_kaldi_is_wired(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    cuts = list(corpus.cuts("dev"))[:3]
    wav_lines, text_lines, spk_lines = [], [], []
    for cut in cuts:
        wav = tmp_path / f"{cut.id}.wav"
        sf.write(wav, cut.load_audio()[0], 16000)
        wav_lines.append(f"{cut.id} {wav}")
        text_lines.append(f"{cut.id} {cut.supervisions[0].text}")
        spk_lines.append(f"{cut.id} {cut.supervisions[0].speaker}")
    for name, lines in (("wav.scp", wav_lines), ("text", text_lines), ("utt2spk", spk_lines)):
        (kaldi / name).write_text("\n".join(sorted(lines)) + "\n")
    out = tmp_path / "imported"
    result = CliRunner().invoke(main, ["corpus", "import-kaldi", str(kaldi), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 utterances" in result.output
    assert len(load_corpus(out).cuts("train")) == 3


def test_import_lhotse_is_wired(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    recs = tmp_path / "recs.jsonl.gz"
    sups = tmp_path / "sups.jsonl.gz"
    corpus.recordings("test").to_file(recs)
    corpus.supervisions("test").to_file(sups)
    out = tmp_path / "imported"
    result = CliRunner().invoke(main, ["corpus", "import-lhotse", "--recordings", str(recs),
                                       "--supervisions", str(sups), "--out", str(out),
                                       "--split", "test"])
    assert result.exit_code == 0, result.output
    imported = load_corpus(out)
    assert len(imported.cuts("test")) == len(corpus.cuts("test"))
    extra = CliRunner().invoke(main, ["corpus", "import-lhotse", "--recordings", str(recs),
                                      "--supervisions", str(sups), "--out", str(out),
                                      "--split", "audit"])
    assert extra.exit_code == 0, extra.output
    info = CliRunner().invoke(main, ["corpus", "info", str(out)])
    assert info.exit_code == 0, info.output
    assert "test:spk" in info.output and "audit:spk" in info.output
    assert load_corpus(out).splits == ["test", "audit"]
    bad = CliRunner().invoke(main, ["corpus", "import-lhotse",
                                    "--recordings", str(tmp_path / "nope.jsonl"),
                                    "--supervisions", str(sups), "--out", str(out)])
    assert bad.exit_code == 2 and "nope.jsonl" in bad.output
