"""The audit's reduction on Dask: per-speaker sums of partitioned results, where they live.

Every audit method works on per-speaker sufficient statistics
(:class:`~fairstream.audit.speaker_stats.SpeakerSums`), so auditing billions of utterance
rows is a group-by-sum followed by the unchanged in-memory audit on one row per speaker. This
module does the group-by-sum with Dask: the Parquet files are read lazily as one Dask
DataFrame partition each (``dask.dataframe.from_map``), every partition is validated and
scored by exactly the code the in-memory engine runs (the rules of
:func:`fairstream.audit.inputs.read_results`: ids, counts, texts scored when counts are
absent), reduced to per-speaker partial sums with Arrow's
hash aggregation, and the partials are merged in a tree (``split_every`` at a time) on the
workers of a ``dask.distributed`` cluster — a ``LocalCluster`` on this machine when no
scheduler address is given. Only the merged per-speaker table comes back to the client.

What scales with what:

- rows: read and reduced on the workers, partition by partition; the client never holds
  them, so its memory does not grow with the rows;
- speakers: the merged table (about 60 bytes per speaker, plus metadata passed through in
  the results) and the bootstrap weights of the audit after it (1 byte per speaker and
  replicate, :class:`~fairstream.metrics.bootstrap.SpeakerBootstrap`).

Same numbers as the in-memory engine: speakers come out in sorted id order (the order the
bootstrap weights are drawn for), exclusions and notes are summed over partitions, and the
metadata passed through in the results is the first value per speaker in file order.
Repeated utterance ids are found within each file; across files they are not looked for
(that would need every id in one place) — the report says so.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fairstream.audit.inputs import ColumnMap, Duplicates, Exclusion, _results_from_frame
from fairstream.audit.speaker_stats import SpeakerSums, passthrough_columns
from fairstream.errors import InputDataError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["dask_speaker_sums", "expand_results"]

logger = logging.getLogger(__name__)

# Arrow's hash aggregation warns (on stderr, per call) about numpy buffers that are 8- rather
# than 64-byte aligned; it handles them correctly, so the warning is noise here.
os.environ.setdefault("ACERO_ALIGNMENT_HANDLING", "ignore")

_STATS = ("n_utterances", "sub", "del", "ins", "hits")
# exclusions whose examples are row numbers (offset by the rows of the earlier files)
_ROW_EXAMPLES = ("missing utterance id", "missing speaker id")
_NOTE_COUNT = re.compile(r"^(\d+) (.*)$", re.DOTALL)
# the order in which the in-memory reader checks rows (its exclusions come in this order)
_REASON_ORDER = ("missing utterance id", "missing speaker id", "error counts", "missing reference",
                 "duplicate")
_FILE_ONLY_NOTE = ("repeated utterance ids were looked for within each file, not across files "
                   "(Dask engine)")


def expand_results(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The Parquet files of ``source``: a file, a directory (every ``*.parquet`` below it,
    e.g. hive-style ``date=.../part-0.parquet``), a glob pattern such as
    ``'logs/*.parquet'``, or a list of these; sorted, without repeats.

    Raises:
        InputDataError: nothing matches, or a match is not a Parquet file.
    """
    items = [source] if isinstance(source, (str, Path)) else list(source)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*")
                           if q.is_file() and q.suffix in {".parquet", ".pq"})
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True)
                           if Path(q).is_file())
        if not found:
            raise InputDataError(f"no Parquet file matches {str(item)!r}")
        bad = [q for q in found if q.suffix not in {".parquet", ".pq"}]
        if bad:
            raise InputDataError(f"{bad[0]} (matched by {str(item)!r}) is not a .parquet file; "
                                 "the Dask engine reads Parquet only")
        files += found
    return sorted(dict.fromkeys(files))


@dataclass(frozen=True)
class _Partial:
    """Per-speaker partial sums of some files (an Arrow table) and what they excluded."""

    table: pa.Table
    rows_read: int
    rows_used: int
    exclusions: tuple[Exclusion, ...]
    notes: tuple[str, ...]


def _meta_names(j: int) -> tuple[str, str, str, str, str, str]:
    return (f"m{j}_key", f"m{j}_first", f"m{j}_min", f"m{j}_max", f"m{j}_nulls",
            f"m{j}_valid")


