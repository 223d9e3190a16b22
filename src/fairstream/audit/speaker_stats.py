"""Reduce utterances to per-speaker sufficient statistics.

Every audit method works on this small table (one row per speaker): error counts by type,
reference words, utterances and speaker metadata. Group WER, the speaker bootstrap, tree
splits, partitions and clusters are all sums over its rows.

Speaker metadata comes from the speaker table when one is given, else from metadata columns
passed through in the results table (first value per speaker). Speakers of the results that
are missing from the speaker table keep their errors and get the explicit category
``"unknown"`` (and missing coordinates), counted in :attr:`SpeakerStats.notes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairstream.audit.inputs import Exclusion, ResultsTable, normalize_zip
from fairstream.errors import InputDataError

__all__ = [
    "STAT_COLUMNS",
    "UNKNOWN",
    "SpeakerStats",
    "SpeakerSums",
    "passthrough_columns",
    "speaker_stats",
    "speaker_sums",
]

logger = logging.getLogger(__name__)

#: category given to speakers without metadata (and to missing categorical values).
UNKNOWN = "unknown"

#: numeric sufficient statistics per speaker.
STAT_COLUMNS = ("n_utterances", "sub", "del", "ins", "hits", "ref_words", "errors")

_NOT_METADATA = {
    "utt_id", "speaker_id", "ref", "hyp", "sub", "del", "ins", "hits", "n_ref_words",
    "duration", "timestamps", "text", "cut_id",
}


@dataclass(frozen=True)
class SpeakerStats:
    """Per-speaker statistics and metadata.

    Attributes:
        table: index ``speaker_id`` (str); int64 columns :data:`STAT_COLUMNS` (+ ``duration``
            float when the results have it) and the metadata columns.
        metadata_columns: the metadata column names in ``table``.
        n_unknown_speakers: speakers of the results without a row in the speaker table.
        n_metadata_only_speakers: speakers in the speaker table with no utterance in the results.
        exclusions: rows left out (from reading the results).
        notes: facts for the report.
    """

    table: pd.DataFrame
    metadata_columns: tuple[str, ...]
    n_unknown_speakers: int = 0
    n_metadata_only_speakers: int = 0
    exclusions: tuple[Exclusion, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def n_speakers(self) -> int:
        """Number of audited speakers."""
        return len(self.table)

    @property
    def errors(self) -> np.ndarray:
        """(S,) int64 errors per speaker."""
        return np.asarray(self.table["errors"], dtype=np.int64)

    @property
    def words(self) -> np.ndarray:
        """(S,) int64 reference words per speaker."""
        return np.asarray(self.table["ref_words"], dtype=np.int64)

    @property
    def utterances(self) -> np.ndarray:
        """(S,) int64 utterances per speaker."""
        return np.asarray(self.table["n_utterances"], dtype=np.int64)


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


@dataclass(frozen=True)
class SpeakerSums:
    """Utterance counts summed per speaker, before the speaker table is attached.

    The in-memory engine computes it from a :class:`ResultsTable` (:func:`speaker_sums`); the
    Dask engine (:mod:`fairstream.audit.dask_engine`) computes the same table from partitioned
    files without ever holding the utterances.

    Attributes:
        table: index ``speaker_id`` (str, sorted); int64 ``n_utterances``, ``sub``, ``del``,
            ``ins``, ``hits`` (+ float ``duration`` when the results have it), then the
            metadata columns passed through in the results (first value per speaker).
        source: provenance of the results.
        n_rows_read: utterance rows read.
        n_rows_used: utterance rows kept.
        varying: per passed-through column, the number of speakers whose value varies.
        exclusions: rows left out, with reasons.
        notes: facts for the report.
        engine: how the sums were computed (for the report's provenance), e.g.
            ``{"engine": "dask", "files": 100, "workers": 2, "seconds": 91.2}``.
    """

    table: pd.DataFrame
    source: str
    n_rows_read: int
    n_rows_used: int
    varying: dict[str, int]
    exclusions: tuple[Exclusion, ...] = ()
    notes: tuple[str, ...] = ()
    engine: dict[str, object] = field(default_factory=lambda: {"engine": "memory"})


def passthrough_columns(columns: Sequence[str]) -> list[str]:
    """The results columns that may carry speaker metadata."""
    return [c for c in columns if c not in _NOT_METADATA]


def speaker_sums(results: ResultsTable) -> SpeakerSums:
    """Sum the utterance counts of ``results`` per speaker (speakers in sorted id order)."""
    utt = results.utterances
    codes, uniques = pd.factorize(utt["speaker_id"], sort=True)
    n = len(uniques)
    table = pd.DataFrame(
        index=pd.Index(np.asarray(uniques, dtype=object), name="speaker_id", dtype=object)
    )
    table["n_utterances"] = np.bincount(codes, minlength=n).astype(np.int64)
    for c in ("sub", "del", "ins", "hits"):
        table[c] = np.bincount(codes, weights=utt[c].to_numpy(np.float64), minlength=n).astype(
            np.int64
        )
    if "duration" in utt.columns:
        dur = pd.to_numeric(utt["duration"], errors="coerce").astype("float64").fillna(0.0)
        table["duration"] = np.bincount(codes, weights=dur.to_numpy(), minlength=n)
    # metadata passed through in the results: first value per speaker
    first = np.full(n, -1, dtype=np.int64)
    order = np.arange(len(codes))[::-1]
    first[codes[order]] = order
    varying: dict[str, int] = {}
    for c in passthrough_columns(list(utt.columns)):
        col = utt[c]
        if col.map(lambda v: isinstance(v, (list, np.ndarray, dict))).any():
            continue
        table[c] = col.to_numpy()[first]
        nun = pd.DataFrame({"s": codes, "v": col.astype("object").to_numpy()}).groupby("s")[
            "v"
        ].nunique(dropna=False)
        varying[c] = int((nun > 1).sum())
    return SpeakerSums(table=table, source=results.source, n_rows_read=results.n_rows_read,
                       n_rows_used=len(utt), varying=varying, exclusions=results.exclusions,
                       notes=results.notes)


def speaker_stats(
    results: ResultsTable | SpeakerSums,
    speakers: pd.DataFrame | None = None,
    *,
    metadata_columns: Sequence[str] | None = None,
) -> SpeakerStats:
    """Sum utterance counts per speaker and attach metadata.

    Args:
        results: the read results table, or its per-speaker sums (:func:`speaker_sums`, or
            the Dask engine's).
        speakers: speaker table indexed by speaker id
            (:func:`~fairstream.audit.inputs.read_speakers`).
        metadata_columns: restrict metadata to these columns (default: all available).

    Returns:
        :class:`SpeakerStats` with one row per speaker in the results.
    """
    sums = results if isinstance(results, SpeakerSums) else speaker_sums(results)
    stat_cols = [c for c in ("n_utterances", "sub", "del", "ins", "hits", "duration")
                 if c in sums.table.columns]
    table = sums.table[stat_cols].copy()
    table.insert(5, "ref_words", table["sub"] + table["del"] + table["hits"])
    table.insert(6, "errors", table["sub"] + table["del"] + table["ins"])
    notes: list[str] = list(sums.notes)
    meta = sums.table.drop(columns=stat_cols)
    for c, varying in sums.varying.items():
        if varying:
            notes.append(
                f"results column {c!r} varies within {varying} speakers; the first value per "
                "speaker is its speaker-level value"
            )

    n_unknown = 0
    n_meta_only = 0
    if speakers is not None:
        spk_index = pd.Index(speakers.index.to_numpy(dtype=object), dtype=object)
        pos = spk_index.get_indexer(table.index)
        in_meta = pos >= 0
        n_unknown = int((~in_meta).sum())
        n_meta_only = len(spk_index) - int(np.unique(pos[in_meta]).size)
        joined = speakers.iloc[np.maximum(pos, 0)].reset_index(drop=True)
        joined.index = table.index
        joined[~in_meta] = None
        for c in joined.columns:
            meta[c] = joined[c].to_numpy()
        if n_unknown:
            n_utts = int(table["n_utterances"].to_numpy()[~in_meta].sum())
            notes.append(
                f"{n_unknown} speakers ({n_utts} utterances) of the results have no row in the "
                f"speaker table: kept, with metadata {UNKNOWN!r} (cohort {UNKNOWN!r})"
            )
            logger.warning("%d speakers of the results have no metadata", n_unknown)
        if n_meta_only:
            notes.append(
                f"{n_meta_only} speakers of the speaker table have no utterance in the results"
            )
    if metadata_columns is not None:
        missing = [c for c in metadata_columns if c not in meta.columns]
        if missing:
            raise InputDataError(
                f"metadata column(s) {missing} are in neither the speaker table nor the results; "
                f"available: {list(meta.columns)}"
            )
        meta = meta[list(metadata_columns)]
    if "zip" in meta.columns:
        meta["zip"] = normalize_zip(meta["zip"]).to_numpy()
    for c in meta.columns:
        s = meta[c]
        if _is_categorical(s):
            s = s.astype("object")
            s = s.where(s.notna(), UNKNOWN).map(str)
            meta[c] = s.to_numpy()
        else:
            meta[c] = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    table = pd.concat([table, meta], axis=1)
    return SpeakerStats(
        table=table,
        metadata_columns=tuple(meta.columns),
        n_unknown_speakers=n_unknown,
        n_metadata_only_speakers=n_meta_only,
        exclusions=sums.exclusions,
        notes=tuple(notes),
    )
