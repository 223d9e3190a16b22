"""The results table: schema version in the Parquet metadata, old tables, torch-free module."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fairstream.errors import InputDataError
from fairstream.results import (
    METADATA_COLUMNS,
    RESULT_COLUMNS,
    RESULTS_SCHEMA_VERSION,
    SESSION_COLUMNS,
    ResultsVersionError,
    order_columns,
    read_results,
    write_results,
)


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "utt_id": ["u1", "u2"], "speaker_id": ["a", "b"], "ref": ["x y", "z"],
        "hyp": ["x", "z"], "n_ref_words": [2, 1], "sub": [0, 0], "del": [1, 0], "ins": [0, 0],
        "hits": [1, 1], "duration": [1.0, 2.0], "timestamps": [[0.1], [0.2]],
        "accent": ["p", "q"], "zip": ["2139", None],
    })


def test_round_trip_stores_config_and_schema_version(tmp_path):
    path = write_results(order_columns(_table()), tmp_path / "r.parquet", {"decode": {"k": 1}})
    df, config = read_results(path)
    assert config == {"decode": {"k": 1}}
    assert list(df.columns) == RESULT_COLUMNS + METADATA_COLUMNS
    assert df["zip"].iloc[0] == "02139" and pd.isna(df["zip"].iloc[1])
    meta = pq.read_schema(path).metadata
    assert meta[b"fairstream.results_version"] == str(RESULTS_SCHEMA_VERSION).encode()
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]  # no temporary file left


def test_session_rows_keep_their_optional_columns_after_the_known_ones():
    rows = _table().assign(session_id=["s1", "s1"], channel=[0, 1], start=[0.0, 1.5],
                           end=[1.2, 3.0], utt_id=["s1/a", "s1/b"])
    df = order_columns(rows)
    assert list(df.columns) == RESULT_COLUMNS + METADATA_COLUMNS + SESSION_COLUMNS
    with pytest.raises(InputDataError, match=r"lacks required column\(s\) \['hits'\]"):
        order_columns(rows.drop(columns=["hits"]))


def test_a_table_written_before_versions_existed_still_reads(tmp_path):
    """The 0.1 writer stored only the config under b"fairstream"."""
    table = pa.Table.from_pandas(order_columns(_table()), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"fairstream"] = json.dumps({"decode": {"method": "greedy"}}).encode()
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "old.parquet")
    df, config = read_results(tmp_path / "old.parquet")
    assert len(df) == 2 and config["decode"]["method"] == "greedy"
    plain = tmp_path / "plain.parquet"  # another recognizer's table: no metadata at all
    _table().to_parquet(plain, index=False)
    assert read_results(plain)[1] == {}


@pytest.mark.parametrize("version", [str(RESULTS_SCHEMA_VERSION + 1), "two", "0"])
def test_a_newer_or_unknown_version_is_a_named_error(tmp_path, version):
    from fairstream.audit.inputs import read_results as audit_read_results

    table = pa.Table.from_pandas(_table(), preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"fairstream.results_version": version.encode()}
    path = tmp_path / "new.parquet"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(ResultsVersionError, match=f"schema version '{version}'"):
        read_results(path)
    with pytest.raises(ResultsVersionError, match="upgrade fairstream"):
        audit_read_results(path)  # the audit reads tables through the same module


def test_the_audit_reads_a_written_table(tmp_path):
    from fairstream.audit.inputs import read_results as audit_read_results

    path = write_results(order_columns(_table()), tmp_path / "r.parquet")
    t = audit_read_results(path)
    assert t.utterances["utt_id"].tolist() == ["u1", "u2"]
    assert t.utterances["del"].tolist() == [1, 0]


def test_the_results_module_does_not_need_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from fairstream.results import read_results, write_results
        import pandas as pd
        df = pd.DataFrame({{"utt_id": ["u"], "speaker_id": ["s"]}})
        write_results(df, {str(tmp_path / "t.parquet")!r}, {{"a": 1}})
        assert read_results({str(tmp_path / "t.parquet")!r})[1] == {{"a": 1}}
        assert not [m for m in sys.modules if m.startswith(("fairstream.training",
                                                            "fairstream.inference"))]
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
