"""Speaker embeddings from a trained recognizer: statistics of its encoder states.

For every utterance the transducer's encoder runs over the whole utterance (features and CMVN
exactly as :func:`~fairstream.inference.decode_cuts` computes them offline; for the streaming
encoders an offline pass gives the frames a stream would); the mean and the standard deviation
of its output frames (or of the output of one of its layers) over time describe the
utterance. A speaker's embedding is the **mean over their utterances** of these
per-utterance vectors: every utterance weighs the same, whatever its length.
``pooling="mean"`` uses the frame means only (D dims); ``"mean+std"`` appends the frame
standard deviations (2·D dims).

The audit uses this as ``--embeddings encoder:CKPT`` (see
:mod:`fairstream.audit.embedding_cohorts`): the encoder is trained to tell sounds apart, so
its states see pronunciation (accent) where a speaker-verification model is trained to see
the voice.

Per-utterance statistics are cached in ``<cache_dir>/encoder_embeddings/`` under a key made of
the checkpoint's SHA-256, the corpus fingerprint (``corpus.json``; for cuts given directly, a
hash of their manifest entries), the layer and the feature settings; a later call computes
only the utterances the cache lacks. The default cache directory is ``$FAIRSTREAM_CACHE_DIR``,
else ``$XDG_CACHE_HOME/fairstream``, else ``~/.cache/fairstream``.

Example::

    speakers, matrix = encoder_embeddings("exp/averaged.pt", "data/demo", "test")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lhotse.cut import Cut
from tqdm.auto import tqdm

from fairstream._io import atomic_path
from fairstream.errors import InputDataError
from fairstream.features.fbank import FbankConfig
from fairstream.inference.decode import _batches
from fairstream.inference.model import LoadedModel, load_transducer

__all__ = [
    "CACHE_ENV",
    "POOLINGS",
    "Pooling",
    "UtteranceEncoderStats",
    "default_cache_dir",
    "encoder_embeddings",
    "utterance_encoder_stats",
]

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "mean+std"]
#: the poolings :meth:`UtteranceEncoderStats.vectors` knows.
POOLINGS: tuple[str, ...] = ("mean", "mean+std")
#: environment variable naming the cache directory.
CACHE_ENV = "FAIRSTREAM_CACHE_DIR"
#: bump when what is cached changes meaning (part of the cache key).
_CACHE_FORMAT = 1
_CACHE_SUBDIR = "encoder_embeddings"


@dataclass(frozen=True)
class UtteranceEncoderStats:
    """Per-utterance statistics of encoder frames.

    Attributes:
        utt_ids: (N,) utterance ids (the supervision id, as in the results table), sorted.
        speaker_ids: (N,) their speakers.
        mean: (N, D) float32, mean of the frames over time.
        std: (N, D) float32, standard deviation of the frames over time.
        frames: (N,) int64, encoder frames of each utterance.
        skipped: ``(utterance id, reason)`` of cuts left out (unreadable or too short audio,
            no speaker).
        cache_file: the cache file read or written (None: no cache).
        from_cache: utterances taken from the cache rather than computed.
    """

    utt_ids: np.ndarray
    speaker_ids: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    frames: np.ndarray
    skipped: tuple[tuple[str, str], ...] = ()
    cache_file: Path | None = None
    from_cache: int = 0

    def vectors(self, pooling: Pooling = "mean") -> np.ndarray:
        """(N, D) frame means, or (N, 2·D) means and standard deviations."""
        if pooling == "mean":
            return self.mean
        if pooling == "mean+std":
            return np.concatenate([self.mean, self.std], axis=1)
        raise InputDataError(f"unknown pooling {pooling!r}; use one of {list(POOLINGS)}")

    def per_speaker(self, pooling: Pooling = "mean") -> tuple[np.ndarray, np.ndarray]:
        """Mean over each speaker's utterances: ``(speaker ids (S,) sorted, matrix (S, ·))``."""
        frame = pd.DataFrame(self.vectors(pooling).astype(np.float64))
        means = frame.groupby(self.speaker_ids, sort=True).mean()
        return means.index.to_numpy(dtype=object), means.to_numpy(dtype=np.float32)


