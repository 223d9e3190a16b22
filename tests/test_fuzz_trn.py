"""Fuzzing the sclite ``trn`` reader (fairstream.audit.inputs.read_trn)."""

from __future__ import annotations

from _fuzz import (
    FUZZ,
    ident,
    parses_or_fails_cleanly,
    random_or_mutated,
    rows_accounted_for,
    scratch_dir,
    word_text,
)
from hypothesis import given
from hypothesis import strategies as st

from fairstream.audit.inputs import read_trn

trn_line = st.tuples(word_text, ident, ident).map(lambda r: f"{r[0]} ({r[1]}-{r[2]})")
trn_file = st.lists(trn_line, max_size=6).map(
    lambda rows: "\n".join(rows).encode("utf-8")).flatmap(random_or_mutated)


@FUZZ
@given(trn_file, trn_file)
def test_trn_pairs_parse_or_name_the_line(ref: bytes, hyp: bytes) -> None:
    with scratch_dir() as d:
        (d / "ref.trn").write_bytes(ref)
        (d / "hyp.trn").write_bytes(hyp)
        table = parses_or_fails_cleanly(lambda: read_trn(d / "ref.trn", d / "hyp.trn"),
                                        ["ref.trn", "hyp.trn"])
    if table is not None:
        rows_accounted_for(table)
        assert (table.utterances["utt_id"].str.len() > 0).all()
