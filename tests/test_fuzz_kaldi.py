"""Fuzzing the Kaldi data-directory doors: the audit's ``read_kaldi`` (text + hypothesis +
utt2spk) and the corpus importer ``import_kaldi_dir`` (wav.scp, text, utt2spk, spk2gender,
segments)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import soundfile as sf
from _fuzz import (
    FUZZ,
    ident,
    mostly,
    mutated,
    nasty_text,
    parses_or_fails_cleanly,
    random_or_mutated,
    rows_accounted_for,
    scratch_dir,
    word_text,
)
from hypothesis import given
from hypothesis import strategies as st

from fairstream.audit.inputs import read_kaldi
from fairstream.data.importers import import_kaldi_dir

utt_ids = st.lists(ident, min_size=1, max_size=5, unique=True)


def _table(rows: list[tuple[str, str]]) -> bytes:
    return "\n".join(f"{k} {v}" for k, v in rows).encode("utf-8")


@st.composite
def audit_dir(draw: st.DrawFn) -> dict[str, bytes]:
    uids = draw(utt_ids)
    text = _table([(u, draw(word_text)) for u in uids])
    hyp = _table([(u, draw(word_text)) for u in uids if draw(st.booleans())])
    spk = _table([(u, draw(mostly(ident, nasty_text))) for u in uids])
    return {name: draw(random_or_mutated(valid))
            for name, valid in (("text", text), ("hyp", hyp), ("utt2spk", spk))}


@FUZZ
@given(audit_dir())
def test_read_kaldi_parses_or_names_the_line(files: dict[str, bytes]) -> None:
    with scratch_dir() as d:
        for name, content in files.items():
            (d / name).write_bytes(content)
        table = parses_or_fails_cleanly(
            lambda: read_kaldi(d / "text", d / "hyp", d / "utt2spk"), list(files))
    if table is not None:
        rows_accounted_for(table)


@st.composite
def import_dir(draw: st.DrawFn) -> tuple[dict[str, bytes], list[str], bool]:
    uids = draw(utt_ids)
    use_segments = draw(st.booleans())
    rec_of = {u: (draw(st.sampled_from(["r0", "r1"])) if use_segments else u) for u in uids}
    recs = sorted(set(rec_of.values()))
    wav = _table([(r, f"{r}.wav") for r in recs])
    files = {
        "wav.scp": draw(mostly(st.just(wav), mutated(wav))),
        "text": draw(random_or_mutated(_table([(u, draw(word_text)) for u in uids]))),
        "utt2spk": draw(random_or_mutated(_table([(u, f"s{len(u) % 2}") for u in uids]))),
    }
    if draw(st.booleans()):
        genders = mostly(st.sampled_from(["m", "f", "M", "female"]), nasty_text)
        files["spk2gender"] = draw(random_or_mutated(
            _table([("s0", draw(genders)), ("s1", draw(genders))])))
    if use_segments:
        odd = st.one_of(st.floats(-1, 0.5).map(str), nasty_text)
        starts = mostly(st.floats(0, 0.1).map(str), odd)
        ends = mostly(st.floats(0.15, 0.3).map(str), odd)
        files["segments"] = draw(random_or_mutated(_table(
            [(u, f"{rec_of[u]} {draw(starts)} {draw(ends)}") for u in uids])))
    return files, uids, draw(st.booleans())


@FUZZ
@given(import_dir())
def test_import_kaldi_dir_imports_or_reports_every_utterance(
    case: tuple[dict[str, bytes], list[str], bool],
) -> None:
    files, uids, skip = case
    with scratch_dir() as d:
        src = d / "kaldi"
        src.mkdir()
        for name, content in files.items():
            (src / name).write_bytes(content)
        for r in ("r0", "r1", *uids):  # 0.3 s of 16 kHz noise per recording
            sf.write(src / f"{r}.wav", np.random.default_rng(0).normal(0, 0.1, 4800), 16000)
        report = parses_or_fails_cleanly(
            lambda: import_kaldi_dir(src, d / "out", split="test", audio_root=src,
                                     on_error="skip" if skip else "raise"),
            [*files, *(f"{r}.wav" for r in ("r0", "r1", *uids)), "kaldi"])
        if report is None:
            return
        sups = d / "out" / "manifests" / "test_supervisions.jsonl.gz"
        with gzip.open(sups, "rt", encoding="utf-8") as f:
            imported = {json.loads(ln)["id"] for ln in f if ln.strip()}
    skipped = {s.item for s in report.skipped}
    assert report.num_utterances == len(imported)
    assert not imported & skipped
    utterance_files = ["text", "utt2spk", "segments" if "segments" in files else "wav.scp"]
    listed = {ln.split()[0].decode("utf-8", errors="replace")
              for name in utterance_files for ln in files[name].splitlines() if ln.split()}
    assert listed <= imported | skipped, listed - imported - skipped  # none lost silently
