"""Decoding one cut set in shards across processes (``torchrun``): who decodes what, the part
files each process writes, and how they are validated, awaited and merged into one table.

Layout, for ``--out results.parquet`` and ``N`` processes::

    results.parquet.parts/part-00000-of-0000N.parquet   rank 0's rows (a results table)
    results.parquet.parts/part-00000-of-0000N.alive     touched every few seconds while rank 0 runs
    results.parquet.parts/part-00000-of-0000N.failed    rank 0's error, when it failed

**Shard assignment.** The cuts are sorted longest first (ties by cut id) and dealt out
round-robin: rank ``r`` takes positions ``r, r + N, r + 2N, …``. Every cut is in exactly one
shard, shard sizes differ by at most one cut and shard durations by at most the longest cut,
and the assignment depends only on the cut ids, their durations and ``N``.

**Parts.** Each part is a results table written atomically. Its Parquet metadata (key
``fairstream``) holds, under ``part``, the rank, the number of parts, the cut ids of the
shard, the cut id of each row, the shard's skipped cuts, and a fingerprint of everything
that decides its rows (training config, decoding options, checkpoint and LM contents, the
shard's cuts, the speakers table). A part is reused only when all of these match.

**Merge.** Rows are put in cut-id order, the order a single process writes. Skipped cuts are
listed in the order a single process lists them (:func:`order_skipped`).

Nothing here imports torch; the functions are tested without ``torchrun``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairstream._io import atomic_write_text
from fairstream.errors import FairstreamError, InputDataError
from fairstream.results import read_results, stored_config, write_results

__all__ = [
    "HEARTBEAT_SECONDS",
    "PartSpec",
    "ShardEnv",
    "ShardError",
    "assign_shards",
    "failure_marks",
    "file_digest",
    "fingerprint",
    "heartbeat",
    "merge_parts",
    "order_skipped",
    "part_path",
    "part_problem",
    "parts_dir",
    "read_part",
    "remove_parts",
    "report_failure",
    "shard_env",
    "wait_for_parts",
    "write_part",
]

#: How often a running rank touches its ``.alive`` file.
HEARTBEAT_SECONDS = 5.0


class ShardError(FairstreamError, RuntimeError):
    """A shard's part is missing, failed or cannot be merged."""


@dataclass(frozen=True)
class ShardEnv:
    """This process's place in a ``torchrun`` launch."""

    rank: int
    world_size: int
    local_rank: int


def shard_env(environ: Mapping[str, str] | None = None) -> ShardEnv | None:
    """The rank and world size ``torchrun`` set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or
    None when none of them is set (a plain single-process run).

    Raises:
        InputDataError: a variable is set but not an integer, or RANK is not below
            WORLD_SIZE (named, with its value).
    """
    env = os.environ if environ is None else environ
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not any(n in env for n in names):
        return None
    values: dict[str, int] = {}
    for name in names:
        raw = env.get(name, "0" if name == "LOCAL_RANK" else None)
        if raw is None:
            raise InputDataError(f"environment variable {name} is not set (torchrun sets RANK, "
                                 "WORLD_SIZE and LOCAL_RANK together)")
        try:
            values[name] = int(raw)
        except ValueError:
            raise InputDataError(f"environment variable {name}={raw!r} is not an integer") \
                from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if world < 1 or not 0 <= rank < world:
        raise InputDataError(f"environment variable RANK={rank} is not in 0..WORLD_SIZE-1 "
                             f"(WORLD_SIZE={world})")
    return ShardEnv(rank, world, values["LOCAL_RANK"])


def assign_shards(durations: Mapping[str, float], world_size: int) -> list[list[str]]:
    """Cut ids of each of ``world_size`` shards, each sorted by id: longest first (ties by
    id), dealt round-robin."""
    if world_size < 1:
        raise InputDataError(f"cannot split cuts into {world_size} shards")
    ordered = sorted(durations, key=lambda cid: (-float(durations[cid]), cid))
    return [sorted(ordered[r::world_size]) for r in range(world_size)]


