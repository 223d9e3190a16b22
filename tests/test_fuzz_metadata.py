"""Fuzzing the audit's metadata readers: ``read_speakers`` (speakers.csv),
``read_zip_demographics`` and ``read_embeddings`` (.npy + ids, Parquet/CSV with an embedding
list column or one numeric column per dimension)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
from _fuzz import (
    FUZZ,
    cut_or_random,
    ident,
    mostly,
    nasty_text,
    parses_or_fails_cleanly,
    random_or_mutated,
    read_written,
    scratch_dir,
)
from hypothesis import given
from hypothesis import strategies as st

from fairstream.audit.geo_tree import valid_coordinates
from fairstream.audit.inputs import read_embeddings, read_speakers, read_zip_demographics

number = mostly(st.one_of(st.floats(-200, 200), st.none()),
                st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-10**20, 10**20), nasty_text))
zip_code = mostly(st.one_of(st.uuids().map(lambda u: str(u.int % 100000)), st.just("2139-1234")),
                  st.one_of(nasty_text, st.none()))


def _csv(rows: list[dict[str, object]]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8") if rows else b""


@st.composite
def table_csv(draw: st.DrawFn, columns: dict[str, st.SearchStrategy[object]]) -> bytes:
    """A CSV of up to 6 rows with these columns, maybe corrupted."""
    rows = [{c: draw(s) for c, s in columns.items()} for _ in range(draw(st.integers(0, 6)))]
    return draw(random_or_mutated(_csv(rows)))


speakers_csv = table_csv({
    "speaker_id": mostly(st.uuids().map(lambda u: u.hex[:8]),  # distinct ids, mostly
                         st.one_of(nasty_text, st.none(), ident)),
    "lat": number, "lon": number, "zip": zip_code,
    "gender": mostly(st.sampled_from(["female", "male"]), nasty_text)})
zip_csv = table_csv({"zip": zip_code, "median_income": number, "urban": nasty_text})


@FUZZ
@given(speakers_csv)
def test_speaker_tables_parse_or_name_the_row(content: bytes) -> None:
    table = read_written(read_speakers, "speakers.csv", content)
    if table is not None:
        assert table.index.is_unique and table.index.notna().all()
        if {"lat", "lon"} <= set(table.columns):  # what the geographic tree does with them
            valid_coordinates(table["lat"].to_numpy(np.float64),
                              table["lon"].to_numpy(np.float64))


@FUZZ
@given(zip_csv)
def test_zip_tables_parse_or_name_the_row(content: bytes) -> None:
    table = read_written(read_zip_demographics, "zip_demographics.csv", content)
    if table is not None:
        assert table.index.is_unique
        assert all(isinstance(z, str) and len(z) == 5 and z.isdigit() for z in table.index)


vector = mostly(st.lists(st.floats(-3, 3), min_size=2, max_size=2),
                st.lists(st.one_of(st.floats(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                                   nasty_text, st.none()), max_size=4))


@st.composite
def embedding_files(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    """(main file name, files): a .npy matrix with an id file, or a table."""
    n = draw(st.integers(0, 5))
    ids = [draw(mostly(ident, nasty_text)) for _ in range(n)]
    kind = draw(st.sampled_from(["npy", "parquet", "csv", "wide"]))
    if kind == "npy":
        dim = draw(st.integers(0, 3))
        special = st.floats(allow_nan=True, allow_infinity=True, width=32)
        dtype, cells = draw(mostly(
            st.sampled_from([("float32", mostly(st.floats(-3, 3, width=32), special)),
                             ("float64", mostly(st.floats(-3, 3), special))]),
            st.sampled_from([("int8", st.integers(-128, 127)), ("U3", st.text(max_size=3))])))
        mat = np.asarray(draw(st.lists(cells, min_size=n * dim, max_size=n * dim)), dtype=dtype)
        buf = io.BytesIO()
        np.save(buf, mat if draw(mostly(st.just(False), st.just(True))) else mat.reshape(n, dim))
        valid = buf.getvalue()
        id_file = "\n".join(ids).encode("utf-8")
        return "emb.npy", {
            "emb.npy": draw(mostly(st.just(valid), cut_or_random(valid))),
            "ids.txt": draw(random_or_mutated(id_file)),
        }
    if kind == "wide":
        rows = [{"speaker_id": i, **{f"d{j}": draw(number) for j in range(3)}} for i in ids]
        return "emb.csv", {"emb.csv": draw(random_or_mutated(_csv(rows)))}
    vectors = [draw(mostly(vector, st.none())) for _ in ids]
    if kind == "csv":
        rows = [{"speaker_id": i, "embedding": json.dumps(v)} for i, v in zip(ids, vectors)]
        return "emb.csv", {"emb.csv": draw(random_or_mutated(_csv(rows)))}
    frame = pd.DataFrame({"speaker_id": ids, "embedding": [
        None if v is None else [x if isinstance(x, float) else float("nan") for x in v]
        for v in vectors]})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    data = buf.getvalue()
    return "emb.parquet", {"emb.parquet": draw(mostly(st.just(data), cut_or_random(data)))}


@FUZZ
@given(embedding_files())
def test_embedding_files_parse_or_name_the_item(case: tuple[str, dict[str, bytes]]) -> None:
    main, files = case
    with scratch_dir() as d:
        for name, content in files.items():
            (d / name).write_bytes(content)
        ids = d / "ids.txt" if "ids.txt" in files else None
        out = parses_or_fails_cleanly(lambda: read_embeddings(d / main, ids=ids), list(files))
    if out is not None:
        got_ids, vectors = out
        assert vectors.dtype == np.float32 and vectors.ndim == 2
        assert len(got_ids) == len(vectors) and np.isfinite(vectors).all()
        assert all(isinstance(i, str) for i in got_ids)  # repeated ids: several vectors