def _arrow(values: pd.Series | np.ndarray, path: str, column: str) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputDataError(f"{path}: column {column!r} mixes value types that cannot be "
                             f"summarized per speaker ({exc})") from exc


def _partition_partial(
    df: pd.DataFrame, index: int, row_offset: int, path: str, columns: ColumnMap,
    duplicates: Duplicates, rescore: bool, meta: tuple[str, ...],
) -> _Partial:
    """Validate and score one file with the in-memory engine's rules, then sum per speaker."""
    import pyarrow as pa

    res = _results_from_frame(df.reset_index(drop=True), columns, path,
                              duplicates=duplicates, rescore=rescore)
    utt = res.utterances
    exclusions = tuple(
        Exclusion(x.stage, x.reason, x.count, x.unit,
                  tuple(str(int(e) + row_offset) for e in x.examples))
        if x.reason in _ROW_EXAMPLES else x for x in res.exclusions
    )
    n = len(utt)
    cols: dict[str, Any] = {
        "speaker_id": pa.array(utt["speaker_id"].to_numpy(dtype=object), pa.string()),
        "n_utterances": pa.array(np.ones(n, dtype=np.int64)),
    }
    for c in _STATS[1:]:
        cols[c] = pa.array(utt[c].to_numpy(np.int64))
    if "duration" in utt.columns:
        dur = pd.to_numeric(utt["duration"], errors="coerce").astype("float64").fillna(0.0)
        cols["duration"] = pa.array(dur.to_numpy())
    table = pa.table(cols)
    aggs = [(c, "sum") for c in cols if c != "speaker_id"]
    out = table.group_by("speaker_id").aggregate(aggs)
    out = out.rename_columns([c[:-4] if c.endswith("_sum") else c for c in out.column_names])
    if meta:
        first = ~utt["speaker_id"].duplicated(keep="first").to_numpy()
        rows = np.nonzero(first)[0]
        firsts: dict[str, Any] = {"speaker_id": cols["speaker_id"].take(pa.array(rows))}
        spread: dict[str, Any] = {"speaker_id": cols["speaker_id"]}
        for j, c in enumerate(meta):
            key, first_v, lo, hi, nulls, valid = _meta_names(j)
            values = _arrow(utt[c].to_numpy(), path, c)
            firsts[key] = pa.array((np.int64(index) << 32) + rows.astype(np.int64))
            firsts[first_v] = values.take(pa.array(rows))
            spread[lo] = values
            spread[f"m{j}_isnull"] = pa.array(values.is_null().to_numpy(zero_copy_only=False)
                                              .astype(np.int64))
        st = pa.table(spread).group_by("speaker_id").aggregate(
            [a for j in range(len(meta)) for a in (
                (f"m{j}_min", "min"), (f"m{j}_min", "max"), (f"m{j}_min", "count"),
                (f"m{j}_isnull", "sum"))])
        renamed = []
        for name in st.column_names:
            m = re.fullmatch(r"m(\d+)_(min|isnull)_(min|max|count|sum)", name)
            if m is None:
                renamed.append(name)
                continue
            j, what = int(m.group(1)), m.group(3)
            renamed.append({"min": f"m{j}_min", "max": f"m{j}_max", "count": f"m{j}_valid",
                            "sum": f"m{j}_nulls"}[what])
        st = st.rename_columns(renamed)
        out = out.join(pa.table(firsts), "speaker_id").join(st, "speaker_id")
    return _Partial(table=_ordered(out, meta), rows_read=res.n_rows_read, rows_used=n,
                    exclusions=exclusions, notes=res.notes)


def _ordered(table: pa.Table, meta: tuple[str, ...]) -> pa.Table:
    names = ["speaker_id", *_STATS]
    if "duration" in table.column_names:
        names.append("duration")
    for j in range(len(meta)):
        names += list(_meta_names(j))
    # one chunk per column: Acero's output chunks are slices of larger buffers, and a slice
    # pickles (to the next Dask task) with its whole buffer
    return table.select(names).combine_chunks()


