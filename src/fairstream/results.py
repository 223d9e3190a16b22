"""The results table: what a row is, its columns, and how it is written and read.

One row per **scored unit**:

* single-talker data: one utterance;
* multi-talker sessions: one (session, reference speaker) pair, whose error counts come from
  the cpWER assignment of hypothesis streams to reference speakers. ``utt_id`` then names the
  pair (for example ``<session_id>/<speaker_id>``) and stays unique.

Columns, in order: :data:`RESULT_COLUMNS` (always), :data:`METADATA_COLUMNS` (speaker metadata,
``None`` where unknown), then any other column (more speaker metadata, the optional
:data:`SESSION_COLUMNS` ``session_id, channel, start, end`` for sessions). Texts are
normalized; ``n_ref_words = hits + sub + del``; corpus and group WER are Σerrors / Σwords.

Tables are Parquet files. Their metadata holds the writer's config (JSON, key
``fairstream``) and the schema version (key ``fairstream.results_version``). A table without
a version was written before versions existed; it has the version-1 columns and reads as
version 1. A newer or unknown version is a :class:`ResultsVersionError`.

This module imports neither torch nor the decoders, so the audit can read tables written by
any recognizer without them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairstream._io import atomic_path
from fairstream.errors import InputDataError

__all__ = [
    "METADATA_COLUMNS",
    "RESULTS_SCHEMA_VERSION",
    "RESULT_COLUMNS",
    "SESSION_COLUMNS",
    "ResultsVersionError",
    "order_columns",
    "read_results",
    "results_version",
    "stored_config",
    "write_results",
]

#: Version of the table layout this fairstream writes (and the newest it reads).
RESULTS_SCHEMA_VERSION = 1
#: Columns every results table has, in order.
RESULT_COLUMNS = ["utt_id", "speaker_id", "ref", "hyp", "n_ref_words", "sub", "del", "ins",
                  "hits", "duration", "timestamps"]
#: Speaker metadata columns passed through when known (``None`` otherwise).
METADATA_COLUMNS = ["accent", "gender", "age_band", "lat", "lon", "zip", "split"]
#: Optional columns of multi-talker rows: the session, the channel the hypothesis came from,
#: and the reference speaker's first start and last end in the session (seconds).
SESSION_COLUMNS = ["session_id", "channel", "start", "end"]

_CONFIG_KEY = b"fairstream"
_VERSION_KEY = b"fairstream.results_version"


class ResultsVersionError(InputDataError):
    """A results table was written with a schema version this fairstream does not read."""


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the required columns first, metadata next (added as ``None`` where
    missing), then every other column; zip codes as 5-character strings.

    Raises:
        InputDataError: a required column is missing (named).
    """
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing and not df.empty:
        raise InputDataError(f"results table lacks required column(s) {missing}")
    df = df.copy() if not df.empty else pd.DataFrame(columns=RESULT_COLUMNS)
    for col in METADATA_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df["zip"] = df["zip"].map(lambda z: None if z is None or pd.isna(z) else str(z).zfill(5))
    known = RESULT_COLUMNS + METADATA_COLUMNS
    extra = [c for c in df.columns if c not in known]
    return df[known + extra].reset_index(drop=True)


def write_results(df: pd.DataFrame, path: str | os.PathLike[str],
                  config: Mapping[str, object] | None = None) -> Path:
    """Write the results table as Parquet (atomically) with ``config`` (JSON) and the schema
    version in its metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_CONFIG_KEY] = json.dumps(dict(config or {}), sort_keys=True).encode()
    meta[_VERSION_KEY] = str(RESULTS_SCHEMA_VERSION).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def results_version(metadata: Mapping[bytes, bytes] | None, source: object = "table") -> int:
    """The schema version in a table's Parquet metadata (1 when it has none).

    Raises:
        ResultsVersionError: the version is not an integer this fairstream reads.
    """
    raw = (metadata or {}).get(_VERSION_KEY)
    if raw is None:
        return 1
    try:
        version = int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        version = -1
    if not 1 <= version <= RESULTS_SCHEMA_VERSION:
        shown = raw.decode(errors="replace")
        raise ResultsVersionError(
            f"results table {source} has schema version {shown!r}; this fairstream reads "
            f"versions 1 to {RESULTS_SCHEMA_VERSION} (upgrade fairstream to read it)"
        )
    return version


def stored_config(metadata: Mapping[bytes, bytes] | None) -> object | None:
    """The writer's config in a table's Parquet metadata (parsed JSON; None when absent)."""
    raw = (metadata or {}).get(_CONFIG_KEY)
    return json.loads(raw) if raw else None


# Any: the stored JSON config
def read_results(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a results table and the config stored with it.

    Raises:
        InputDataError: the file is missing or not Parquet.
        ResultsVersionError: it was written with a newer or unknown schema version.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputDataError(f"cannot read results table {path}: {exc}") from exc
    meta = table.schema.metadata or {}
    results_version(meta, path)
    try:
        config = json.loads(meta.get(_CONFIG_KEY, b"{}"))
    except ValueError as exc:
        raise InputDataError(f"results table {path}: unreadable config metadata: {exc}") from exc
    if not isinstance(config, dict):
        raise InputDataError(
            f"results table {path}: config metadata is {type(config).__name__}, not a JSON object"
        )
    return table.to_pandas(), config
