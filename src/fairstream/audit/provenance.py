"""Provenance of an audit's inputs: file sizes and hashes, the decoder's stored config."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_info", "parquet_config", "version"]


def file_info(path: str | Path) -> dict[str, object]:
    """Path, size and SHA-256 of an input file."""
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def parquet_config(path: Path) -> object | None:
    """The writer's config stored in a Parquet results table, or None (best effort)."""
    try:
        import pyarrow.parquet as pq

        from fairstream.results import stored_config

        return stored_config(pq.read_schema(path).metadata)
    except Exception:  # noqa: BLE001 - provenance is best effort, never fatal
        return None


def version() -> str:
    """The installed fairstream version."""
    from fairstream import __version__

    return __version__
