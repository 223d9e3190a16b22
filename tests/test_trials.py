"""VoxCeleb-format trial lists: building, round trip, importing and bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fairstream.data.trials import (
    Trial,
    TrialSpec,
    build_trials,
    check_files,
    check_known,
    read_trials,
    write_trials,
)
from fairstream.errors import InputDataError


def _table(n_speakers: int = 8, n_utts: int = 6) -> pd.DataFrame:
    rows = []
    for s in range(n_speakers):
        for u in range(n_utts):
            rows.append(
                {
                    "speaker_id": f"spk{s:02d}",
                    "path": f"test/spk{s:02d}/spk{s:02d}-{u:03d}.flac",
                    "gender": "female" if s % 2 else "male",
                    "accent": ["en-us", "en-gb"][(s // 2) % 2],
                }
            )
    return pd.DataFrame(rows)


def test_build_trials_has_targets_and_hard_impostors() -> None:
    table = _table()
    spec = TrialSpec(targets=5, same_gender=4, same_accent=4, random=4, seed=3)
    trials = build_trials(table, spec)
    spk = dict(zip(table["path"], table["speaker_id"]))
    gender = dict(zip(table["path"], table["gender"]))
    accent = dict(zip(table["path"], table["accent"]))
    targets = [t for t in trials if t.label == 1]
    non = [t for t in trials if t.label == 0]
    assert len(targets) == 8 * 5
    assert all(spk[t.enroll] == spk[t.test] for t in targets)
    assert all(spk[t.enroll] != spk[t.test] for t in non)
    # every speaker has same-gender and same-accent impostor trials
    same_gender = [t for t in non if gender[t.enroll] == gender[t.test]]
    same_accent = [t for t in non if accent[t.enroll] == accent[t.test]]
    assert len(same_gender) >= 8 * 4 and len(same_accent) >= 8 * 4
    pairs = [frozenset((t.enroll, t.test)) for t in trials]
    assert len(pairs) == len(set(pairs)), "no pair twice"
    assert build_trials(table, spec) == trials, "deterministic for a seed"


def test_targets_capped_by_available_pairs() -> None:
    trials = build_trials(_table(n_speakers=3, n_utts=2), TrialSpec(targets=10))
    assert sum(t.label for t in trials) == 3  # one distinct pair per speaker


def test_round_trip(tmp_path: Path) -> None:
    trials = build_trials(_table(), TrialSpec(targets=3, same_gender=2, same_accent=2, random=2))
    path = write_trials(trials, tmp_path / "trials.txt")
    assert read_trials(path) == trials
    first = path.read_text().splitlines()[0].split()
    assert first[0] in ("0", "1") and len(first) == 3


def test_import_a_voxceleb_list(tmp_path: Path) -> None:
    text = (
        "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
        "\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav\n"
    )
    (tmp_path / "veri_test2.txt").write_text(text)
    trials = read_trials(tmp_path / "veri_test2.txt")
    assert trials == [
        Trial(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav"),
        Trial(0, "id10270/x6uYqmx31kE/00001.wav", "id10300/ize_eiCFEg0/00003.wav"),
    ]


BAD_LINES = [
    ("1 a.wav\n", r"trials.txt:1: expected '<label> <enroll> <test>'"),
    ("1 a.wav b.wav\ntarget a.wav c.wav\n", r"trials.txt:2: label must be 0 or 1, got 'target'"),
    ("\n\n", "is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_LINES)
def test_bad_trial_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "trials.txt").write_text(text)
    with pytest.raises(InputDataError, match=message):
        read_trials(tmp_path / "trials.txt")


def test_missing_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="nope.txt"):
        read_trials(tmp_path / "nope.txt")


def test_unknown_utterances_and_missing_files_are_named(tmp_path: Path) -> None:
    trials = [Trial(1, "a/x.wav", "a/y.wav"), Trial(0, "a/x.wav", "b/z.wav")]
    with pytest.raises(InputDataError,
                       match=r"1 utterance\(s\) .* unknown to embeddings: 'b/z.wav'"):
        check_known(trials, ["a/x.wav", "a/y.wav"])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    with pytest.raises(InputDataError, match=r"2 file\(s\) .* do not exist: .*a/y.wav"):
        check_files(trials, tmp_path)


def test_build_trials_rejects_bad_tables() -> None:
    with pytest.raises(InputDataError, match="no column 'speaker_id'"):
        build_trials(pd.DataFrame({"path": ["a"]}))
    with pytest.raises(InputDataError, match="at least two speakers"):
        build_trials(pd.DataFrame({"path": ["a", "b"], "speaker_id": ["s", "s"]}))
    with pytest.raises(InputDataError, match="'a' appears more than once"):
        build_trials(pd.DataFrame({"path": ["a", "a"], "speaker_id": ["s", "t"]}))