def _merge(parts: list[_Partial], meta: tuple[str, ...]) -> _Partial:
    """Merge partial sums: counts add; per metadata column the value of the earliest row
    wins, and min, max, null and valid counts combine."""
    import pyarrow as pa

    try:
        table = pa.concat_tables([p.table for p in parts], promote_options="permissive")
    except pa.ArrowException as exc:
        raise InputDataError(f"the results files disagree on a column's type: {exc}") from exc
    aggs: list[tuple[str, str]] = [(c, "sum") for c in _STATS]
    if "duration" in table.column_names:
        aggs.append(("duration", "sum"))
    for j in range(len(meta)):
        key, _, lo, hi, nulls, valid = _meta_names(j)
        aggs += [(key, "min"), (lo, "min"), (hi, "max"), (nulls, "sum"), (valid, "sum")]
    out = table.group_by("speaker_id").aggregate(aggs)
    out = out.rename_columns([re.sub(r"_(sum|min|max)$", "", c) for c in out.column_names])
    for j in range(len(meta)):
        key, first_v = _meta_names(j)[:2]
        out = out.join(table.select(["speaker_id", key, first_v]), ["speaker_id", key])
    return _Partial(
        table=_ordered(out, meta),
        rows_read=sum(p.rows_read for p in parts), rows_used=sum(p.rows_used for p in parts),
        exclusions=_merge_exclusions([x for p in parts for x in p.exclusions]),
        notes=_merge_notes([n for p in parts for n in p.notes]),
    )


def _merge_exclusions(items: list[Exclusion]) -> tuple[Exclusion, ...]:
    merged: dict[tuple[str, str, str], Exclusion] = {}
    for x in items:
        k = (x.stage, x.reason, x.unit)
        if k in merged:
            m = merged[k]
            merged[k] = Exclusion(m.stage, m.reason, m.count + x.count, m.unit,
                                  (m.examples + x.examples)[:5])
        else:
            merged[k] = x
    def rank(x: Exclusion) -> int:
        return next((i for i, r in enumerate(_REASON_ORDER) if x.reason.startswith(r)),
                    len(_REASON_ORDER))

    return tuple(sorted(merged.values(), key=rank))


def _merge_notes(notes: list[str]) -> tuple[str, ...]:
    """Notes that start with a count ("3 utterances have ...") are summed per text."""
    counted: dict[str, int] = {}
    other: list[str] = []
    for n in notes:
        m = _NOTE_COUNT.match(n)
        if m is None:
            other.append(n)
        else:
            counted[m.group(2)] = counted.get(m.group(2), 0) + int(m.group(1))
    return tuple([f"{v} {k}" for k, v in counted.items()] + list(dict.fromkeys(other)))


def _check_schemas(files: list[Path]) -> tuple[list[str], list[int]]:
    """Columns (of the first file) and row counts; every file must have the same columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fairstream.results import results_version

    names: list[str] | None = None
    rows: list[int] = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as exc:
            raise InputDataError(f"cannot read {f} as Parquet: {exc}") from exc
        results_version(pf.schema_arrow.metadata, f)  # our own tables: a newer schema refused
        cols = [n for n in pf.schema_arrow.names if not n.startswith("__index_level_")]
        if names is None:
            names = cols
        elif set(cols) != set(names):
            raise InputDataError(f"{f} has columns {cols}, but {files[0]} has {names}: the "
                                 "files of one results table need the same columns")
        rows.append(pf.metadata.num_rows)
    assert names is not None
    return names, rows


def _metadata_columns(files: list[Path], names: list[str], columns: ColumnMap) -> tuple[str, ...]:
    """The passed-through metadata columns: not a results field, not a nested type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    mapped = {columns.utt_id, columns.speaker_id, columns.ref, columns.hyp, columns.sub,
              columns.deletions, columns.ins, columns.hits, columns.n_ref_words}
    keep = []
    for c in passthrough_columns([n for n in names if n not in mapped]):
        t = schema.field(c).type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            continue
        keep.append(c)
    return tuple(keep)


