"""NIST sclite and fairstream.metrics.wer agree on the same trn files.

sclite (Debian package ``sctk``; CI installs it) is an independent implementation of word
alignment. It weighs substitutions 4 and insertions/deletions 3 when it aligns, where jiwer
minimizes the plain edit count, so on ties the *split* between substitutions, deletions and
insertions may differ; the error and reference-word totals must not.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fairstream.inference import write_trn_pair
from fairstream.metrics.wer import ErrorCounts, score_pairs


def _sclite() -> str:
    found = shutil.which("sclite") or "/usr/lib/sctk/bin/sclite"
    if not Path(found).is_file():  # fail, never skip: CI installs sctk
        pytest.fail("NIST sclite not found (install the Debian package sctk)")
    return found


CASES = [  # (reference, hypothesis)
    ("turn on the kitchen lights", "turn on the kitchen lights"),
    ("turn on the kitchen lights", "turn off kitchen light please"),
    ("set a timer for twenty five minutes", "set timer for twenty five five minutes"),
    ("call maria", ""),  # everything deleted
    ("a b c", "a c d e"),  # ties between sub and del+ins
    ("the the the", "the"),  # repeated words
    ("don't stop", "do not stop"),  # apostrophes
    ("what is the weather in boston", "what's the weather in austin"),
    ("one two three four five six seven eight nine ten",
     "two three four five six seven eight nine ten eleven"),
    ("x y", "y x"),
    ("play some music by the beatles", "play music by beatles some"),
    ("yes", "no no no"),  # more insertions than reference words
    ("a b c d e f g h", "h g f e d c b a"),
    ("", "hello there"),  # empty reference: every hypothesis word is an insertion
]


def _random_cases(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e", "f", "the", "of", "to"]
    out = []
    for _ in range(n):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 6)):
            op = rng.choice("sdi")
            pos = rng.randint(0, max(len(hyp) - 1, 0))
            if op == "s" and hyp:
                hyp[pos] = rng.choice(vocab)
            elif op == "d" and hyp:
                del hyp[pos]
            else:
                hyp.insert(pos, rng.choice(vocab))
        out.append((" ".join(ref), " ".join(hyp)))
    return out


def _run_sclite(
    tmp_path: Path, pairs: list[tuple[str, str]]
) -> tuple[dict[str, int], dict[str, tuple[int, int, int, int]]]:
    refs, hyps = zip(*pairs)
    counts = score_pairs(list(refs), list(hyps))
    df = pd.DataFrame({
        "utt_id": [f"utt{k:04d}" for k in range(len(pairs))],
        "speaker_id": [f"spk{k % 3}" for k in range(len(pairs))],
        "ref": list(refs), "hyp": list(hyps),
    })
    ref_trn, hyp_trn = write_trn_pair(df, tmp_path)
    cmd = [_sclite(), "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm",
           "-o", "rsum", "pralign", "stdout"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    m = re.search(r"\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|"
                  r"\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
    assert m, out[-2000:]
    snt, wrd, corr, sub, dele, ins, err = map(int, m.groups())
    totals = {"sentences": snt, "ref_words": wrd, "hits": corr, "sub": sub, "del": dele,
              "ins": ins, "errors": err}
    per_utt = {}
    for uid, c, s, d, i in re.findall(
        r"id: \(\w+-(utt\d+)\)\s*\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", out
    ):
        per_utt[uid] = (int(c), int(s), int(d), int(i))
    return totals, per_utt, counts  # type: ignore[return-value]


def _ours(counts: list[ErrorCounts]) -> dict[str, int]:
    total = sum(counts, ErrorCounts())
    return {"ref_words": total.ref_words, "errors": total.errors, "hits": total.hits,
            "sub": total.substitutions, "del": total.deletions, "ins": total.insertions}


@pytest.mark.parametrize("name", ["table", "random"])
def test_sclite_totals_equal_ours(tmp_path, name):
    pairs = CASES if name == "table" else _random_cases(300, seed=7)
    sclite, per_utt, counts = _run_sclite(tmp_path, pairs)
    ours = _ours(counts)
    assert sclite["sentences"] == len(pairs)
    assert sclite["ref_words"] == ours["ref_words"]
    assert sclite["errors"] == ours["errors"]
    # per utterance: same number of errors and reference words
    assert len(per_utt) == len(pairs)
    for k, c in enumerate(counts):
        hc, hs, hd, hi = per_utt[f"utt{k:04d}"]
        assert (hs + hd + hi, hc + hs + hd) == (c.errors, c.ref_words), pairs[k]


def test_sclite_error_split_on_the_table_cases(tmp_path):
    """Where the two aligners break ties differently, the split differs; pin what we see."""
    sclite, per_utt, counts = _run_sclite(tmp_path, CASES)
    differing = [CASES[k] for k, c in enumerate(counts)
                 if per_utt[f"utt{k:04d}"][1:] != (c.substitutions, c.deletions, c.insertions)]
    # "a b c" -> "a c d e": jiwer 2 sub + 1 ins, sclite 1 del + 2 ins (its sub weight is 4).
    assert ("a b c", "a c d e") in differing
    ours = _ours(counts)
    assert sclite["sub"] + sclite["del"] + sclite["ins"] == ours["errors"]
