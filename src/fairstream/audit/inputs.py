"""Readers for everything the audit consumes, from any recognizer.

* Results: CSV / TSV / JSONL / Parquet (configurable column names), with either precomputed
  error counts (``sub``, ``del``, ``ins`` and ``hits`` or ``n_ref_words``) or ``ref``/``hyp``
  text scored with :mod:`fairstream.metrics.wer`; Kaldi ``text`` + hypothesis + ``utt2spk``;
  sclite ``trn`` pairs. The ``results.parquet`` that ``fairstream decode`` writes works as is.
* Speaker metadata table, zip-level demographics table, speaker or utterance embeddings
  (``.npy`` + ids, or Parquet/CSV).

Nothing is dropped silently: every row that cannot be used is counted in an
:class:`Exclusion` (reason, unit, count) that the report prints. The empty-reference rule of
:mod:`fairstream.metrics.wer` holds everywhere: an utterance with an empty reference adds 0
reference words and all its hypothesis words as insertions.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import lzma
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fairstream._lines import read_lines, read_text
from fairstream.errors import InputDataError
from fairstream.metrics.wer import score_pairs

__all__ = [
    "COORDINATE_COLUMNS",
    "COUNT_COLUMNS",
    "ColumnMap",
    "Exclusion",
    "ResultsTable",
    "normalize_zip",
    "read_embeddings",
    "read_kaldi",
    "read_results",
    "read_speakers",
    "read_table",
    "read_trn",
    "read_zip_demographics",
]

logger = logging.getLogger(__name__)

#: canonical per-utterance count columns after reading.
COUNT_COLUMNS = ("sub", "del", "ins", "hits")

Duplicates = Literal["error", "first"]
#: largest error count read (integers up to 2**53 are exact in float64, the parsing type).
_MAX_COUNT = 2.0**53


@dataclass(frozen=True)
class ColumnMap:
    """Names of the results-table columns (defaults: the ``fairstream decode`` table)."""

    utt_id: str = "utt_id"
    speaker_id: str = "speaker_id"
    ref: str = "ref"
    hyp: str = "hyp"
    sub: str = "sub"
    deletions: str = "del"
    ins: str = "ins"
    hits: str = "hits"
    n_ref_words: str = "n_ref_words"

    @classmethod
    def from_pairs(cls, pairs: Sequence[str]) -> ColumnMap:
        """Build from ``["field=column", ...]`` (e.g. ``speaker_id=spk``); unknown fields raise."""
        kwargs: dict[str, str] = {}
        valid = set(cls.__dataclass_fields__)
        for pair in pairs:
            if "=" not in pair:
                raise InputDataError(f"column mapping {pair!r} is not of the form field=column")
            key, value = (p.strip() for p in pair.split("=", 1))
            key = {"del": "deletions"}.get(key, key)
            if key not in valid:
                raise InputDataError(
                    f"unknown results field {key!r} in mapping {pair!r}; fields: {sorted(valid)}"
                )
            kwargs[key] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class Exclusion:
    """Rows left out of (part of) the audit, and why.

    Attributes:
        stage: where they were left out ("results", "speakers", "geo", "geodemographic", ...).
        reason: human-readable reason.
        count: how many.
        unit: "utterances", "speakers" or "rows".
        examples: up to 5 offending ids or values, for error messages and logs only (the
            report shows them only when speaker ids are allowed).
    """

    stage: str
    reason: str
    count: int
    unit: str
    examples: tuple[str, ...] = ()

    def to_dict(self, *, with_examples: bool = False) -> dict[str, object]:
        """JSON-ready dict."""
        d: dict[str, object] = {
            "stage": self.stage,
            "reason": self.reason,
            "count": self.count,
            "unit": self.unit,
        }
        if with_examples:
            d["examples"] = list(self.examples)
        return d


@dataclass(frozen=True)
class ResultsTable:
    """Per-utterance error counts, ready to be reduced per speaker.

    Attributes:
        utterances: one row per kept utterance with ``utt_id``, ``speaker_id`` (str) and the
            int64 counts ``sub``, ``del``, ``ins``, ``hits``, plus every other input column
            passed through (speaker metadata, duration, ...).
        source: provenance (file path and format, or "DataFrame").
        n_rows_read: rows in the input before exclusions.
        n_empty_reference: kept utterances whose reference has 0 words (empty-reference rule).
        exclusions: rows not kept, with reasons.
        notes: other facts the report should state (e.g. missing hypotheses scored as empty).
    """

    utterances: pd.DataFrame
    source: str
    n_rows_read: int
    n_empty_reference: int = 0
    exclusions: tuple[Exclusion, ...] = ()
    notes: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------- generic tables


def read_table(path: str | Path, *, fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV / TSV / JSONL / Parquet table; ``fmt`` overrides the file suffix."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"input file not found: {path}")
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind in {"gz", "bz2", "xz"}:
        kind = Path(path.stem).suffix.lstrip(".").lower()
    if kind in {"csv", "tsv", "jsonl", "ndjson"} and path.suffix.lower() not in {".gz", ".bz2",
                                                                                 ".xz"}:
        _check_text_lines(path, kind)
    try:
        if kind in {"parquet", "pq"}:
            df = pd.read_parquet(path)
        elif kind == "csv":
            df = pd.read_csv(path, keep_default_na=True, dtype_backend="numpy_nullable")
        elif kind == "tsv":
            df = pd.read_csv(path, sep="\t", dtype_backend="numpy_nullable")
        elif kind in {"jsonl", "ndjson", "json"}:
            df = pd.read_json(path, lines=kind != "json", dtype_backend="numpy_nullable")
        else:
            raise InputDataError(f"unknown table format {kind!r} for {path}; use csv, tsv, "
                                 "jsonl or parquet (or --format)")
    except InputDataError:
        raise
    except (ValueError, OSError, TypeError, EOFError, zlib.error, lzma.LZMAError) as exc:
        # EOFError, zlib.error, LZMAError: a cut or corrupt .gz/.bz2/.xz file
        raise InputDataError(f"cannot read {path} as {kind}: {exc}") from exc
    _distinct_columns(df, str(path))
    return df


def _distinct_columns(df: pd.DataFrame, desc: str) -> None:
    repeated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if repeated:
        raise InputDataError(f"{desc} repeats column name(s) {repeated}")


def _check_text_lines(path: Path, kind: str) -> None:
    """Raise naming the line of a CSV/TSV/JSONL file that is not UTF-8, a header that repeats
    a column name, or a JSONL line that is not one JSON object with distinct keys."""
    text = read_text(path, "table")
    if kind in {"csv", "tsv"}:
        try:
            header = next(csv.reader(io.StringIO(text, newline=""),
                                     delimiter="\t" if kind == "tsv" else ","), [])
        except csv.Error:
            header = []  # pandas names the malformed line below
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise InputDataError(f"{path}:1: the header repeats column name(s) {repeated}")
        return
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=_distinct_keys)
        except ValueError as exc:
            raise InputDataError(f"{path}:{lineno}: not a JSON object: {exc}") from None
        if not isinstance(obj, dict):
            raise InputDataError(
                f"{path}:{lineno}: a JSONL row must be a JSON object, got {type(obj).__name__}"
            )


def _distinct_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"key(s) {repeated} appear more than once")
    return dict(pairs)


def _require(df: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{what} lacks required column(s) {missing}; it has {list(df.columns)}. "
            "Map names with ColumnMap / --column field=name."
        )


def _as_id(series: pd.Series) -> pd.Series:
    """ids as python strings, missing stays missing."""
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series.astype("object")  # a string dtype already holds str (or NA)
    out = series.astype("object")
    mask = out.notna()
    out[mask] = out[mask].map(str)
    return out


def normalize_zip(values: pd.Series) -> pd.Series:
    """US zip codes as 5-character strings ("2139" → "02139", "02139-1234" → "02139").

    Anything that is not 1–5 digits (optionally with a ``-NNNN`` suffix) becomes missing.
    """
    s = values.astype("object").map(lambda v: None if pd.isna(v) else str(v).strip())
    s = s.map(lambda v: v[:-2] if isinstance(v, str) and v.endswith(".0") else v)
    s = s.map(lambda v: v.split("-")[0] if isinstance(v, str) else v)
    return s.map(
        lambda v: v.zfill(5) if isinstance(v, str) and v.isdigit() and 1 <= len(v) <= 5 else None
    ).astype("object")


# ----------------------------------------------------------------------------- results


def read_results(
    source: str | Path | pd.DataFrame,
    *,
    columns: ColumnMap | None = None,
    fmt: str | None = None,
    duplicates: Duplicates = "error",
    rescore: bool = False,
) -> ResultsTable:
    """Read a results table (one row per utterance) from a file or a DataFrame.

    Args:
        source: path (csv/tsv/jsonl/parquet) or a DataFrame.
        columns: column names; defaults are those of ``fairstream decode``.
        fmt: table format when the suffix does not say it.
        duplicates: "error" raises on repeated utterance ids; "first" keeps the first row and
            records the others as excluded.
        rescore: score ``ref``/``hyp`` even when count columns are present.

    Raises:
        InputDataError: a required column is missing, or duplicate ids with ``"error"``.
        ResultsVersionError: a Parquet table written with a newer schema version.
    """
    cm = columns or ColumnMap()
    if isinstance(source, pd.DataFrame):
        df, desc = source, "DataFrame"
    elif (fmt or Path(source).suffix.lstrip(".")).lower() in {"parquet", "pq"}:
        from fairstream.results import read_results as read_results_table

        df, _ = read_results_table(source)  # checks the schema version of our own tables
        desc = f"{Path(source)} (parquet)"
    else:
        df = read_table(source, fmt=fmt)
        desc = f"{Path(source)} ({fmt or Path(source).suffix.lstrip('.')})"
    return _results_from_frame(df, cm, desc, duplicates=duplicates, rescore=rescore)


def _results_from_frame(
    df: pd.DataFrame, cm: ColumnMap, desc: str, *, duplicates: Duplicates, rescore: bool
) -> ResultsTable:
    n_read = len(df)
    _distinct_columns(df, f"results table {desc}")
    _require(df, [cm.utt_id, cm.speaker_id], f"results table {desc}")
    has_counts = all(c in df.columns for c in (cm.sub, cm.deletions, cm.ins)) and (
        cm.hits in df.columns or cm.n_ref_words in df.columns
    )
    has_text = cm.ref in df.columns and cm.hyp in df.columns
    if not (has_counts and not rescore) and not has_text:
        raise InputDataError(
            f"results table {desc} needs either error counts ({cm.sub}, {cm.deletions}, "
            f"{cm.ins} and {cm.hits} or {cm.n_ref_words}) or texts ({cm.ref}, {cm.hyp}); "
            f"it has {list(df.columns)}"
        )
    exclusions: list[Exclusion] = []
    notes: list[str] = []
    out = pd.DataFrame(
        {"utt_id": _as_id(df[cm.utt_id]), "speaker_id": _as_id(df[cm.speaker_id])}
    )
    keep = np.ones(n_read, dtype=bool)

    for col, what in (("utt_id", "utterance id"), ("speaker_id", "speaker id")):
        bad = out[col].isna().to_numpy() & keep  # a row missing both is counted once
        if bad.any():
            exclusions.append(
                Exclusion("results", f"missing {what}", int(bad.sum()), "utterances",
                          tuple(str(i) for i in np.nonzero(bad)[0][:5]))
            )
            keep &= ~bad

    if has_counts and not rescore:
        counts = {}
        for name, col in (("sub", cm.sub), ("del", cm.deletions), ("ins", cm.ins)):
            counts[name] = pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()
        if cm.hits in df.columns:
            hits = pd.to_numeric(df[cm.hits], errors="coerce")
            counts["hits"] = hits.astype("float64").to_numpy()
        else:
            n_ref = pd.to_numeric(df[cm.n_ref_words], errors="coerce").astype("float64").to_numpy()
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, excluded below
                counts["hits"] = n_ref - counts["sub"] - counts["del"]
        mat = np.stack([counts[c] for c in COUNT_COLUMNS], axis=1)
        bad = (~np.isfinite(mat).all(axis=1) | (mat < 0).any(axis=1)
               | (mat != np.round(mat)).any(axis=1))
        huge = (mat > _MAX_COUNT).any(axis=1) & ~bad
        for mask, reason in ((bad, "error counts missing, negative or not integers"),
                             (huge, "error counts too large (over 2**53)")):
            mask &= keep
            if mask.any():
                exclusions.append(
                    Exclusion("results", reason, int(mask.sum()), "utterances",
                              tuple(out["utt_id"].to_numpy()[mask][:5].astype(str)))
                )
                keep &= ~mask
        mat = np.where(keep[:, None], mat, 0).astype(np.int64)
        for j, c in enumerate(COUNT_COLUMNS):
            out[c] = mat[:, j]
    else:
        ref = df[cm.ref].astype("object")
        hyp = df[cm.hyp].astype("object")
        bad = ref.isna().to_numpy() & keep
        if bad.any():
            exclusions.append(
                Exclusion("results", "missing reference text (null, not empty)", int(bad.sum()),
                          "utterances", tuple(out["utt_id"].to_numpy()[bad][:5].astype(str)))
            )
            keep &= ~bad
        hyp_missing = hyp.isna().to_numpy() & keep
        if hyp_missing.any():
            notes.append(
                f"{int(hyp_missing.sum())} utterances have no hypothesis (null); "
                "scored as an empty hypothesis (all reference words deleted)"
            )
        idx = np.nonzero(keep)[0]
        refs = [str(r) for r in ref.to_numpy()[idx]]
        hyps = ["" if h is None or (isinstance(h, float) and np.isnan(h)) else str(h)
                for h in hyp.to_numpy()[idx]]
        mat = np.zeros((n_read, 4), dtype=np.int64)
        scored = score_pairs(refs, hyps)
        if scored:
            mat[idx] = np.array(
                [(c.substitutions, c.deletions, c.insertions, c.hits) for c in scored],
                dtype=np.int64,
            )
        for j, c in enumerate(COUNT_COLUMNS):
            out[c] = mat[:, j]

    skip = {cm.utt_id, cm.speaker_id, cm.sub, cm.deletions, cm.ins, cm.hits} | set(COUNT_COLUMNS)
    for col in df.columns:
        if col not in skip and col not in out.columns:
            out[col] = df[col].to_numpy()

    out = out[keep].reset_index(drop=True)
    dup = out["utt_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        ids = out["utt_id"].to_numpy()[dup]
        if duplicates == "error":
            raise InputDataError(
                f"results table {desc} repeats {int(dup.sum())} utterance id(s), e.g. "
                f"{[str(i) for i in dict.fromkeys(ids)][:5]}; fix the table or keep the first "
                "row of each id (duplicates='first' / --duplicates first)"
            )
        exclusions.append(
            Exclusion("results", "duplicate utterance id (first row kept)", int(dup.sum()),
                      "utterances", tuple(ids[:5].astype(str)))
        )
        out = out[~dup].reset_index(drop=True)
    ref_words = out["hits"] + out["sub"] + out["del"]
    n_empty = int((ref_words == 0).sum())
    if n_empty:
        notes.append(
            f"{n_empty} utterances have an empty reference: they add 0 reference words and "
            "all their hypothesis words as insertions"
        )
    for ex in exclusions:
        logger.warning("results: excluded %d %s: %s", ex.count, ex.unit, ex.reason)
    return ResultsTable(
        utterances=out, source=desc, n_rows_read=n_read, n_empty_reference=n_empty,
        exclusions=tuple(exclusions), notes=tuple(notes),
    )


def _read_keyed_lines(path: Path) -> dict[str, str]:
    """Kaldi-style ``key rest-of-line`` file → dict; repeated keys raise."""
    out: dict[str, str] = {}
    for lineno, line in read_lines(path, "input file"):
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        if key in out:
            raise InputDataError(f"{path}:{lineno}: utterance id {key!r} appears twice")
        out[key] = parts[1] if len(parts) > 1 else ""
    return out


def read_kaldi(
    text: str | Path, hypothesis: str | Path, utt2spk: str | Path
) -> ResultsTable:
    """Score a Kaldi data dir ``text`` against a hypothesis file of the same format.

    Utterances with a reference but no hypothesis line (or the reverse), or without a
    speaker in ``utt2spk``, are excluded and counted.
    """
    refs = _read_keyed_lines(Path(text))
    hyps = _read_keyed_lines(Path(hypothesis))
    spk = {k: v.split()[0] if v.split() else ""
           for k, v in _read_keyed_lines(Path(utt2spk)).items()}
    exclusions: list[Exclusion] = []
    no_hyp = [u for u in refs if u not in hyps]
    no_ref = [u for u in hyps if u not in refs]
    no_spk = [u for u in refs if u in hyps and not spk.get(u)]
    for ids, reason in ((no_hyp, "reference without hypothesis line"),
                        (no_ref, "hypothesis without reference line"),
                        (no_spk, "utterance not in utt2spk")):
        if ids:
            exclusions.append(Exclusion("results", reason, len(ids), "utterances", tuple(ids[:5])))
    uids = [u for u in refs if u in hyps and spk.get(u)]
    df = pd.DataFrame({
        "utt_id": uids, "speaker_id": [spk[u] for u in uids],
        "ref": [refs[u] for u in uids], "hyp": [hyps[u] for u in uids],
    })
    table = _results_from_frame(df, ColumnMap(), f"kaldi {text} + {hypothesis} + {utt2spk}",
                                duplicates="error", rescore=True)
    return ResultsTable(
        utterances=table.utterances, source=table.source,
        n_rows_read=len(refs) + len(no_ref), n_empty_reference=table.n_empty_reference,
        exclusions=tuple(exclusions) + table.exclusions, notes=table.notes,
    )


def _read_trn(path: Path) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for lineno, line in read_lines(path, "input file"):
        line = line.strip()
        if not line.endswith(")") or "(" not in line:
            raise InputDataError(f"{path}:{lineno}: not a trn line 'text (speaker-utt)': {line!r}")
        cut = line.rindex("(")
        uid = line[cut + 1:-1].strip()
        if not uid:
            raise InputDataError(f"{path}:{lineno}: empty utterance id in {line!r}")
        if uid in out:
            raise InputDataError(f"{path}:{lineno}: utterance id {uid!r} appears twice")
        speaker = uid.split("-", 1)[0]
        if not speaker:
            raise InputDataError(f"{path}:{lineno}: utterance id {uid!r} names no speaker "
                                 "(sclite ids are speaker-utterance)")
        out[uid] = (speaker, line[:cut].strip())
    return out


def read_trn(reference: str | Path, hypothesis: str | Path) -> ResultsTable:
    """Score a pair of NIST ``trn`` files (``text (speaker-utt)`` lines, sclite convention:
    the speaker is the part of the id before the first ``-``)."""
    refs = _read_trn(Path(reference))
    hyps = _read_trn(Path(hypothesis))
    exclusions: list[Exclusion] = []
    no_hyp = [u for u in refs if u not in hyps]
    no_ref = [u for u in hyps if u not in refs]
    for ids, reason in ((no_hyp, "reference without hypothesis line"),
                        (no_ref, "hypothesis without reference line")):
        if ids:
            exclusions.append(Exclusion("results", reason, len(ids), "utterances", tuple(ids[:5])))
    uids = [u for u in refs if u in hyps]
    df = pd.DataFrame({
        "utt_id": uids, "speaker_id": [refs[u][0] for u in uids],
        "ref": [refs[u][1] for u in uids], "hyp": [hyps[u][1] for u in uids],
    })
    table = _results_from_frame(df, ColumnMap(), f"trn {reference} + {hypothesis}",
                                duplicates="error", rescore=True)
    return ResultsTable(
        utterances=table.utterances, source=table.source,
        n_rows_read=len(refs) + len(no_ref), n_empty_reference=table.n_empty_reference,
        exclusions=tuple(exclusions) + table.exclusions, notes=table.notes,
    )


# ----------------------------------------------------------------------------- metadata

#: speaker-table columns read as numbers (coordinates): a value that is not a number raises.
COORDINATE_COLUMNS = ("lat", "lon", "latitude", "longitude")


def _source_desc(source: str | Path | pd.DataFrame) -> str:
    return "DataFrame" if isinstance(source, pd.DataFrame) else str(Path(source))


def _rows(mask: np.ndarray | pd.Series) -> str:
    """``rows [1, 4]``: the 1-based data rows (header not counted) where ``mask`` holds."""
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
    return f"row{'s' if len(idx) > 1 else ''} {[int(i) + 1 for i in idx[:5]]}{more}"


def _as_number(value: object) -> float | None:
    """A coordinate cell as a float (NaN when empty); None when it is not a number."""
    if value is None or value is pd.NA or (isinstance(value, str) and not value.strip()):
        return float("nan")
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]  # anything float() takes
    except (TypeError, ValueError, OverflowError):
        return None


def read_speakers(
    source: str | Path | pd.DataFrame, *, speaker_col: str = "speaker_id", fmt: str | None = None
) -> pd.DataFrame:
    """Speaker metadata, indexed by speaker id (str).

    Coordinate columns (:data:`COORDINATE_COLUMNS`) are read as float64, empty cells as NaN.

    Raises:
        InputDataError: the id column is missing, an id is missing or repeated, or a coordinate
            is not a number; the message names the file and the rows.
    """
    desc = _source_desc(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source, fmt=fmt)
    _require(df, [speaker_col], f"speaker table {desc}")
    ids = _as_id(df[speaker_col])
    if ids.isna().any():
        raise InputDataError(
            f"speaker table {desc} has {int(ids.isna().sum())} rows without {speaker_col} "
            f"({_rows(ids.isna())})")
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise InputDataError(
            f"speaker table {desc} repeats speaker id(s) {list(ids[dup].unique()[:5])} in "
            f"{speaker_col} ({_rows(dup)})"
        )
    for col in (c for c in COORDINATE_COLUMNS if c in df.columns):
        values = [_as_number(v) for v in df[col].astype("object")]
        bad = np.array([v is None for v in values], dtype=bool)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputDataError(
                f"speaker table {desc}: {col} is not a number in {_rows(bad)}, e.g. "
                f"{df[col].iloc[first]!r} for speaker {ids.iloc[first]!r}"
            )
        df[col] = np.array(values, dtype=np.float64)
    df = df.drop(columns=[speaker_col])
    df.index = pd.Index(ids.to_numpy(), name="speaker_id", dtype=object)
    if "zip" in df.columns:
        df["zip"] = normalize_zip(df["zip"]).to_numpy()
    return df


def read_zip_demographics(
    source: str | Path | pd.DataFrame, *, zip_col: str = "zip", fmt: str | None = None
) -> pd.DataFrame:
    """Zip-level demographics indexed by 5-character zip string; repeated or invalid zips raise
    (the message names the file and the rows)."""
    desc = _source_desc(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source, fmt=fmt)
    _require(df, [zip_col], f"zip demographics table {desc}")
    zips = normalize_zip(df[zip_col])
    if zips.isna().any():
        bad = df[zip_col][zips.isna()].astype(str).tolist()[:5]
        raise InputDataError(f"zip demographics table {desc} has invalid zip code(s) {bad} in "
                             f"{zip_col} ({_rows(zips.isna())})")
    dup = zips.duplicated(keep=False)
    if dup.any():
        raise InputDataError(
            f"zip demographics table {desc} repeats zip code(s) "
            f"{zips[zips.duplicated()].unique().tolist()[:5]} ({_rows(dup)})"
        )
    df = df.drop(columns=[zip_col])
    df.index = pd.Index(zips.to_numpy(), name="zip", dtype=object)
    return df


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise InputDataError(f"{what} not found: {path}")
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise InputDataError(f"cannot read {what} {path} as .npy: {exc}") from exc


def _vector(value: object, where: str) -> np.ndarray:
    """One embedding cell (a list, an array, or its JSON text in a CSV) as a 1-D float32."""
    if isinstance(value, str):
        text = value
        try:
            value = json.loads(text)
        except ValueError:
            raise InputDataError(f"{where}: embedding {text[:40]!r} is not a list of numbers"
                                 ) from None
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        raise InputDataError(f"{where}: no embedding")
    try:
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by _check_vectors
            vec = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise InputDataError(f"{where}: embedding is not a list of numbers") from None
    if vec.ndim != 1 or vec.size == 0:
        raise InputDataError(f"{where}: embedding is not a non-empty list of numbers")
    return vec


def _check_vectors(ids: np.ndarray, vectors: np.ndarray, desc: str) -> None:
    if len(ids) == 0:
        raise InputDataError(f"embeddings {desc} hold no rows")
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise InputDataError(f"embeddings {desc} have shape {vectors.shape}, not (N, D > 0)")
    missing = pd.isna(ids)
    if missing.any():
        raise InputDataError(f"embeddings {desc} have no id in {_rows(missing)}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise InputDataError(f"embeddings {desc} contain NaN/inf in {_rows(~finite)}, id(s) "
                             f"{[str(i) for i in ids[~finite][:5]]}")


def read_embeddings(
    source: str | Path | pd.DataFrame,
    *,
    ids: str | Path | Sequence[str] | None = None,
    id_col: str = "speaker_id",
    vector_col: str = "embedding",
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker (or utterance) embeddings.

    Accepted forms: a ``.npy`` matrix (N, D) with ``ids`` (a text file with one id per line,
    a ``.npy`` of strings, or a sequence); a Parquet/CSV/JSONL table with ``id_col`` and
    either a list column ``vector_col`` (in a CSV, JSON text such as ``[0.1, -2]``) or numeric
    columns (one per dimension).

    Returns:
        (ids (N,) object array of str, vectors (N, D) float32).

    Raises:
        InputDataError: an unreadable file, a missing id, a vector that is not a list of
            numbers, vectors of different lengths, or NaN/inf; the message names the file and
            the rows.
    """
    if isinstance(source, (str, Path)) and Path(source).suffix == ".npy":
        path = Path(source)
        mat = _load_npy(path, "embedding file")
        if ids is None:
            raise InputDataError(f"{path} is a bare matrix: give its ids (--embedding-ids)")
        if mat.dtype.kind not in "iuf":
            raise InputDataError(f"embedding matrix {path} holds {mat.dtype}, not numbers")
        if isinstance(ids, (str, Path)):
            ipath = Path(ids)
            if ipath.suffix == ".npy":
                id_arr = _load_npy(ipath, "embedding id file").astype(str)
            else:
                id_arr = np.array([ln.strip() for _, ln in read_lines(ipath, "embedding id file")])
        else:
            id_arr = np.asarray([str(i) for i in ids])
        if mat.ndim != 2 or id_arr.ndim != 1 or mat.shape[0] != id_arr.shape[0]:
            raise InputDataError(
                f"embedding matrix {path} has shape {mat.shape} but {id_arr.shape[0]} ids"
            )
        with np.errstate(over="ignore"):
            vectors = mat.astype(np.float32)
        _check_vectors(id_arr, vectors, str(path))
        return id_arr.astype(object), vectors
    desc = f"table {_source_desc(source)}"
    df = source if isinstance(source, pd.DataFrame) else read_table(source)
    _require(df, [id_col], f"embedding {desc}")
    if vector_col in df.columns:
        rows = [_vector(v, f"embedding {desc} row {i + 1}")
                for i, v in enumerate(df[vector_col].astype("object"))]
        sizes = {len(v) for v in rows}
        if len(sizes) > 1:
            first = next(i for i, v in enumerate(rows) if len(v) != len(rows[0]))
            raise InputDataError(
                f"embedding {desc}: vectors of different lengths ({len(rows[0])} in row 1, "
                f"{len(rows[first])} in row {first + 1})")
        vectors = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    else:
        num = df.drop(columns=[id_col]).select_dtypes("number")
        if num.shape[1] == 0:
            raise InputDataError(
                f"embedding {desc} has neither a {vector_col!r} list column nor numeric columns"
            )
        with np.errstate(over="ignore"):
            vectors = num.to_numpy(dtype=np.float32, na_value=np.nan)
    out_ids = _as_id(df[id_col]).to_numpy()
    _check_vectors(out_ids, vectors, desc)
    return out_ids, vectors