def _partials_to_sums(final: _Partial, meta: tuple[str, ...], source: str,
                      engine: dict[str, object]) -> SpeakerSums:
    t = final.table.sort_by("speaker_id")
    index = pd.Index(t.column("speaker_id").to_numpy(zero_copy_only=False).astype(object),
                     name="speaker_id", dtype=object)
    table = pd.DataFrame(index=index)
    for c in _STATS:
        table[c] = t.column(c).to_numpy().astype(np.int64)
    if "duration" in t.column_names:
        table["duration"] = t.column("duration").to_numpy().astype(np.float64)
    varying: dict[str, int] = {}
    for j, c in enumerate(meta):
        _, first_v, lo, hi, nulls, valid = _meta_names(j)
        table[c] = t.column(first_v).to_pandas().to_numpy()
        differ = np.asarray(t.column(lo).to_pylist(), dtype=object) != np.asarray(
            t.column(hi).to_pylist(), dtype=object)
        mixed = (t.column(nulls).to_numpy() > 0) & (t.column(valid).to_numpy() > 0)
        varying[c] = int((differ | mixed).sum())
    return SpeakerSums(table=table, source=source, n_rows_read=final.rows_read,
                       n_rows_used=final.rows_used, varying=varying,
                       exclusions=final.exclusions,
                       notes=(*final.notes, _FILE_ONLY_NOTE), engine=engine)


def dask_speaker_sums(
    source: str | Path | Sequence[str | Path],
    *,
    columns: ColumnMap | None = None,
    duplicates: Duplicates = "error",
    rescore: bool = False,
    scheduler: str | None = None,
    n_workers: int | None = None,
    split_every: int = 8,
    progress: bool = False,
) -> SpeakerSums:
    """Per-speaker sums of a partitioned Parquet results table, computed on Dask.

    Args:
        source: Parquet files: a glob such as ``'logs/*.parquet'``, a directory, a file, or
            a list (:func:`expand_results`). Each file is one Dask partition.
        columns: column names (:class:`~fairstream.audit.inputs.ColumnMap`).
        duplicates: repeated utterance ids within a file: "error" or "first".
        rescore: score ``ref``/``hyp`` even when count columns are present.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); None starts a
            ``LocalCluster`` of ``n_workers`` single-threaded worker processes for this call.
        n_workers: workers of the local cluster (default: the CPU count).
        split_every: partials merged per task of the reduction tree.
        progress: show Dask's progress bar.

    Returns:
        :class:`~fairstream.audit.speaker_stats.SpeakerSums` for
        :func:`~fairstream.audit.api.run_audit`.

    Raises:
        MissingDependencyError: Dask is not installed (``pip install 'fairstream[scale]'``).
        InputDataError: unreadable or inconsistent files, or bad rows as in the in-memory
            engine (the message names the file).
    """
    try:
        import dask
        import dask.dataframe as dd
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise MissingDependencyError("the Dask audit engine (--engine dask)", "scale",
                                     exc.name or "dask") from exc
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    cm = columns or ColumnMap()
    files = expand_results(source)
    names, rows = _check_schemas(files)
    meta = _metadata_columns(files, names, cm)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    desc = (f"{files[0]} (parquet)" if len(files) == 1
            else f"{len(files)} Parquet files ({files[0]} … {files[-1]})")

    # a Dask DataFrame with one partition per file, each read as the in-memory engine reads
    # a file (same dtypes, so the same rules give the same rows)
    ddf = dd.from_map(pd.read_parquet, [str(f) for f in files],
                      label="read-results", enforce_metadata=False)
    parts = ddf.to_delayed()
    level = [
        dask.delayed(_partition_partial)(part, i, int(offsets[i]), str(files[i]), cm,
                                         duplicates, rescore, meta)
        for i, part in enumerate(parts)
    ]
    while len(level) > 1:
        level = [dask.delayed(_merge)(level[i:i + split_every], meta)
                 for i in range(0, len(level), split_every)]
    if len(files) == 1:
        level = [dask.delayed(_merge)(level, meta)]

    t0 = time.perf_counter()
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            future = client.compute(level[0])
            if progress:
                from dask.distributed import progress as show_progress

                show_progress(future)
            final: _Partial = future.result()
            n_live = len(client.scheduler_info().get("workers", {}))
    finally:
        if cluster is not None:
            cluster.close()
    logger.info("dask: %d files, %d rows, %d speakers", len(files), final.rows_read,
                final.table.num_rows)
    engine: dict[str, object] = {
        "engine": "dask", "scheduler": scheduler or "LocalCluster", "workers": n_live,
        "files": len(files), "split_every": split_every,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return _partials_to_sums(final, meta, desc, engine)
