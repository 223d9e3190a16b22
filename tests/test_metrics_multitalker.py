"""cpWER and ORC-WER: hand-made cases, and agreement with meeteval on randomized sessions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fairstream.errors import InputDataError
from fairstream.metrics.multitalker import (
    cp_wer,
    levenshtein,
    orc_wer,
    read_seglst,
    write_seglst,
)


def seg(session: str, speaker: str, start: float, words: str) -> dict:
    return {"session_id": session, "speaker": speaker, "start_time": start,
            "end_time": start + 1.0, "words": words}


def test_levenshtein_small_cases() -> None:
    assert levenshtein([], ["a"]) == 1 and levenshtein(["a"], []) == 1
    assert levenshtein("a b c".split(), "a x c".split()) == 1
    assert levenshtein("a b c d".split(), "b c d e".split()) == 2
    assert levenshtein("a a a".split(), "a".split()) == 2


def test_cp_wer_charges_speaker_confusion_and_orc_does_not() -> None:
    ref = [seg("s", "A", 0, "hello there"), seg("s", "B", 1, "good morning"),
           seg("s", "A", 2, "see you")]
    # the system put A's second utterance on the other channel
    hyp = [seg("s", "0", 0, "hello there"), seg("s", "1", 1, "good morning"),
           seg("s", "1", 2, "see you")]
    cp, orc = cp_wer(ref, hyp), orc_wer(ref, hyp)
    assert orc.errors == 0 and orc.assignment["s"] == ["0", "1", "1"]
    assert cp.errors == 4 and cp.length == 6  # "see you" deleted from A, inserted in B
    assert cp.assignment["s"] == {"A": "0", "B": "1"}
    assert cp.speaker_errors[("s", "A")] == (2, 4)


def test_unmatched_speakers_and_streams_count_fully() -> None:
    ref = [seg("s", "A", 0, "a b"), seg("s", "B", 1, "c d e")]
    hyp = [seg("s", "x", 0, "a b")]
    assert cp_wer(ref, hyp).errors == 3  # B's words deleted
    assert cp_wer(hyp, ref).errors == 3  # an extra stream: all insertions
    assert orc_wer(ref, []).errors == 5


def _random_sessions(rng: random.Random, n: int) -> tuple[list[dict], list[dict]]:
    vocab = "a b c d e f g h".split()
    ref, hyp = [], []
    for i in range(n):
        sid = f"s{i}"
        t = 0.0
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(vocab) for _ in range(rng.randint(0, 5))]
            ref.append(seg(sid, rng.choice("AB"), t, " ".join(words)))
            # hypothesis: the same words, corrupted, on a random channel
            out = [w if rng.random() > 0.3 else rng.choice(vocab) for w in words
                   if rng.random() > 0.15]
            if rng.random() < 0.3:
                out.append(rng.choice(vocab))
            hyp.append(seg(sid, rng.choice("01" if rng.random() < 0.9 else "012"),
                           t + rng.uniform(-0.2, 0.2), " ".join(out)))
            t += rng.uniform(0.3, 2.0)
    return ref, hyp


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_meeteval_on_random_sessions(seed: int) -> None:
    from meeteval.io.seglst import SegLST
    from meeteval.wer import cp_word_error_rate, orc_word_error_rate

    rng = random.Random(seed)
    ref, hyp = _random_sessions(rng, 12)
    for sid in sorted({r["session_id"] for r in ref}):
        r = [x for x in ref if x["session_id"] == sid]
        h = [x for x in hyp if x["session_id"] == sid]
        theirs = cp_word_error_rate(SegLST(r), SegLST(h))
        mine = cp_wer(r, h)
        assert (mine.errors, mine.length) == (theirs.errors, theirs.length), sid
        theirs = orc_word_error_rate(SegLST(r), SegLST(h))
        mine = orc_wer(r, h)
        assert (mine.errors, mine.length) == (theirs.errors, theirs.length), sid


def test_seglst_round_trip_and_named_errors(tmp_path: Path) -> None:
    segs = [seg("s", "A", 0.5, "hi there")]
    path = write_seglst(segs, tmp_path / "ref.json")
    assert [s.as_dict() for s in read_seglst(path)] == segs
    (tmp_path / "bad.json").write_text(json.dumps([{"session_id": "s", "speaker": "A"}]))
    with pytest.raises(InputDataError, match="entry 0: SegLST segment lacks"):
        read_seglst(tmp_path / "bad.json")
    bad_time = [dict(segs[0], end_time=0.1)]
    (tmp_path / "bad2.json").write_text(json.dumps(bad_time))
    with pytest.raises(InputDataError, match="bad times"):
        read_seglst(tmp_path / "bad2.json")
