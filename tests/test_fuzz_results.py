"""Fuzzing the results-table readers: the audit's ``read_results`` / ``read_table`` (CSV, TSV,
JSONL, Parquet; renamed columns through ``ColumnMap``) and ``fairstream.results.read_results``
(the Parquet table ``fairstream decode`` writes)."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from _fuzz import (
    FUZZ,
    cut_or_random,
    ident,
    mostly,
    mutated,
    nasty_text,
    parses_or_fails_cleanly,
    read_written,
    rows_accounted_for,
    scratch_dir,
    word_text,
)
from hypothesis import given
from hypothesis import strategies as st

from fairstream.audit.inputs import COUNT_COLUMNS, ColumnMap, read_results, read_table
from fairstream.results import read_results as read_results_parquet
from fairstream.results import write_results

count = mostly(st.integers(0, 30), st.one_of(st.integers(-5, 10**20), nasty_text, st.none(),
                                             st.floats(allow_nan=True, allow_infinity=True)))
cell = mostly(ident, st.one_of(nasty_text, st.none(), st.integers(-3, 3)))


@st.composite
def results_rows(draw: st.DrawFn) -> tuple[list[dict[str, object]], bool]:
    """Rows with ids and either error counts or texts; ids may repeat or be missing."""
    with_counts = draw(st.booleans())
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        row: dict[str, object] = {"utt_id": draw(st.one_of(ident, cell)),
                                  "speaker_id": draw(st.one_of(ident, cell))}
        if with_counts:
            for c in ("sub", "del", "ins", draw(st.sampled_from(["hits", "n_ref_words"]))):
                row[c] = draw(count)
        else:
            row["ref"] = draw(st.one_of(word_text, cell))
            row["hyp"] = draw(st.one_of(word_text, cell))
        if draw(st.booleans()):
            row["gender"] = draw(cell)
        rows.append(row)
    return rows, with_counts


def _text_table(rows: list[dict[str, object]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "\n".join(json.dumps(r) for r in rows).encode("utf-8")
    frame = pd.DataFrame(rows)
    return frame.to_csv(index=False, sep="\t" if fmt == "tsv" else ",",
                        quoting=csv.QUOTE_ALL).encode("utf-8")  # a lone "\r" ends a row


def _parquet(rows: list[dict[str, object]]) -> bytes:
    frame = pd.DataFrame(rows).astype("string") if rows else pd.DataFrame({"utt_id": []})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    return buf.getvalue()


@st.composite
def results_file(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str], int | None]:
    rows, _ = draw(results_rows())
    renames = {c: f"{c}_x" for c in ("utt_id", "speaker_id", "sub", "hyp") if draw(st.booleans())}
    rows = [{renames.get(k, k): v for k, v in r.items()} for r in rows]
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl", "parquet", "csv.gz"]))
    if fmt == "csv.gz":
        valid = gzip.compress(_text_table(rows, "csv"), mtime=0)
    else:
        valid = _parquet(rows) if fmt == "parquet" else _text_table(rows, fmt)
    if fmt in ("parquet", "csv.gz"):
        content = draw(mostly(st.just(valid), cut_or_random(valid)))
    else:
        content = draw(mostly(st.just(valid), mutated(valid)))
    return fmt, content, renames, len(rows) if content == valid else None


@FUZZ
@given(results_file(), st.sampled_from(["error", "first"]), st.booleans())
def test_results_tables_parse_or_name_the_file(
    case: tuple[str, bytes, dict[str, str], int | None], duplicates: str, rescore: bool,
) -> None:
    fmt, content, renames, n_rows = case
    cm = ColumnMap.from_pairs([f"{'deletions' if k == 'del' else k}={v}"
                               for k, v in renames.items()])
    with scratch_dir() as d:
        path = d / f"results.{fmt}"
        path.write_bytes(content)
        table = parses_or_fails_cleanly(
            lambda: read_results(path, columns=cm, duplicates=duplicates,  # type: ignore[arg-type]
                                 rescore=rescore), [path])
        parses_or_fails_cleanly(lambda: read_table(path), [path])
    if table is None:
        return
    rows_accounted_for(table)
    if n_rows is not None:  # an uncorrupted file: every row is read
        assert table.n_rows_read == n_rows
    counts = table.utterances[list(COUNT_COLUMNS)]
    assert (counts >= 0).all().all(), counts


@st.composite
def decode_table(draw: st.DrawFn) -> bytes:
    """A ``fairstream decode`` table (as write_results writes it), maybe cut or re-tagged."""
    frame = pd.DataFrame({
        "utt_id": ["u1"], "speaker_id": ["s1"], "ref": ["a b"], "hyp": ["a"],
        "n_ref_words": [2], "sub": [0], "del": [1], "ins": [0], "hits": [1],
        "duration": [1.0], "timestamps": [None],
    })
    with scratch_dir() as d:
        write_results(frame, d / "t.parquet", config={"x": 1})
        table = pq.read_table(d / "t.parquet")
    meta = dict(table.schema.metadata)
    altered = mostly(st.just(False), st.just(True))
    if draw(altered):
        meta[b"fairstream.results_version"] = draw(st.binary(max_size=6))
    if draw(altered):
        meta[b"fairstream"] = draw(st.one_of(st.binary(max_size=10),
                                             st.sampled_from([b"[1]", b"3", b"null", b"{}"])))
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    data = buf.getvalue()
    return draw(mostly(st.just(data), cut_or_random(data)))


@FUZZ
@given(decode_table())
def test_decode_tables_read_or_name_the_file(content: bytes) -> None:
    out = read_written(read_results_parquet, "results.parquet", content)
    table = read_written(read_results, "results.parquet", content)
    if out is not None:
        assert isinstance(out[1], dict)
    if table is not None:
        rows_accounted_for(table)
