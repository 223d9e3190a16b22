"""Importers: Kaldi data dirs and Lhotse manifests → corpus layout; bad inputs name the item."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from audio_factory import make_kaldi_dir, write_wav
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from fairstream.data.corpus import load_corpus
from fairstream.data.importers import SPEAKER_COLUMNS, import_kaldi_dir, import_lhotse_manifests
from fairstream.data.layout import CorpusVersionError
from fairstream.data.text import normalize
from fairstream.errors import CorpusError, InputDataError
from fairstream.features import Cmvn


def _cuts(out: Path, split: str = "train") -> CutSet:
    return CutSet.from_file(out / "manifests" / f"{split}_cuts.jsonl.gz").to_eager()


def _kaldi_table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


GENDERS = {"spk0": "female", "spk1": "male", "spk2": "female"}  # make_kaldi_dir's spk2gender


def test_kaldi_round_trip(tmp_path: Path) -> None:
    src = make_kaldi_dir(tmp_path, n=6)
    report = import_kaldi_dir(src, tmp_path / "corpus")
    out = tmp_path / "corpus"
    assert report.num_utterances == 6 and report.num_speakers == 3 and not report.skipped

    info = json.loads((out / "corpus.json").read_text())
    assert info["complete"] is True and info["format"] == "fairstream-corpus"
    for kind in ("recordings", "supervisions", "cuts"):
        assert (out / "manifests" / f"train_{kind}.jsonl.gz").exists()
    assert Cmvn.load(out / "cmvn.json").frames > 0

    text, wav = _kaldi_table(src / "text"), _kaldi_table(src / "wav.scp")
    utt2spk = _kaldi_table(src / "utt2spk")
    cuts = _cuts(out)
    assert sorted(c.id for c in cuts) == sorted(text)
    for cut in cuts:
        sup = cut.supervisions[0]
        assert sup.text == normalize(text[cut.id]) and sup.custom["orig_text"] == text[cut.id]
        assert sup.speaker == utt2spk[cut.id]
        assert sup.custom["gender"] == GENDERS[sup.speaker]
        assert set(sup.custom) >= {"accent", "gender", "age_band", "lat", "lon", "zip"}
        original, _ = sf.read(wav[cut.id], dtype="float32")
        np.testing.assert_allclose(cut.load_audio()[0], original, atol=1e-6)

    with (out / "speakers.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SPEAKER_COLUMNS
    assert {r["speaker_id"]: r["gender"] for r in rows} == GENDERS
    assert all(r["accent"] == "" and r["split"] == "train" for r in rows)
    assert (out / "zip_demographics.csv").read_text().startswith("zip,state,lat,lon")
    assert json.loads((out / "import_report_train.json").read_text())["skipped"] == []


def test_imported_corpus_loads_like_a_built_one(tmp_path: Path) -> None:
    from fairstream.data.corpus import load_corpus

    src = make_kaldi_dir(tmp_path, n=4)
    import_kaldi_dir(src, tmp_path / "corpus")
    corpus = load_corpus(tmp_path / "corpus")
    assert corpus.splits == ["train"]
    cuts = corpus.cuts("train").to_eager()
    assert len(cuts) == 4 and next(iter(cuts)).load_audio().shape[0] == 1
    assert set(corpus.speakers["speaker_id"]) == {"spk0", "spk1", "spk2"}
    mean, std = corpus.cmvn
    assert mean.shape == std.shape == (80,)


def test_kaldi_segments_and_relative_paths(tmp_path: Path) -> None:
    write_wav(tmp_path / "audio" / "rec1.wav", 3.0, seed=1)
    src = tmp_path / "kaldi"
    src.mkdir()
    (src / "wav.scp").write_text("rec1 audio/rec1.wav\n")
    (src / "segments").write_text("a rec1 0.0 1.2\nb rec1 1.5 2.9\n")
    (src / "text").write_text("a hello there\nb turn it off\n")
    (src / "utt2spk").write_text("a\ts1\n\nb s1\n")  # tabs and blank lines are fine
    import_kaldi_dir(src, tmp_path / "out", audio_root=tmp_path)
    cuts = {c.id: c for c in _cuts(tmp_path / "out")}
    assert set(cuts) == {"a", "b"}
    assert cuts["b"].start == pytest.approx(1.5) and cuts["b"].duration == pytest.approx(1.4)
    assert cuts["b"].load_audio().shape[-1] == round(1.4 * 16000)


def test_wrong_sample_rate_is_resampled_and_recorded_or_an_error(tmp_path: Path) -> None:
    src = make_kaldi_dir(tmp_path, n=3, sample_rate=8000)
    with pytest.raises(CorpusError, match=r"spk0-utt000: sample rate 8000 Hz"):
        import_kaldi_dir(src, tmp_path / "strict", resample=False)
    report = import_kaldi_dir(src, tmp_path / "out")
    assert report.num_resampled == 3
    with gzip.open(tmp_path / "out" / "manifests" / "train_recordings.jsonl.gz", "rt") as f:
        rec = json.loads(f.readline())
    assert rec["sampling_rate"] == 16000
    assert rec["transforms"][0]["name"] == "Resample"
    cut = _cuts(tmp_path / "out")[0]
    assert cut.load_audio().shape[-1] == round(cut.duration * 16000)


def _break(kind: str, src: Path, tmp: Path) -> str:
    """Damage one item of a Kaldi dir; return the id that must be named."""
    wav = _kaldi_table(src / "wav.scp")
    victim = "spk1-utt001"
    if kind == "missing_audio":
        Path(wav[victim]).unlink()
    elif kind == "corrupt_audio":
        Path(wav[victim]).write_bytes(b"RIFF\x00\x00garbage" * 20)
    elif kind == "truncated_audio":
        data = Path(wav[victim]).read_bytes()
        Path(wav[victim]).write_bytes(data[:44])
    elif kind == "empty_text":
        lines = [f"{victim}" if ln.startswith(victim) else ln
                 for ln in (src / "text").read_text().splitlines()]
        (src / "text").write_text("\n".join(lines) + "\n")
    elif kind == "punct_only_text":
        lines = [f"{victim} ?!" if ln.startswith(victim) else ln
                 for ln in (src / "text").read_text().splitlines()]
        (src / "text").write_text("\n".join(lines) + "\n")
    elif kind == "non_utf8_text":
        raw = (src / "text").read_bytes().splitlines()
        raw = [f"{victim} caf".encode() + b"\xe9 ok" if ln.startswith(victim.encode()) else ln
               for ln in raw]
        (src / "text").write_bytes(b"\n".join(raw) + b"\n")
    elif kind == "duplicate_id":
        with (src / "text").open("a") as f:
            f.write(f"{victim} another transcript\n")
    elif kind == "missing_speaker":
        lines = [ln for ln in (src / "utt2spk").read_text().splitlines()
                 if not ln.startswith(victim)]
        (src / "utt2spk").write_text("\n".join(lines) + "\n")
    elif kind == "piped_command":
        lines = [f"{victim} sox x.wav -t wav - |" if ln.startswith(victim) else ln
                 for ln in (src / "wav.scp").read_text().splitlines()]
        (src / "wav.scp").write_text("\n".join(lines) + "\n")
    elif kind == "stereo_audio":
        sf.write(wav[victim], np.zeros((16000, 2), dtype=np.float32), 16000)
    else:
        raise AssertionError(kind)
    return victim


BAD_KINDS = [
    ("missing_audio", "does not exist"),
    ("corrupt_audio", "cannot read audio"),
    ("truncated_audio", "empty audio|cannot"),
    ("empty_text", "no value|empty transcript"),
    ("punct_only_text", "empty after normalization"),
    ("non_utf8_text", "not valid UTF-8"),
    ("duplicate_id", "duplicate id"),
    ("missing_speaker", "missing from .*utt2spk"),
    ("piped_command", "piped command"),
    ("stereo_audio", "2 channels"),
]


@pytest.mark.parametrize(("kind", "reason"), BAD_KINDS, ids=[k for k, _ in BAD_KINDS])
def test_bad_kaldi_item_is_named_or_skipped(tmp_path: Path, kind: str, reason: str) -> None:
    src = make_kaldi_dir(tmp_path, n=6)
    victim = _break(kind, src, tmp_path)
    with pytest.raises(CorpusError, match=rf"{victim}.*({reason})"):
        import_kaldi_dir(src, tmp_path / "raise")
    assert not (tmp_path / "raise" / "corpus.json").exists()

    report = import_kaldi_dir(src, tmp_path / "skip", on_error="skip")
    assert [s.item for s in report.skipped] == [victim]
    assert report.num_utterances == 5
    assert victim not in {c.id for c in _cuts(tmp_path / "skip")}
    saved = json.loads((tmp_path / "skip" / "import_report_train.json").read_text())
    assert saved["skipped"][0]["item"] == victim


def test_missing_required_file(tmp_path: Path) -> None:
    src = make_kaldi_dir(tmp_path, n=2)
    (src / "utt2spk").unlink()
    with pytest.raises(CorpusError, match="utt2spk does not exist"):
        import_kaldi_dir(src, tmp_path / "out", on_error="skip")


def test_output_directory_rules(tmp_path: Path) -> None:
    src = make_kaldi_dir(tmp_path, n=3)
    out = tmp_path / "out"
    import_kaldi_dir(src, out)
    with pytest.raises(CorpusError, match="already holds split 'train'"):
        import_kaldi_dir(src, out)
    import_kaldi_dir(src, out, overwrite=True)
    import_kaldi_dir(src, out, split="dev")
    info = json.loads((out / "corpus.json").read_text())
    assert set(info["config"]["splits"]) == {"train", "dev"}
    with (out / "speakers.csv").open() as f:
        assert sorted({r["split"] for r in csv.DictReader(f)}) == ["dev", "train"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "corpus.json").write_text(
        json.dumps({"format": "fairstream-corpus", "config": {"preset": "tiny"}}))
    with pytest.raises(CorpusError, match="already holds a different corpus"):
        import_kaldi_dir(src, other)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("x")
    with pytest.raises(CorpusError, match="not empty"):
        import_kaldi_dir(src, junk)


def _lhotse_manifests(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    recs, sups = [], []
    for i in range(n):
        p = write_wav(tmp_path / "lw" / f"r{i}.wav", 1.0 + 0.2 * i,
                      sample_rate=16000 if i else 22050, seed=i)
        rec = Recording.from_file(p, recording_id=f"r{i}")
        recs.append(rec)
        sups.append(SupervisionSegment(
            id=f"s{i}", recording_id=rec.id, start=0.1, duration=0.8, channel=0,
            text=f"Play Song {i}, please" if i else "call maria", speaker=f"p{i % 2}",
            gender="F" if i % 2 else "M", custom={"accent": "en-gb", "session": i},
        ))
    rp, sp = tmp_path / "recs.jsonl.gz", tmp_path / "sups.jsonl.gz"
    RecordingSet.from_recordings(recs).to_file(rp)
    SupervisionSet.from_segments(sups).to_file(sp)
    return rp, sp


def test_lhotse_round_trip(tmp_path: Path) -> None:
    rp, sp = _lhotse_manifests(tmp_path)
    report = import_lhotse_manifests(rp, sp, tmp_path / "out", split="test")
    assert report.num_utterances == 4 and report.num_resampled == 1
    cuts = {c.id: c for c in _cuts(tmp_path / "out", "test")}
    assert set(cuts) == {"s0", "s1", "s2", "s3"}
    s1 = cuts["s1"].supervisions[0]
    assert s1.text == "play song 1 please" and s1.custom["orig_text"] == "Play Song 1, please"
    assert s1.custom["accent"] == "en-gb" and s1.custom["session"] == 1
    assert s1.custom["gender"] == "female" and s1.custom["zip"] is None
    assert cuts["s0"].sampling_rate == 16000
    assert cuts["s0"].load_audio().shape[-1] == round(0.8 * 16000)
    original, _ = sf.read(tmp_path / "lw" / "r2.wav", dtype="float32")
    np.testing.assert_allclose(cuts["s2"].load_audio()[0], original[1600:1600 + 12800], atol=1e-6)
    assert not (tmp_path / "out" / "cmvn.json").exists()  # CMVN comes from the train split only


Items = list[dict[str, Any]]  # Any: manifest items are JSON data
Edit = Callable[[Items, Items], tuple[Items, Items]]


def _rewrite_jsonl(path: Path, edit: Callable[[Items], Items]) -> None:
    with gzip.open(path, "rt") as f:
        lines = [json.loads(x) for x in f]
    lines = edit(lines)
    with gzip.open(path, "wt") as f:
        for obj in lines:
            f.write(json.dumps(obj) + "\n")


def _change(items: Items, item_id: str, **changes: object) -> Items:
    """``items`` with the one whose id is ``item_id`` updated by ``changes``."""
    return [dict(x, **changes) if x["id"] == item_id else x for x in items]


def _missing_audio(r: Items, s: Items) -> tuple[Items, Items]:
    rec = next(x for x in r if x["id"] == "r1")
    source = dict(rec["sources"][0], source="/nonexistent/a.wav")
    return _change(r, "r1", sources=[source]), s


_COMMAND = {"type": "command", "channels": [0], "source": "sox a.wav -t wav -"}
LHOTSE_BAD: list[tuple[str, str, str, Edit]] = [
    ("dup_sup", "s2", "duplicate supervision id", lambda r, s: (r, s + [s[2]])),
    ("dup_rec", "r3", "duplicate recording id", lambda r, s: (r + [r[3]], s)),
    ("empty_text", "s1", "empty transcript", lambda r, s: (r, _change(s, "s1", text=" "))),
    ("no_recording", "s3", "recording r9 unusable",
     lambda r, s: (r, _change(s, "s3", recording_id="r9"))),
    ("missing_file", "r1", "does not exist", _missing_audio),
    ("command_source", "r1", "shell command",
     lambda r, s: (_change(r, "r1", sources=[_COMMAND]), s)),
    ("span", "s2", "outside recording", lambda r, s: (r, _change(s, "s2", duration=9.0))),
]


@pytest.mark.parametrize(("kind", "victim", "reason", "edit"), LHOTSE_BAD,
                         ids=[k[0] for k in LHOTSE_BAD])
def test_bad_lhotse_item_is_named_or_skipped(tmp_path: Path, kind: str, victim: str, reason: str,
                                             edit: Edit) -> None:
    rp, sp = _lhotse_manifests(tmp_path)
    with gzip.open(rp, "rt") as f:
        recs = [json.loads(x) for x in f]
    with gzip.open(sp, "rt") as f:
        sups = [json.loads(x) for x in f]
    recs, sups = edit(recs, sups)
    _rewrite_jsonl(rp, lambda _: recs)
    _rewrite_jsonl(sp, lambda _: sups)
    with pytest.raises(CorpusError, match=rf"{victim}.*{reason}"):
        import_lhotse_manifests(rp, sp, tmp_path / "raise")
    report = import_lhotse_manifests(rp, sp, tmp_path / "skip", on_error="skip")
    assert victim in [s.item for s in report.skipped]
    assert report.num_utterances == 3


def test_lhotse_non_utf8_line_is_named(tmp_path: Path) -> None:
    rp, sp = _lhotse_manifests(tmp_path)
    with gzip.open(sp, "rb") as f:
        raw = f.read().splitlines()
    raw[1] = raw[1].replace(b"Play", b"Pl\xe9y")
    with gzip.open(sp, "wb") as f:
        f.write(b"\n".join(raw) + b"\n")
    with pytest.raises(CorpusError, match=r"sups.jsonl.gz:2.*not valid UTF-8"):
        import_lhotse_manifests(rp, sp, tmp_path / "out")


def test_splits_beyond_train_dev_test_and_their_order(tmp_path: Path) -> None:
    rp, sp = _lhotse_manifests(tmp_path)
    out = tmp_path / "out"
    import_lhotse_manifests(rp, sp, out, split="audit", check_audio=False)
    import_lhotse_manifests(rp, sp, out, split="train", check_audio=False, cmvn_max_cuts=2)
    info = json.loads((out / "corpus.json").read_text())
    assert (info["format"], info["version"]) == ("fairstream-corpus", 1)
    assert info["splits"] == ["train", "audit"]  # default splits first, then the rest
    corpus = load_corpus(out)
    assert corpus.splits == ["train", "audit"] and len(corpus.cuts("audit")) == 4
    assert (out / "import_report_audit.json").exists()
    with pytest.raises(InputDataError, match="'Audit Set' is not valid"):
        import_lhotse_manifests(rp, sp, out, split="Audit Set")


def test_import_into_a_corpus_of_a_newer_layout_is_refused(tmp_path: Path) -> None:
    rp, sp = _lhotse_manifests(tmp_path)
    out = tmp_path / "out"
    import_lhotse_manifests(rp, sp, out, split="test", check_audio=False)
    info = json.loads((out / "corpus.json").read_text())
    (out / "corpus.json").write_text(json.dumps({**info, "version": 2}))
    with pytest.raises(CorpusVersionError, match="version 2 is not readable"):
        import_lhotse_manifests(rp, sp, out, split="dev", check_audio=False)
    assert json.loads((out / "corpus.json").read_text())["version"] == 2  # left untouched
