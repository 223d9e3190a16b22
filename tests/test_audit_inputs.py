"""Readers and bad inputs: every problem is named, nothing is dropped silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairstream.audit.inputs import (
    ColumnMap,
    normalize_zip,
    read_embeddings,
    read_kaldi,
    read_results,
    read_speakers,
    read_trn,
    read_zip_demographics,
)
from fairstream.errors import InputDataError
from fairstream.metrics.wer import score, write_trn


def _counts_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "utt_id": ["u1", "u2", "u3"], "speaker_id": ["s1", "s1", "s2"],
        "sub": [1, 0, 2], "del": [0, 1, 0], "ins": [0, 0, 1], "hits": [4, 4, 3],
        "accent": ["a", "a", "b"],
    })


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_table_format_reads_the_same(tmp_path: Path, fmt: str) -> None:
    df = _counts_frame()
    path = tmp_path / f"r.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    t = read_results(path)
    assert list(t.utterances["utt_id"]) == ["u1", "u2", "u3"]
    assert t.utterances[["sub", "del", "ins", "hits"]].to_numpy().sum() == 16
    assert "accent" in t.utterances.columns
    assert t.n_rows_read == 3 and not t.exclusions


def test_format_override_and_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    _counts_frame().to_csv(p, index=False)
    assert len(read_results(p, fmt="csv").utterances) == 3
    with pytest.raises(InputDataError, match="unknown table format 'txt'"):
        read_results(p)


def test_missing_columns_are_named() -> None:
    df = _counts_frame().drop(columns=["speaker_id"])
    with pytest.raises(InputDataError, match=r"\['speaker_id'\]"):
        read_results(df)
    df = _counts_frame().drop(columns=["hits"])
    with pytest.raises(InputDataError, match="error counts .*or texts"):
        read_results(df)


def test_column_mapping_and_n_ref_words_instead_of_hits() -> None:
    df = pd.DataFrame({"id": ["x"], "spk": ["s"], "S": [1], "D": [1], "I": [2], "N": [5]})
    cm = ColumnMap.from_pairs(["utt_id=id", "speaker_id=spk", "sub=S", "del=D", "ins=I",
                               "n_ref_words=N"])
    t = read_results(df, columns=cm)
    row = t.utterances.iloc[0]
    assert (row["sub"], row["del"], row["ins"], row["hits"]) == (1, 1, 2, 3)
    with pytest.raises(InputDataError, match="unknown results field 'speaker'"):
        ColumnMap.from_pairs(["speaker=spk"])
    with pytest.raises(InputDataError, match="field=column"):
        ColumnMap.from_pairs(["speaker_id"])


def test_text_mode_scores_with_the_wer_module_and_empty_reference_rule() -> None:
    df = pd.DataFrame({"utt_id": ["a", "b", "c"], "speaker_id": ["s", "s", "t"],
                       "ref": ["Hello world", "", "one two three"],
                       "hyp": ["hello word", "uh huh", None]})
    t = read_results(df)
    u = t.utterances.set_index("utt_id")
    exp = score("Hello world", "hello word")
    assert (u.loc["a", "sub"], u.loc["a", "hits"]) == (exp.substitutions, exp.hits)
    # empty reference: 0 words, every hypothesis word an insertion, row kept
    assert (u.loc["b", "ins"], u.loc["b", "hits"] + u.loc["b", "sub"] + u.loc["b", "del"]) == (2, 0)
    assert t.n_empty_reference == 1
    assert any("empty reference" in n for n in t.notes)
    # a null hypothesis is scored as empty and said so
    assert u.loc["c", "del"] == 3
    assert any("no hypothesis" in n for n in t.notes)


def test_null_reference_and_invalid_counts_are_excluded_and_counted() -> None:
    df = pd.DataFrame({"utt_id": ["a", "b"], "speaker_id": ["s", "s"],
                       "ref": [None, "x"], "hyp": ["x", "x"]})
    t = read_results(df)
    assert len(t.utterances) == 1
    [ex] = t.exclusions
    assert ex.count == 1 and "missing reference" in ex.reason and ex.examples == ("a",)
    df = _counts_frame()
    df.loc[1, "sub"] = -1
    df.loc[2, "hits"] = np.nan
    t = read_results(df)
    assert len(t.utterances) == 1
    assert t.exclusions[0].count == 2 and "negative" in t.exclusions[0].reason


def test_missing_ids_are_excluded_and_counted() -> None:
    df = _counts_frame()
    df.loc[0, "speaker_id"] = None
    t = read_results(df)
    assert len(t.utterances) == 2
    assert t.exclusions[0].reason == "missing speaker id" and t.exclusions[0].count == 1


def test_duplicate_utterance_ids_raise_or_are_counted() -> None:
    df = pd.concat([_counts_frame(), _counts_frame().iloc[[0]]], ignore_index=True)
    with pytest.raises(InputDataError, match=r"repeats 1 utterance id\(s\), e.g. \['u1'\]"):
        read_results(df)
    t = read_results(df, duplicates="first")
    assert len(t.utterances) == 3
    assert t.exclusions[0].count == 1 and "duplicate" in t.exclusions[0].reason


def test_kaldi_text_hyp_utt2spk(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("u1 hello world\nu2 good morning\nu3 lost one\n")
    (tmp_path / "hyp").write_text("u1 hello word\nu2 good morning\nu9 stray\n")
    (tmp_path / "utt2spk").write_text("u1 spkA\nu2 spkB\nu3 spkA\n")
    t = read_kaldi(tmp_path / "text", tmp_path / "hyp", tmp_path / "utt2spk")
    u = t.utterances.set_index("utt_id")
    assert list(u.index) == ["u1", "u2"]
    assert u.loc["u1", "speaker_id"] == "spkA" and u.loc["u1", "sub"] == 1
    reasons = {x.reason: x.count for x in t.exclusions}
    assert reasons == {"reference without hypothesis line": 1,
                       "hypothesis without reference line": 1}


def test_kaldi_repeated_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("u1 a\nu1 b\n")
    (tmp_path / "hyp").write_text("u1 a\n")
    (tmp_path / "utt2spk").write_text("u1 s\n")
    with pytest.raises(InputDataError, match="'u1' appears twice"):
        read_kaldi(tmp_path / "text", tmp_path / "hyp", tmp_path / "utt2spk")


def test_trn_pairs_written_by_the_wer_module(tmp_path: Path) -> None:
    write_trn(tmp_path / "ref.trn", ["u1", "u2"], ["the cat sat", "a dog"], ["spk1", "spk2"])
    write_trn(tmp_path / "hyp.trn", ["u1", "u2"], ["the cat sat down", "a dog"], ["spk1", "spk2"])
    t = read_trn(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    u = t.utterances.set_index("speaker_id")
    assert u.loc["spk1", "ins"] == 1 and u.loc["spk2", "hits"] == 2
    (tmp_path / "bad.trn").write_text("no id here\n")
    with pytest.raises(InputDataError, match="bad.trn:1"):
        read_trn(tmp_path / "bad.trn", tmp_path / "hyp.trn")


def test_speaker_table_checks() -> None:
    with pytest.raises(InputDataError, match=r"repeats speaker id\(s\) \['s1'\]"):
        read_speakers(pd.DataFrame({"speaker_id": ["s1", "s1"], "accent": ["a", "b"]}))
    with pytest.raises(InputDataError, match="speaker_id"):
        read_speakers(pd.DataFrame({"spk": ["s1"]}))
    t = read_speakers(pd.DataFrame({"spk": [1, 2], "zip": [2139, "90210-1234"]}), speaker_col="spk")
    assert list(t.index) == ["1", "2"] and list(t["zip"]) == ["02139", "90210"]


def test_zip_normalization_and_table_checks() -> None:
    z = normalize_zip(pd.Series([2139, "02139", "2139.0", "abc", None, "123456"]))
    assert [v if isinstance(v, str) else None for v in z] == ["02139"] * 3 + [None] * 3
    assert z.isna().sum() == 3
    with pytest.raises(InputDataError, match=r"invalid zip code\(s\) \['abc'\]"):
        read_zip_demographics(pd.DataFrame({"zip": ["abc"], "urbanicity": ["rural"]}))
    with pytest.raises(InputDataError, match="repeats zip"):
        read_zip_demographics(pd.DataFrame({"zip": ["1", "00001"], "u": ["a", "b"]}))


def test_embeddings_npy_with_ids_and_parquet(tmp_path: Path) -> None:
    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "e.npy", m)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    ids, vec = read_embeddings(tmp_path / "e.npy", ids=tmp_path / "ids.txt")
    assert list(ids) == ["a", "b", "c"] and vec.shape == (3, 2)
    with pytest.raises(InputDataError, match="give its ids"):
        read_embeddings(tmp_path / "e.npy")
    (tmp_path / "ids2.txt").write_text("a\n")
    with pytest.raises(InputDataError, match=r"shape \(3, 2\) but 1 ids"):
        read_embeddings(tmp_path / "e.npy", ids=tmp_path / "ids2.txt")
    pd.DataFrame({"speaker_id": ["a", "b"], "embedding": [[1.0, 2.0], [3.0, 4.0]]}).to_parquet(
        tmp_path / "e.parquet")
    ids, vec = read_embeddings(tmp_path / "e.parquet")
    assert vec.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(InputDataError, match="NaN"):
        read_embeddings(pd.DataFrame({"speaker_id": ["a"], "x": [np.nan]}))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="nope.csv"):
        read_results(tmp_path / "nope.csv")