def default_cache_dir() -> Path:
    """The cache directory: ``$FAIRSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/fairstream``,
    else ``~/.cache/fairstream``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fairstream"


def encoder_embeddings(
    checkpoint: str | os.PathLike[str] | LoadedModel,
    source: str | os.PathLike[str] | Iterable[Cut],
    split: str | Sequence[str] | None = None,
    *,
    pooling: Pooling = "mean",
    **kwargs: Any,  # Any: the keyword arguments of utterance_encoder_stats
) -> tuple[np.ndarray, np.ndarray]:
    """Per-speaker encoder embeddings of a corpus split (or of cuts).

    Args:
        checkpoint: a transducer checkpoint (``fairstream train``) or a loaded one.
        source: a corpus directory, or cuts (e.g. a Lhotse ``CutSet``).
        split: split(s) of the corpus (None: all); not used with cuts.
        pooling: ``"mean"`` or ``"mean+std"`` of the frames of each utterance.
        **kwargs: passed to :func:`utterance_encoder_stats` (``utterances``, ``layer``,
            ``max_duration``, ``cache_dir``, ``cache``, ``progress``).

    Returns:
        (speaker ids (S,) sorted, matrix (S, D) float32; D doubles with ``"mean+std"``).
    """
    return utterance_encoder_stats(checkpoint, source, split, **kwargs).per_speaker(pooling)


def utterance_encoder_stats(
    checkpoint: str | os.PathLike[str] | LoadedModel,
    source: str | os.PathLike[str] | Iterable[Cut],
    split: str | Sequence[str] | None = None,
    *,
    utterances: Collection[str] | None = None,
    layer: str | None = None,
    max_duration: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    progress: bool = False,
) -> UtteranceEncoderStats:
    """Mean and standard deviation over time of the encoder frames of every utterance.

    Args:
        checkpoint: a transducer checkpoint, or one loaded with
            :func:`~fairstream.inference.load_transducer` (then ``cache`` needs its file).
        source: a corpus directory, or cuts.
        split: split(s) of the corpus to read (None: every split); not used with cuts.
        utterances: keep only these utterance ids (None: all).
        layer: name of a submodule of the encoder whose output (B, T', ·) is summarized
            instead of the encoder output, e.g. ``"norms.1"`` (the residual stream entering
            the second LSTM layer of the ``lstm`` encoder); None: the encoder output.
        max_duration: seconds of audio per forward batch (similar lengths together).
        cache_dir: cache directory (None: :func:`default_cache_dir`).
        cache: read and update the cache.
        progress: progress bar over utterances.

    Raises:
        InputDataError: the checkpoint does not exist, a split or the layer is unknown, or an
            utterance id appears twice.
        CheckpointError: the checkpoint is not a transducer checkpoint.
        CorpusError: the corpus directory is not a readable corpus.
    """
    if isinstance(checkpoint, LoadedModel):
        loaded: LoadedModel | None = checkpoint
        ckpt_path = checkpoint.path
    else:
        loaded, ckpt_path = None, Path(checkpoint)
        if not ckpt_path.is_file():
            raise InputDataError(f"encoder checkpoint not found: {ckpt_path}")
    cuts, fingerprint = _select_cuts(source, split, utterances)
    path = None
    if cache:
        key = {"format": _CACHE_FORMAT, "checkpoint": _sha256(ckpt_path), "corpus": fingerprint,
               "layer": layer, "fbank": repr(FbankConfig())}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        path = Path(cache_dir or default_cache_dir()) / _CACHE_SUBDIR / f"{digest[:24]}.npz"
    known = _read_cache(path)
    todo = [c for c in cuts if _utt_id(c) not in known]
    skipped: list[tuple[str, str]] = []
    computed: dict[str, _Row] = {}
    if todo:
        model = loaded if loaded is not None else load_transducer(ckpt_path)
        computed = _compute(model, todo, layer, max_duration, skipped, progress)
        known.update(computed)
        if path is not None and computed:
            _write_cache(path, known)
    rows = [known[u] for u in sorted({_utt_id(c) for c in cuts}) if u in known]
    dim = rows[0].mean.shape[0] if rows else 0
    return UtteranceEncoderStats(
        utt_ids=np.array([r.utt_id for r in rows], dtype=object),
        speaker_ids=np.array([r.speaker_id for r in rows], dtype=object),
        mean=np.stack([r.mean for r in rows]) if rows else np.zeros((0, dim), np.float32),
        std=np.stack([r.std for r in rows]) if rows else np.zeros((0, dim), np.float32),
        frames=np.array([r.frames for r in rows], dtype=np.int64),
        skipped=tuple(skipped), cache_file=path,
        from_cache=len(rows) - len(computed),
    )


@dataclass(frozen=True)
class _Row:
    utt_id: str
    speaker_id: str
    mean: np.ndarray
    std: np.ndarray
    frames: int


def _utt_id(cut: Cut) -> str:
    """The results table's id of a cut: its supervision's id (the cut id if it has several)."""
    return str(cut.supervisions[0].id) if len(cut.supervisions) == 1 else str(cut.id)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _select_cuts(
    source: str | os.PathLike[str] | Iterable[Cut],
    split: str | Sequence[str] | None,
    utterances: Collection[str] | None,
) -> tuple[list[Cut], str]:
    """The cuts to embed, and a fingerprint of what they were taken from."""
    wanted = None if utterances is None else {str(u) for u in utterances}
    if isinstance(source, (str, os.PathLike)):
        from fairstream.data.corpus import load_corpus

        corpus = load_corpus(source)
        names = corpus.splits if split is None else [split] if isinstance(split, str) else split
        unknown = [s for s in names if s not in corpus.splits]
        if unknown:
            raise InputDataError(f"corpus {corpus.root} has no split(s) {unknown}; "
                                 f"splits: {corpus.splits}")
        fingerprint = str(corpus.info.get("fingerprint") or "")
        if not fingerprint:  # an older corpus: hash its manifests instead
            fingerprint = "|".join(_sha256(corpus.manifest_path(s, "cuts"))
                                   for s in corpus.splits)
        pool: Iterable[Cut] = (c for s in names for c in corpus.cuts(s))
    else:
        pool = list(source)
        fingerprint = hashlib.sha256(json.dumps(
            sorted(json.dumps(c.to_dict(), sort_keys=True, default=str) for c in pool)
        ).encode()).hexdigest()
    cuts: dict[str, Cut] = {}
    for cut in pool:
        uid = _utt_id(cut)
        if wanted is not None and uid not in wanted:
            continue
        if uid in cuts:
            raise InputDataError(f"utterance id {uid!r} appears twice among the cuts")
        cuts[uid] = cut
    return [cuts[u] for u in sorted(cuts)], fingerprint


@torch.no_grad()
def _compute(
    loaded: LoadedModel,
    cuts: list[Cut],
    layer: str | None,
    max_duration: float,
    skipped: list[tuple[str, str]],
    progress: bool,
) -> dict[str, _Row]:
    model = loaded.model
    model.eval()
    speakers: dict[str, str] = {}
    uid_of = {c.id: _utt_id(c) for c in cuts}
    usable = []
    for cut in cuts:
        spk = cut.supervisions[0].speaker if cut.supervisions else None
        if spk is None or str(spk) == "":
            skipped.append((_utt_id(cut), "the cut has no speaker"))
        else:
            speakers[cut.id] = str(spk)
            usable.append(cut)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        prefix = "encoder."
        modules = {n[len(prefix):]: m for n, m in model.named_modules() if n.startswith(prefix)}
        if layer not in modules:
            raise InputDataError(f"the encoder has no layer {layer!r}; layers: "
                                 f"{list(modules)[:30]}")

        def keep(_m: torch.nn.Module, _i: object, out: object) -> None:
            captured.append(out[0] if isinstance(out, tuple) else out)  # type: ignore[arg-type]

        handle = modules[layer].register_forward_hook(keep)
    out: dict[str, _Row] = {}
    bar = tqdm(total=len(usable), desc="encoder embeddings", unit="utt", disable=not progress)
    bad: list[tuple[str, str]] = []
    try:
        for features, lens, cut_ids in _batches(usable, loaded.cmvn, max_duration, "skip", bad):
            captured.clear()
            enc, enc_lens = model.encode(features, lens)
            h = captured[-1] if layer is not None else enc
            if h.dim() != 3 or h.shape[:2] != enc.shape[:2]:
                raise InputDataError(
                    f"layer {layer!r} outputs shape {tuple(h.shape)}; a (batch, frames, dims) "
                    f"tensor with the encoder's {enc.shape[1]} frames is needed")
            mean, std = _masked_moments(h, enc_lens)
            for i, cid in enumerate(cut_ids):
                uid = uid_of[cid]
                out[uid] = _Row(uid, speakers[cid], mean[i], std[i], int(enc_lens[i]))
            bar.update(len(cut_ids))
    finally:
        bar.close()
        if handle is not None:
            handle.remove()
    skipped.extend((uid_of[cid], reason) for cid, reason in bad)
    return out


def _masked_moments(h: torch.Tensor, lens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the first ``lens`` frames: (B, T, D) → 2 × (B, D)."""
    x = h.to(torch.float64)
    valid = (torch.arange(x.shape[1])[None, :] < lens[:, None]).to(x.dtype)[..., None]
    n = lens.to(x.dtype)[:, None]
    mean = (x * valid).sum(1) / n
    var = (((x - mean[:, None]) ** 2) * valid).sum(1) / n
    return mean.float().numpy(), var.sqrt().float().numpy()


def _read_cache(path: Path | None) -> dict[str, _Row]:
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            utt, spk = z["utt_ids"].astype(str), z["speaker_ids"].astype(str)
            mean, std, frames = z["mean"], z["std"], z["frames"]
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
        return {}
    return {u: _Row(u, s, mean[i], std[i], int(frames[i]))
            for i, (u, s) in enumerate(zip(utt, spk))}


def _write_cache(path: Path, rows: dict[str, _Row]) -> None:
    order = sorted(rows)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, utt_ids=np.array(order, dtype=str),
                 speaker_ids=np.array([rows[u].speaker_id for u in order], dtype=str),
                 mean=np.stack([rows[u].mean for u in order]),
                 std=np.stack([rows[u].std for u in order]),
                 frames=np.array([rows[u].frames for u in order], dtype=np.int64))
    logger.info("encoder embeddings of %d utterances cached in %s", len(order), path)
