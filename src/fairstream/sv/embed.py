"""Embedding tables: one row per utterance (and a per-speaker table of mean embeddings).

``embeddings.parquet`` columns: ``path`` (the key trial lists use), ``cut_id``, ``speaker_id``,
``split``, ``duration``, the speaker metadata columns the corpus has (``accent``, ``gender``,
...), and ``embedding`` (list of E float32). ``<stem>_speakers.parquet`` has one row per
speaker: ``speaker_id``, ``n_utterances``, metadata, ``embedding`` = the mean of the speaker's
length-normalized utterance embeddings (what the audit's automatic cohorts cluster). Both
files carry the checkpoint and its config in the Parquet schema metadata (key ``fairstream``).

Embeddings are whole-utterance by default; utterances are batched by length and padded
frames are masked out of every statistic. A :class:`Degradation` turns every utterance into a
harder test segment first — a random crop of ``crop_seconds`` and additive noise at ``snr_db``
(white, pink or brown noise mixed in the fbank domain as in training, from noise waveforms drawn
with a seed training never uses) — a deterministic function of the utterance's path and the
degradation's seed, so every system embeds the same segments.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch
from lhotse import CutSet
from tqdm.auto import tqdm

from fairstream._io import atomic_path
from fairstream.errors import InputDataError
from fairstream.features.fbank import FbankConfig, compute_fbank, resample, to_float_samples
from fairstream.sv.data import mix_at_snr, noise_features
from fairstream.sv.train import LoadedExtractor, load_extractor
from fairstream.sv.utterances import utterance_table
from fairstream.training.data import load_cut_features

if TYPE_CHECKING:
    from fairstream.data.corpus import Corpus

__all__ = [
    "Degradation",
    "degrade_features",
    "embed_cuts",
    "embed_split",
    "embed_features",
    "embed_files",
    "read_embeddings",
    "speaker_means",
    "speakers_path",
    "write_embeddings",
]

logger = logging.getLogger(__name__)


#: seed of the evaluation noise waveforms (training draws its noises with the run's seed)
EVAL_NOISE_SEED = 9_173


@dataclass(frozen=True)
class Degradation:
    """Short, noisy test segments for harder verification trials.

    Attributes:
        crop_seconds: keep a random window of this length (``None``: the whole utterance;
            shorter utterances are kept whole).
        snr_db: add noise at this SNR (``None``: no noise).
        seed: with the utterance's path, selects its window, noise type and noise offset.
    """

    crop_seconds: float | None = None
    snr_db: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            raise InputDataError(f"crop_seconds must be > 0, got {self.crop_seconds}")

    def describe(self) -> str:
        """e.g. ``1.5 s crops, 5 dB SNR``."""
        crop = "whole utterances" if self.crop_seconds is None else f"{self.crop_seconds:g} s crops"
        noise = "no noise" if self.snr_db is None else f"{self.snr_db:g} dB SNR"
        return f"{crop}, {noise}"


def degrade_features(feats: Iterable[np.ndarray], keys: Iterable[str],
                     degradation: Degradation) -> Iterator[np.ndarray]:
    """Apply ``degradation`` to raw fbank features (T, F), one utterance per key (its path)."""
    snr = degradation.snr_db
    noises: list[np.ndarray] = []
    if snr is not None:
        noises = [np.exp(n.astype(np.float64)) for n in noise_features(seed=EVAL_NOISE_SEED)]
    for x, key in zip(feats, keys, strict=True):
        rng = np.random.default_rng([degradation.seed, zlib.crc32(key.encode())])
        if degradation.crop_seconds is not None:
            t = max(1, round(100 * degradation.crop_seconds))
            start = int(rng.integers(0, max(x.shape[0] - t, 0) + 1))
            x = x[start:start + t]
        if snr is not None:
            src = noises[int(rng.integers(len(noises)))]
            src = np.concatenate([src] * (x.shape[0] // src.shape[0] + 1))
            offset = int(rng.integers(0, src.shape[0] - x.shape[0] + 1))
            x = mix_at_snr(x, src[offset:offset + x.shape[0]], snr)
        yield x


def embed_features(
    extractor: LoadedExtractor,
    feats: Iterable[np.ndarray],
    *,
    max_frames: int = 30_000,
    progress: bool = False,
    total: int | None = None,
) -> np.ndarray:
    """Embed raw fbank features (CMVN is applied here).

    Args:
        extractor: a loaded extractor.
        feats: (T_i, F) raw fbank per utterance.
        max_frames: padded frames per forward pass (bounds memory).
        progress: progress bar.
        total: number of utterances (for the bar).

    Returns:
        (N, E) float32 embeddings in input order.
    """
    items = list(feats)
    order = sorted(range(len(items)), key=lambda i: items[i].shape[0])
    out = np.zeros((len(items), extractor.model.embedding_dim), dtype=np.float32)
    bar = tqdm(total=total or len(items), desc="embedding", disable=not progress)
    start = 0
    with torch.inference_mode():
        while start < len(order):
            longest = items[order[start]].shape[0]
            end = start + 1
            while end < len(order) and items[order[end]].shape[0] * (end - start + 1) <= max_frames:
                end += 1
            idx = order[start:end]
            longest = items[idx[-1]].shape[0]
            x = np.zeros((len(idx), longest, items[idx[0]].shape[1]), dtype=np.float32)
            for r, i in enumerate(idx):
                x[r, : items[i].shape[0]] = extractor.cmvn.apply(items[i])
            lens = torch.tensor([items[i].shape[0] for i in idx])
            out[idx] = extractor.model(torch.from_numpy(x), lens).numpy()
            bar.update(len(idx))
            start = end
    bar.close()
    return out


def embed_cuts(
    extractor: LoadedExtractor, cuts: CutSet, table: pd.DataFrame, *, progress: bool = False,
    degradation: Degradation | None = None,
) -> pd.DataFrame:
    """Embed every cut of ``table`` (an :func:`~fairstream.sv.utterances.utterance_table`).

    Args:
        extractor: a loaded extractor.
        cuts: the lhotse CutSet the table was made from.
        table: utterance table (``cut_id`` column selects and orders the cuts).
        progress: progress bar.
        degradation: crop / add noise first (keyed by the table's ``path``).

    Returns:
        ``table`` plus an ``embedding`` column.
    """
    by_id = {c.id: c for c in cuts}
    missing = [c for c in table["cut_id"] if c not in by_id]
    if missing:
        raise InputDataError(
            f"{len(missing)} cut(s) of the table are not in the cut set: {missing[:5]}")
    feats: Iterable[np.ndarray] = (load_cut_features(by_id[c]) for c in table["cut_id"])
    if degradation is not None:
        feats = degrade_features(feats, table["path"].astype(str), degradation)
    emb = embed_features(extractor, feats, progress=progress, total=len(table))
    out = table.reset_index(drop=True).copy()
    if degradation is not None:
        seconds = [degradation.crop_seconds or math.inf] * len(out)
        out["duration"] = np.minimum(out["duration"].to_numpy(dtype=float), seconds)
    out["embedding"] = list(emb)
    return out


def embed_files(
    extractor: LoadedExtractor, paths: Sequence[str], root: str | Path, *, progress: bool = False,
    degradation: Degradation | None = None,
) -> pd.DataFrame:
    """Embed audio files named relative to ``root`` (e.g. the files of a VoxCeleb trial list).

    The speaker of ``id10270/x6uYqmx31kE/00001.wav`` is taken as its first path component.

    Raises:
        InputDataError: a file is missing or unreadable (named).
    """
    root = Path(root)
    cfg = FbankConfig()

    def load(p: str) -> np.ndarray:
        f = root / p
        try:
            audio, rate = sf.read(str(f), dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise InputDataError(f"cannot read audio {f}: {exc}") from exc
        x = to_float_samples(audio.mean(axis=1), name=str(f))
        if rate != cfg.sample_rate:
            x = resample(x, int(rate), cfg.sample_rate)
        return compute_fbank(x, cfg.sample_rate, cfg, name=str(f))

    feats = [load(p) for p in tqdm(paths, desc="features", disable=not progress)]
    if degradation is not None:
        feats = list(degrade_features(feats, paths, degradation))
    emb = embed_features(extractor, feats, progress=progress)
    return pd.DataFrame(
        {
            "path": list(paths),
            "cut_id": list(paths),
            "speaker_id": [Path(p).parts[0] if len(Path(p).parts) > 1 else p for p in paths],
            "duration": [f.shape[0] / 100.0 for f in feats],
            "embedding": list(emb),
        }
    )


def speaker_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per-speaker mean of the length-normalized utterance embeddings (+ first metadata value)."""
    emb = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    keep = [c for c in table.columns if c not in ("embedding", "path", "cut_id", "duration")]
    rows = []
    for spk, idx in table.groupby("speaker_id", sort=True).indices.items():
        row = {c: table[c].iloc[idx[0]] for c in keep}
        row["speaker_id"] = spk
        row["n_utterances"] = len(idx)
        row["embedding"] = emb[idx].mean(axis=0).astype(np.float32)
        rows.append(row)
    return pd.DataFrame(rows)


def speakers_path(path: str | Path) -> Path:
    """``embeddings.parquet`` -> ``embeddings_speakers.parquet``."""
    p = Path(path)
    return p.with_name(f"{p.stem}_speakers{p.suffix or '.parquet'}")


def _write_parquet(df: pd.DataFrame, path: Path, meta: Mapping[str, object]) -> None:
    data = df.copy()
    data["embedding"] = [np.asarray(e, dtype=np.float32) for e in data["embedding"]]
    table = pa.Table.from_pandas(data, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"fairstream"] = json.dumps(meta, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_embeddings(table: pd.DataFrame, path: str | Path, *,
                     meta: Mapping[str, object] | None = None) -> tuple[Path, Path]:
    """Write the utterance table and the per-speaker table (atomically).

    Returns:
        (utterance file, speaker file).
    """
    path = Path(path)
    meta = dict(meta or {})
    _write_parquet(table, path, {**meta, "level": "utterance"})
    spk = speakers_path(path)
    _write_parquet(speaker_means(table), spk, {**meta, "level": "speaker"})
    return path, spk


def embed_split(checkpoint: str | Path, corpus: Corpus, split: str, path: str | Path, *,
                progress: bool = False) -> Path:
    """Embed every utterance of a corpus split with a speaker checkpoint; write the utterance
    table to ``path`` and the per-speaker means beside it (:func:`speakers_path`).

    A per-speaker file newer than the checkpoint is reused.

    Returns:
        The per-speaker file (what the audit's ``embedding`` method reads).
    """
    checkpoint, path = Path(checkpoint), Path(path)
    per_speaker = speakers_path(path)
    if per_speaker.exists() and per_speaker.stat().st_mtime >= checkpoint.stat().st_mtime:
        return per_speaker
    cuts = corpus.cuts(split)
    table = utterance_table(cuts, corpus.root, corpus.speakers, split=split)
    df = embed_cuts(load_extractor(checkpoint), cuts, table, progress=progress)
    _, per_speaker = write_embeddings(df, path, meta={"checkpoint": str(checkpoint),
                                                      "split": split})
    return per_speaker


def read_embeddings(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read an embedding table: (table without the vectors, (N, E) float32 matrix).

    Raises:
        InputDataError: missing file or column, embeddings of unequal dimension, or non-finite
            values (naming the row's path).
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputDataError(f"cannot read embeddings {path}: {exc}") from exc
    key = "path" if "path" in df.columns else "speaker_id"
    for col in (key, "embedding"):
        if col not in df.columns:
            raise InputDataError(
                f"embeddings {path} have no {col!r} column (have {list(df.columns)})")
    dims = np.array([len(e) for e in df["embedding"]])
    if dims.size and (dims != dims[0]).any():
        i = int(np.flatnonzero(dims != dims[0])[0])
        raise InputDataError(
            f"embeddings {path}: {df[key].iloc[i]!r} has dimension {dims[i]}, "
            f"the first row {dims[0]}"
        )
    if len(df):
        mat = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    else:
        mat = np.zeros((0, 0), np.float32)
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        first = df[key].iloc[int(np.flatnonzero(bad)[0])]
        raise InputDataError(f"embeddings {path}: {first!r} has non-finite values")
    return df.drop(columns=["embedding"]), mat