def fingerprint(obj: object) -> str:
    """SHA-256 of ``obj`` as canonical JSON (values JSON does not know are written as text)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PartSpec:
    """What one rank's part must hold to be reused: its place, its cuts, its fingerprint."""

    rank: int
    world_size: int
    cut_ids: tuple[str, ...]
    fingerprint: str

    @property
    def name(self) -> str:
        """File name of the part, e.g. ``part-00001-of-00004.parquet``."""
        return f"part-{self.rank:05d}-of-{self.world_size:05d}.parquet"


def parts_dir(out: str | os.PathLike[str]) -> Path:
    """The directory of the parts of results table ``out`` (``OUT.parts``)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_path(out: str | os.PathLike[str], spec: PartSpec, suffix: str = ".parquet") -> Path:
    """Path of a part (or, with ``suffix`` ``.alive`` / ``.failed``, of its status files)."""
    return parts_dir(out) / spec.name.replace(".parquet", suffix)


def write_part(df: pd.DataFrame, path: Path, config: Mapping[str, Any],  # Any: JSON values
               spec: PartSpec, row_cut_ids: Sequence[str],
               skipped: Sequence[tuple[str, str]]) -> Path:
    """Write a part atomically: the rows, ``config``, and the part's record under ``part``.

    ``row_cut_ids`` names the cut of each row (rows are in cut-id order within a part).
    """
    if len(row_cut_ids) != len(df):
        raise ShardError(f"{path}: {len(df)} rows but {len(row_cut_ids)} cut ids")
    record = {"rank": spec.rank, "world_size": spec.world_size, "cut_ids": list(spec.cut_ids),
              "fingerprint": spec.fingerprint, "row_cut_ids": list(row_cut_ids),
              "skipped": [[c, r] for c, r in skipped]}
    return write_results(df, path, {**config, "part": record})


def _record(path: Path) -> dict[str, Any] | None:  # Any: the part's JSON record
    try:
        config = stored_config(pq.read_schema(path).metadata)
    except (OSError, pa.ArrowInvalid, ValueError):
        return None
    record = config.get("part") if isinstance(config, dict) else None
    return record if isinstance(record, dict) else None


def part_problem(path: Path, spec: PartSpec) -> str | None:
    """Why the part at ``path`` cannot be reused for ``spec`` (None: it is complete and
    current). The reason names the file."""
    if not path.is_file():
        return f"{path} is missing"
    record = _record(path)
    if record is None:
        return f"{path} is not a readable part (no part record in its Parquet metadata)"
    if (record.get("rank"), record.get("world_size")) != (spec.rank, spec.world_size):
        return (f"{path} is part {record.get('rank')} of {record.get('world_size')}, "
                f"not {spec.rank} of {spec.world_size}")
    if tuple(record.get("cut_ids") or ()) != spec.cut_ids:
        return f"{path} holds another set of cuts than shard {spec.rank} of {spec.world_size}"
    if record.get("fingerprint") != spec.fingerprint:
        return (f"{path} was written with another configuration (checkpoint, LM, search, "
                "cuts or speakers differ)")
    return None


def read_part(path: Path) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """A part's rows, the cut id of each row, and its skipped ``(cut_id, reason)`` pairs."""
    df, config = read_results(path)
    record = config.get("part")
    if not isinstance(record, dict) or len(record.get("row_cut_ids", ())) != len(df):
        raise ShardError(f"{path}: its part record does not match its {len(df)} rows")
    return df, list(record["row_cut_ids"]), [(c, r) for c, r in record.get("skipped", [])]


def merge_parts(parts: Iterable[tuple[pd.DataFrame, Sequence[str]]]) -> pd.DataFrame:
    """One table of the parts' rows in cut-id order (the order of a single-process decode).

    Args:
        parts: each part's rows and the cut id of each row.

    Raises:
        ShardError: a cut id appears in more than one row.
    """
    frames: list[pd.DataFrame] = []
    keys: list[str] = []
    for df, ids in parts:
        frames.append(df)
        keys.extend(ids)
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ShardError(f"cut(s) {dup[:5]} decoded in more than one part")
    non_empty = [f for f in frames if len(f)]
    if not non_empty:
        return frames[0].iloc[0:0].reset_index(drop=True) if frames else pd.DataFrame()
    merged = pd.concat(non_empty, ignore_index=True)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return merged.iloc[order].reset_index(drop=True)


