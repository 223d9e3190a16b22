"""The Dask engine gives the in-memory engine's audit, from partitioned Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("dask.distributed")

from fairstream.audit.dask_engine import (  # noqa: E402
    _merge,
    _partials_to_sums,
    _partition_partial,
    dask_speaker_sums,
    expand_results,
)
from fairstream.audit.inputs import ColumnMap, read_results  # noqa: E402
from fairstream.audit.speaker_stats import speaker_sums  # noqa: E402
from fairstream.audit.synthetic import make_synthetic_audit  # noqa: E402
from fairstream.cli import main  # noqa: E402
from fairstream.errors import InputDataError  # noqa: E402

N_FILES = 4


def _rows() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    syn = make_synthetic_audit(n_speakers=160, utts_per_speaker=6, seed=3, geo_factor=1.6)
    res = syn.results.merge(syn.speakers[["speaker_id", "accent"]], on="speaker_id")
    res = res.rename(columns={"accent": "dialect"})  # metadata passed through in the results
    res["duration"] = np.round(np.linspace(1.0, 4.0, len(res)), 3)
    res = res.sample(frac=1.0, random_state=0).reset_index(drop=True)  # speakers span files
    res.loc[5, "sub"] = -1  # excluded: negative count
    res.loc[9, "speaker_id"] = None  # excluded: no speaker
    res.loc[12, "dialect"] = "other"  # varies within a speaker
    res.loc[20, "dialect"] = None  # missing in one row
    res.loc[30, ["sub", "del", "hits", "n_ref_words"]] = 0  # empty reference
    return res, syn.speakers.drop(columns=["accent"]), syn.zip_demographics


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dask")
    res, speakers, zips = _rows()
    logs = d / "logs"
    logs.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(res)), N_FILES)):
        res.iloc[idx].to_parquet(logs / f"part-{i}.parquet", index=False)
    speakers.to_csv(d / "speakers.csv", index=False)
    zips.to_csv(d / "zips.csv", index=False)
    return {"dir": d, "logs": logs}


def _audit(paths: dict[str, Path], out: str, *extra: str) -> dict[str, object]:
    d = paths["dir"]
    r = CliRunner().invoke(main, [
        "audit", "--results", str(paths["logs"] / "*.parquet"), "--speakers",
        str(d / "speakers.csv"), "--zip-demographics", str(d / "zips.csv"),
        "--methods", "attribute:dialect,attribute:gender,geo,geodemo", "--n-boot", "200",
        "--out", str(d / out), "--no-progress", *extra,
    ])
    assert r.exit_code == 0, r.output
    report: dict[str, object] = json.loads((d / out / "report.json").read_text())
    return report


@pytest.fixture(scope="module")
def reports(partitioned: dict[str, Path]) -> tuple[dict[str, object], dict[str, object]]:
    memory = _audit(partitioned, "memory")
    dask = _audit(partitioned, "dask", "--engine", "dask", "--workers", "2")
    return memory, dask


def test_engines_write_the_same_report(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    memory, dask = reports
    prov_m, prov_d = memory.pop("provenance"), dask.pop("provenance")
    assert isinstance(prov_d, dict) and isinstance(prov_m, dict)
    assert prov_d["engine"]["engine"] == "dask" and prov_d["engine"]["files"] == N_FILES
    assert prov_d["engine"]["workers"] == 2
    assert prov_m["engine"] == {"engine": "memory"}
    for key in ("rows_read", "rows_used"):
        assert prov_d["results"][key] == prov_m["results"][key]
    assert prov_d["n_speakers"] == prov_m["n_speakers"]
    # the one difference besides provenance: the Dask engine says how far it looked for
    # repeated utterance ids
    notes_d = [n for n in dask.pop("notes") if "within each file" not in n]  # type: ignore[attr-defined]
    assert notes_d == memory.pop("notes")
    assert any("varies within" in n for n in notes_d)
    assert any("empty reference" in n for n in notes_d)
    assert dask == memory  # methods, cohorts, intervals, p-values, exclusions, privacy: exact


def test_exclusions_are_counted_not_lost(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    _, dask = reports
    reasons = {x["reason"]: x["count"] for x in dask["exclusions"]}  # type: ignore[attr-defined]
    assert reasons["missing speaker id"] == 1
    assert reasons["error counts missing, negative or not integers"] == 1


def test_sums_equal_in_memory_sums(partitioned: dict[str, Path]) -> None:
    files = expand_results(partitioned["logs"])
    assert [f.name for f in files] == [f"part-{i}.parquet" for i in range(N_FILES)]
    frames = [pd.read_parquet(f) for f in files]
    expected = speaker_sums(read_results(pd.concat(frames, ignore_index=True)))
    meta = ("dialect",)
    offsets = np.cumsum([0] + [len(f) for f in frames])
    parts = [_partition_partial(f, i, int(offsets[i]), str(files[i]), ColumnMap(), "error",
                                False, meta) for i, f in enumerate(frames)]
    # merged in a different tree shape: same result
    merged = _merge([_merge(parts[:3], meta), _merge(parts[3:], meta)], meta)
    got = _partials_to_sums(merged, meta, "test", {"engine": "test"})
    pd.testing.assert_frame_equal(got.table, expected.table, check_dtype=False)
    assert got.varying == expected.varying
    assert got.n_rows_read == expected.n_rows_read and got.n_rows_used == expected.n_rows_used
    assert [(x.reason, x.count, x.examples) for x in got.exclusions] == [
        (x.reason, x.count, x.examples) for x in expected.exclusions]


def test_first_value_is_the_first_row_even_when_missing(tmp_path: Path) -> None:
    a = pd.DataFrame({"utt_id": ["u1", "u2"], "speaker_id": ["s", "t"], "sub": [0, 1],
                      "del": [0, 0], "ins": [0, 0], "hits": [3, 2], "dialect": [None, "y"]})
    b = pd.DataFrame({"utt_id": ["u3", "u4"], "speaker_id": ["s", "t"], "sub": [1, 0],
                      "del": [0, 0], "ins": [1, 0], "hits": [2, 3], "dialect": ["x", "y"]})
    meta = ("dialect",)
    parts = [_partition_partial(df, i, 2 * i, f"f{i}", ColumnMap(), "error", False, meta)
             for i, df in enumerate([a, b])]
    got = _partials_to_sums(_merge(parts[::-1], meta), meta, "test", {})
    expected = speaker_sums(read_results(pd.concat([a, b], ignore_index=True)))
    pd.testing.assert_frame_equal(got.table, expected.table, check_dtype=False)
    assert got.varying == expected.varying == {"dialect": 1}


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="no Parquet file matches"):
        expand_results(str(tmp_path / "nothing-*.parquet"))
    (tmp_path / "a.csv").write_text("x\n1\n")
    with pytest.raises(InputDataError, match="a.csv"):
        expand_results(str(tmp_path / "a.*"))
    good = pd.DataFrame({"utt_id": ["u1"], "speaker_id": ["s"], "sub": [0], "del": [0],
                         "ins": [0], "hits": [1]})
    good.to_parquet(tmp_path / "p0.parquet", index=False)
    good.drop(columns=["ins"]).to_parquet(tmp_path / "p1.parquet", index=False)
    with pytest.raises(InputDataError, match="p1.parquet"):
        dask_speaker_sums(str(tmp_path / "p*.parquet"), n_workers=1)
    (tmp_path / "p2.parquet").write_bytes(b"not parquet")
    (tmp_path / "p1.parquet").unlink()
    with pytest.raises(InputDataError, match="p2.parquet"):
        dask_speaker_sums(str(tmp_path / "p*.parquet"), n_workers=1)


def test_cli_refuses_dask_without_parquet_results(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["audit", "--trn-ref", __file__, "--trn-hyp", __file__,
                                  "--engine", "dask", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--engine dask reads Parquet results" in r.output
    r = CliRunner().invoke(main, ["audit", "--results", str(tmp_path / "x.csv"),
                                  "--workers", "2", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--engine dask" in r.output


def test_text_columns_are_scored_inside_the_partitions() -> None:
    refs = ["the cat sat", "a b c d", "hello world", "", "one two"]
    hyps = ["the cat sat down", "a c d", None, "noise", "one too"]
    df = pd.DataFrame({"utt_id": [f"u{i}" for i in range(5)],
                       "speaker_id": ["s1", "s2", "s1", "s3", "s2"], "ref": refs, "hyp": hyps})
    parts = [_partition_partial(df.iloc[:2], 0, 0, "f0", ColumnMap(), "error", False, ()),
             _partition_partial(df.iloc[2:].reset_index(drop=True), 1, 2, "f1", ColumnMap(),
                                "error", False, ())]
    got = _partials_to_sums(_merge(parts, ()), (), "test", {})
    expected = speaker_sums(read_results(df))
    pd.testing.assert_frame_equal(got.table, expected.table, check_dtype=False)
    assert sorted(got.notes[:-1]) == sorted(expected.notes)  # counts in notes are summed
    assert got.table.loc["s1", "del"] == 2  # the missing hypothesis: all words deleted
