"""`fairstream corpus mix`: reproducible two-speaker sessions with a SegLST reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fairstream.data.mixing import MixConfig, mix_corpus
from fairstream.errors import CorpusError, InputDataError
from fairstream.metrics.multitalker import read_seglst


def test_sessions_are_reproducible_and_their_audio_is_the_sum_of_the_turns(
        tiny_corpus: Path, tmp_path: Path) -> None:
    from fairstream.data.corpus import load_corpus

    cfg = MixConfig(sessions=(("test", 4), ("dev", 2)), single_speaker_share=0.0,
                    overlap_prob=1.0, max_overlap=0.4, seed=3)
    summary = mix_corpus(tiny_corpus, tmp_path / "a", cfg)
    mix_corpus(tiny_corpus, tmp_path / "b", cfg)
    assert summary["sessions"] == {"test": 4, "dev": 2}
    for name in ("test.seglst.json", "dev.seglst.json", "sessions.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    corpus = load_corpus(tiny_corpus)
    split_of = corpus.speakers.set_index("speaker_id")["split"]
    cuts = {c.id: c for c in corpus.cuts("test")}
    segs = read_seglst(tmp_path / "a" / "test.seglst.json")
    sessions = pd.read_csv(tmp_path / "a" / "sessions.csv")
    assert (sessions["overlap_ratio"] > 0).any()  # overlaps happen
    import gzip
    import json
    sups = [json.loads(line) for line in gzip.open(
        tmp_path / "a" / "manifests" / "test_supervisions.jsonl.gz", "rt")]
    for sid in sessions.query("split == 'test'")["session_id"]:
        mine = [s for s in segs if s.session_id == sid]
        assert {split_of[s.speaker] for s in mine} == {"test"}
        by_spk: dict[str, list] = {}
        for s in sorted(mine, key=lambda s: s.start_time):  # nobody overlaps themselves
            if s.speaker in by_spk:
                assert s.start_time >= by_spk[s.speaker][-1].end_time - 1e-3
            by_spk.setdefault(s.speaker, []).append(s)
        audio, sr = sf.read(tmp_path / "a" / "audio" / "test" / f"{sid}.flac")
        assert abs(len(audio) / sr - max(s.end_time for s in mine)) < 0.01
        # rebuild the mix from the source cuts
        want = np.zeros(len(audio))
        for sup in (x for x in sups if x["recording_id"] == sid):
            wav = cuts[sup["custom"]["source_cut"]].load_audio()[0]
            a = int(round(sup["start"] * sr))
            want[a:a + len(wav)] += wav[: len(want) - a]
        scale = float(sessions.set_index("session_id").loc[sid, "scale"])
        np.testing.assert_allclose(audio, want * scale, atol=2e-4)  # FLAC is 16-bit


def test_meeteval_reads_the_reference(tiny_corpus: Path, tmp_path: Path) -> None:
    from meeteval.io.seglst import SegLST
    from meeteval.wer import cp_word_error_rate_multifile

    mix_corpus(tiny_corpus, tmp_path, MixConfig(sessions=(("test", 3),)))
    ref = SegLST.load(tmp_path / "test.seglst.json")
    per_session = cp_word_error_rate_multifile(ref, ref)
    assert sorted(per_session) == ["test-00000", "test-00001", "test-00002"]
    assert all(r.errors == 0 and r.length > 0 for r in per_session.values())


def test_bad_settings_and_splits_are_named(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no split 'nope'"):
        mix_corpus(tiny_corpus, tmp_path, MixConfig(sessions=(("nope", 1),)))
    with pytest.raises(CorpusError, match="no unused utterance"):
        mix_corpus(tiny_corpus, tmp_path, MixConfig(sessions=(("test", 10_000),)))
    with pytest.raises(InputDataError, match="max_overlap"):
        MixConfig(max_overlap=1.5)