def order_skipped(skipped: Iterable[tuple[str, str]], durations: Mapping[str, float],
                  unscored: Iterable[str], streaming: bool) -> list[tuple[str, str]]:
    """Skipped cuts in the order a single-process decode lists them: cuts without a usable
    supervision first (by id), then cuts with unusable audio, by id when streaming and by
    (duration, id) offline (the order of the offline batches)."""
    first = set(unscored)

    def key(item: tuple[str, str]) -> tuple[int, float, str]:
        cid = item[0]
        if cid in first:
            return (0, 0.0, cid)
        return (1, 0.0 if streaming else float(durations.get(cid, 0.0)), cid)

    return sorted(skipped, key=key)


def failure_marks(specs: Sequence[PartSpec], out: Path) -> dict[int, int]:
    """Modification times (ns) of the ``.failed`` files present now, by rank: a wait ignores
    these, left over from an earlier run."""
    marks = {}
    for spec in specs:
        try:
            marks[spec.rank] = part_path(out, spec, ".failed").stat().st_mtime_ns
        except OSError:
            continue
    return marks


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def wait_for_parts(out: Path, specs: Sequence[PartSpec], *, timeout: float,
                   old_failures: Mapping[int, int] | None = None, poll: float = 0.5,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until every part is complete and current.

    A rank that is running touches its ``.alive`` file every :data:`HEARTBEAT_SECONDS`; a
    rank that fails writes its error to ``.failed``. The wait ends with an error as soon as a
    rank reports a failure (a ``.failed`` file not in ``old_failures``), or when a part is
    still missing and its rank has shown no sign of life (no change to ``.alive``) for
    ``timeout`` seconds. Times are measured on this machine's clock only.

    Raises:
        ShardError: naming the missing part, its rank and the reason.
    """
    old = dict(old_failures or {})
    start = clock()
    last_seen: dict[int, tuple[int | None, float]] = {}
    pending = list(specs)
    while True:
        still = []
        for spec in pending:
            path = part_path(out, spec)
            problem = part_problem(path, spec)
            if problem is None:
                continue
            failed = part_path(out, spec, ".failed")
            mark = _mtime(failed)
            if mark is not None and old.get(spec.rank) != mark:
                try:
                    reason = failed.read_text(encoding="utf-8").strip()
                except OSError:
                    reason = "(unreadable)"
                raise ShardError(f"rank {spec.rank} failed, part {path} is missing: {reason}")
            alive = _mtime(part_path(out, spec, ".alive"))
            seen, since = last_seen.get(spec.rank, (None, start))
            if alive != seen:
                last_seen[spec.rank] = (alive, clock())
            elif clock() - since > timeout:
                raise ShardError(
                    f"part {path} is missing ({problem}) and rank {spec.rank} of "
                    f"{spec.world_size} has shown no sign of life for {timeout:g} s: "
                    "it died or never started; see its log, then run the same command "
                    "again to decode the missing parts only")
            still.append(spec)
        if not still:
            return
        pending = still
        sleep(poll)


@contextmanager
def heartbeat(path: Path, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Touch ``path`` now and every ``every`` seconds while the block runs; remove it after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                path.touch()
            except OSError:
                pass

    path.touch()

    thread = threading.Thread(target=beat, name="fairstream-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def report_failure(path: Path, message: str) -> None:
    """Write a rank's error to its ``.failed`` file (for the rank that merges)."""
    atomic_write_text(path, message + "\n")


def remove_parts(out: Path, specs: Sequence[PartSpec]) -> None:
    """Remove the parts and their status files, and ``OUT.parts`` when nothing else is in it."""
    for spec in specs:
        for suffix in (".parquet", ".alive", ".failed"):
            part_path(out, spec, suffix).unlink(missing_ok=True)
    try:
        parts_dir(out).rmdir()
    except OSError:
        pass
