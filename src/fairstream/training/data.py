"""Training batches: Lhotse cuts → fbank → CMVN → SpecAugment → padded tensors.

Dimension letters: B batch, T frames, F feature bins (80), U tokens.

Pipeline (:func:`make_dataloader`):

1. A Lhotse :class:`~lhotse.dataset.DynamicBucketingSampler` groups cuts of similar
   duration into batches of at most ``max_duration`` seconds; with ``world_size > 1`` each
   rank receives its own share (Lhotse keeps the number of batches equal across ranks).
   A training run's ``data.max_duration`` is the global batch of one optimizer step, summed
   over the processes; :func:`per_rank_duration` gives each rank's ``max_duration``.
2. Features come from the cut's audio (``cut.load_audio()`` → :func:`compute_fbank`) or,
   with a feature cache (:func:`precompute_features`), from fbank arrays stored once with
   Lhotse's ``NumpyFilesWriter`` so epochs do not recompute them.
3. Global CMVN, tokenization (:class:`fairstream.tokenizer.Tokenizer`), then SpecAugment
   (:func:`spec_augment`) with a ``torch.Generator`` seeded from (seed, epoch, rank, batch
   index): the same batch gets the same masks after a resume or with any number of workers.

Exact resume: :meth:`BatchLoader.state_dict` records the epoch and the number of batches
already handed to the caller (not the number prefetched by workers);
:meth:`BatchLoader.load_state_dict` replays the sampler to that point without loading any
audio, so the following batches equal those of an uninterrupted run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler
from lhotse.features import Features
from lhotse.features.io import NumpyFilesWriter, get_reader
from lhotse.utils import fastcopy
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fairstream._io import atomic_path, atomic_write_bytes
from fairstream.errors import CorpusError, InputDataError
from fairstream.features.fbank import Cmvn, FbankConfig
from fairstream.inference.audio import cut_fbank
from fairstream.tokenizer import Tokenizer

__all__ = [
    "FEATURE_TYPE",
    "Batch",
    "BatchLoader",
    "SpecAugmentConfig",
    "collate_cuts",
    "load_cut_features",
    "make_dataloader",
    "per_rank_duration",
    "precompute_features",
    "spec_augment",
]

logger = logging.getLogger(__name__)

#: ``Features.type`` of arrays written by :func:`precompute_features`.
FEATURE_TYPE = "fairstream-fbank"


# --------------------------------------------------------------------------- batch
@dataclass(frozen=True)
class Batch:
    """A padded training batch.

    Attributes:
        features: (B, T, F) float32, CMVN applied (and SpecAugment when enabled); zero padded.
        feature_lens: (B,) int64 valid frames per utterance.
        tokens: (B, U) int64 token ids, padded with 0 (the blank id).
        token_lens: (B,) int64 valid tokens per utterance.
        cut_ids: B cut ids.
        speaker_ids: B speaker ids.
        texts: B normalized transcripts.
    """

    features: torch.Tensor
    feature_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    cut_ids: list[str]
    speaker_ids: list[str]
    texts: list[str]

    @property
    def size(self) -> int:
        """Batch size B."""
        return len(self.cut_ids)

    def to(self, device: torch.device | str) -> Batch:
        """A copy with the tensors on ``device``."""
        kw: dict[str, Any] = {}  # Any: the fields' values, each of its own type
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return Batch(**kw)


# --------------------------------------------------------------------------- SpecAugment
@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment with masks adapted to the utterance length (Park et al., 2019/2020).

    Attributes:
        num_freq_masks: frequency masks per utterance.
        freq_mask_width: maximum frequency-mask width F (width drawn from ``[0, F]``).
        time_masks_per_frame: number of time masks = ``floor(T * this)`` (adaptive
            multiplicity), capped by ``max_time_masks``.
        time_mask_ratio: maximum time-mask width as a fraction of T ...
        time_mask_max_width: ... and never more than this many frames.
        max_time_masks: upper bound on time masks per utterance.
        time_warp: maximum warp distance W in frames; 0 disables time warping.
        freq_warp: maximum relative warp of the frequency axis (VTLP-like, Jaitly & Hinton
            2013): each utterance's mel bins are resampled by a factor drawn from
            ``[1 - freq_warp, 1 + freq_warp]``, as if the vocal tract were that much shorter or
            longer; 0 disables it. Applied to the normalized features before the masks.
        mask_value: value written into masked cells (0 = the CMVN mean).
    """

    num_freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks_per_frame: float = 0.02
    time_mask_ratio: float = 0.05
    time_mask_max_width: int = 40
    max_time_masks: int = 20
    time_warp: int = 0
    freq_warp: float = 0.0
    mask_value: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_freq_masks", "freq_mask_width", "time_mask_max_width",
                     "max_time_masks", "time_warp"):
            if getattr(self, name) < 0:
                raise InputDataError(
                    f"SpecAugmentConfig.{name} must be >= 0, got {getattr(self, name)}"
                )
        if not 0 <= self.time_masks_per_frame <= 1:
            raise InputDataError(
                "SpecAugmentConfig.time_masks_per_frame must be in [0, 1], "
                f"got {self.time_masks_per_frame}"
            )
        if not 0 <= self.time_mask_ratio <= 1:
            raise InputDataError(
                f"SpecAugmentConfig.time_mask_ratio must be in [0, 1], got {self.time_mask_ratio}"
            )
        if not 0 <= self.freq_warp < 0.5:
            raise InputDataError(
                f"SpecAugmentConfig.freq_warp must be in [0, 0.5), got {self.freq_warp}"
            )


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (inclusive)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (1,), generator=gen).item())


def freq_warp(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Resample the frequency axis of (B, T, F) features: output bin ``j`` of utterance ``b``
    takes the value at bin ``j / factors[b]`` (linear interpolation, clamped to the last bin).
    A factor above 1 moves spectral content up (a shorter vocal tract)."""
    num_bins = x.shape[2]
    src = (torch.arange(num_bins, dtype=torch.float32).unsqueeze(0)
           / factors.to(torch.float32).unsqueeze(1)).clamp(0, num_bins - 1)  # (B, F)
    lo = src.floor().long().clamp(max=num_bins - 2)
    frac = (src - lo).unsqueeze(1)  # (B, 1, F)
    index = lo.unsqueeze(1).expand(-1, x.shape[1], -1)
    left = x.gather(2, index)
    right = x.gather(2, index + 1)
    return left + (right - left) * frac


def _time_warp(x: torch.Tensor, w: int, gen: torch.Generator) -> torch.Tensor:
    """Warp (T, F) along time around a random centre by up to ``w`` frames; keeps T."""
    t = x.shape[0]
    if w <= 0 or t <= 2 * w + 1:
        return x
    centre = _randint(gen, w, t - w - 1)
    dest = _randint(gen, centre - w, centre + w)
    dest = min(max(dest, 1), t - 1)
    if dest == centre:
        return x
    xt = x.t().unsqueeze(0)  # (1, F, T)
    left = F.interpolate(xt[:, :, :centre], size=dest, mode="linear", align_corners=False)
    right = F.interpolate(xt[:, :, centre:], size=t - dest, mode="linear", align_corners=False)
    return torch.cat([left, right], dim=2)[0].t().contiguous()


def spec_augment(
    features: torch.Tensor,
    feature_lens: torch.Tensor,
    config: SpecAugmentConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Apply frequency warp, time warp, frequency masks and length-adaptive time masks.

    Masks only touch each utterance's valid frames; padding stays untouched.

    Args:
        features: (B, T, F) float.
        feature_lens: (B,) int valid frames.
        config: the policy.
        generator: source of randomness (same state → same masks).

    Returns:
        (B, T, F) new tensor.
    """
    out = features.clone()
    num_bins = out.shape[2]
    if config.freq_warp > 0 and num_bins > 1:
        u = torch.rand(out.shape[0], generator=generator)
        out = freq_warp(out, 1.0 + (2.0 * u - 1.0) * config.freq_warp)
    for b in range(out.shape[0]):
        t = int(feature_lens[b])
        if t == 0:
            continue
        if config.time_warp > 0:
            out[b, :t] = _time_warp(out[b, :t], config.time_warp, generator)
        for _ in range(config.num_freq_masks):
            width = _randint(generator, 0, min(config.freq_mask_width, num_bins))
            start = _randint(generator, 0, num_bins - width)
            out[b, :t, start:start + width] = config.mask_value
        n_time = min(config.max_time_masks, math.floor(t * config.time_masks_per_frame))
        max_w = min(config.time_mask_max_width, int(t * config.time_mask_ratio))
        for _ in range(n_time):
            width = _randint(generator, 0, max_w)
            start = _randint(generator, 0, t - width)
            out[b, start:start + width, :] = config.mask_value
    return out


# --------------------------------------------------------------------------- features
def load_cut_features(cut: Cut, config: FbankConfig | None = None) -> np.ndarray:
    """Raw (uncompensated) fbank of one cut: from the feature cache if attached, else audio.

    Returns:
        (T, F) float32.

    Raises:
        CorpusError: naming the cut when its audio cannot be read or is too short.
    """
    cfg = config or FbankConfig()
    feats_meta = getattr(cut, "features", None)
    if feats_meta is not None and feats_meta.type == FEATURE_TYPE:
        try:
            if feats_meta.storage_type == NumpyFilesWriter.name:
                # plain np.load: the Lhotse reader memoizes arrays per reader instance
                path = Path(feats_meta.storage_path) / feats_meta.storage_key
                arr = np.load(path, allow_pickle=False)
            else:
                reader = get_reader(feats_meta.storage_type)(feats_meta.storage_path)
                arr = np.asarray(reader.read(feats_meta.storage_key), dtype=np.float32)
        except Exception as e:
            raise CorpusError(f"cut {cut.id}: cached features cannot be read: {e}") from e
        if arr.ndim != 2 or arr.shape[1] != cfg.num_mel_bins:
            raise CorpusError(f"cut {cut.id}: cached features have shape {arr.shape}")
        return np.asarray(arr, dtype=np.float32)
    return cut_fbank(cut, cfg)


def _cut_signature(cut: Cut) -> str:
    rec = cut.recording
    src = ",".join(str(x.source) for x in rec.sources) if rec is not None else ""
    tfm = repr([t.to_dict() for t in rec.transforms or []]) if rec is not None else ""
    return f"{cut.id}|{cut.recording_id}|{cut.start:.4f}|{cut.duration:.4f}|{src}|{tfm}"


# Any: lhotse cut manifests are untyped dicts
def _cache_one(args: tuple[dict[str, Any], str, FbankConfig]) -> dict[str, Any]:
    """Compute (or find) one cut's cached fbank; return the cut dict with ``features`` set."""
    cut_dict, out_dir, cfg = args
    from lhotse.serialization import deserialize_item

    cut = deserialize_item(cut_dict)
    digest = hashlib.sha256(f"{_cut_signature(cut)}|{cfg!r}".encode()).hexdigest()
    safe_id = cut.id.replace(os.sep, "_")
    key = f"{digest[:2]}/{safe_id}-{digest[:12]}.npy"
    path = Path(out_dir) / key
    shape: tuple[int, ...] | None = None
    if path.is_file():  # written atomically by an earlier call: reuse
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError):
            logger.warning("recomputing unreadable cached features %s", path)
    if shape is not None and len(shape) == 2 and shape[1] == cfg.num_mel_bins:
        n_frames, n_feats = shape
    else:
        feats = load_cut_features(cut, cfg)
        n_frames, n_feats = feats.shape
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # concurrent writers (DDP ranks) write identical content
            np.save(f, feats, allow_pickle=False)
    meta = Features(
        type=FEATURE_TYPE, num_frames=int(n_frames), num_features=int(n_feats),
        frame_shift=cfg.frame_shift, sampling_rate=cfg.sample_rate, start=cut.start,
        duration=cut.duration, storage_type=NumpyFilesWriter.name, storage_path=str(out_dir),
        storage_key=key, recording_id=cut.recording_id, channels=0,
    )
    out: dict[str, Any] = fastcopy(cut, features=meta).to_dict()  # Any: lhotse manifest
    return out


def _cache_fingerprint(cuts: CutSet, cfg: FbankConfig) -> str:
    h = hashlib.sha256(repr(cfg).encode())
    for c in cuts:
        h.update((_cut_signature(c) + "\n").encode())
    return h.hexdigest()[:16]


def precompute_features(
    cuts: CutSet,
    out_dir: str | os.PathLike[str],
    *,
    config: FbankConfig | None = None,
    num_jobs: int = 1,
    progress: bool = False,
) -> CutSet:
    """Compute fbank once per cut and store it (Lhotse ``numpy_files`` storage, one .npy per cut).

    The returned cuts carry a ``features`` manifest pointing at the stored arrays;
    :func:`load_cut_features` (and so :func:`make_dataloader`) reads them instead of decoding
    audio. Stored features are raw fbank: CMVN and SpecAugment stay on the fly.

    Reuse: each array is named by a hash of the cut (id, audio source, transforms, span) and
    the feature config and written atomically, so any later call — with the same cuts, a
    subset, or from another DDP rank at the same time — computes only what is missing. The
    whole cut list is additionally cached as ``OUT/cuts_<fingerprint>.jsonl.gz``.

    Args:
        cuts: cuts with recordings.
        out_dir: cache directory.
        config: feature settings.
        num_jobs: worker processes.
        progress: show a progress bar.

    Returns:
        The cuts with features attached (same order, same ids).
    """
    cfg = config or FbankConfig()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuts = cuts.to_eager()
    manifest = out / f"cuts_{_cache_fingerprint(cuts, cfg)}.jsonl.gz"
    if manifest.exists():
        logger.info("reusing feature cache %s", manifest)
        return CutSet.from_file(manifest).to_eager()
    jobs = [(c.to_dict(), str(out), cfg) for c in cuts]
    from lhotse.serialization import deserialize_item

    if num_jobs > 1:
        with ProcessPoolExecutor(num_jobs) as ex:
            dicts = list(tqdm(ex.map(_cache_one, jobs, chunksize=16), total=len(jobs),
                              desc="features", disable=not progress))
    else:
        dicts = [_cache_one(j) for j in tqdm(jobs, desc="features", disable=not progress)]
    result = CutSet.from_cuts(deserialize_item(d) for d in dicts)
    lines = "".join(json.dumps(c.to_dict()) + "\n" for c in result)  # as CutSet.to_file writes
    atomic_write_bytes(manifest, gzip.compress(lines.encode("utf-8"), mtime=0))
    return result


# --------------------------------------------------------------------------- collate
def collate_cuts(
    cuts: Sequence[Cut],
    *,
    tokenizer: Tokenizer,
    cmvn: Cmvn | None,
    spec_augment_config: SpecAugmentConfig | None = None,
    generator: torch.Generator | None = None,
    fbank_config: FbankConfig | None = None,
) -> Batch:
    """Turn cuts into a :class:`Batch`, sorted by feature length (longest first).

    Raises:
        CorpusError: naming a cut without exactly one supervision, text or speaker.
    """
    items = []
    for cut in cuts:
        if len(cut.supervisions) != 1:
            raise CorpusError(f"cut {cut.id} has {len(cut.supervisions)} supervisions, expected 1")
        sup = cut.supervisions[0]
        if sup.text is None:
            raise CorpusError(f"cut {cut.id} has no transcript")
        feats = load_cut_features(cut, fbank_config)
        if cmvn is not None:
            feats = cmvn.apply(feats)
        items.append((feats, tokenizer.encode(sup.text), cut.id, str(sup.speaker or ""), sup.text))
    items.sort(key=lambda it: (-it[0].shape[0], it[2]))
    bsz = len(items)
    t_max = max(it[0].shape[0] for it in items)
    u_max = max(len(it[1]) for it in items)
    num_bins = items[0][0].shape[1]
    features = torch.zeros(bsz, t_max, num_bins, dtype=torch.float32)
    tokens = torch.zeros(bsz, u_max, dtype=torch.int64)
    feature_lens = torch.empty(bsz, dtype=torch.int64)
    token_lens = torch.empty(bsz, dtype=torch.int64)
    for i, (f, toks, *_rest) in enumerate(items):
        features[i, : f.shape[0]] = torch.from_numpy(f)
        feature_lens[i] = f.shape[0]
        tokens[i, : len(toks)] = torch.tensor(toks, dtype=torch.int64)
        token_lens[i] = len(toks)
    if spec_augment_config is not None:
        if generator is None:
            raise InputDataError("collate_cuts: SpecAugment needs a torch.Generator")
        features = spec_augment(features, feature_lens, spec_augment_config, generator)
    return Batch(
        features=features, feature_lens=feature_lens, tokens=tokens, token_lens=token_lens,
        cut_ids=[it[2] for it in items], speaker_ids=[it[3] for it in items],
        texts=[it[4] for it in items],
    )


class _CutsDataset(Dataset[Batch]):
    """Map-style dataset whose "indices" are ``(epoch, batch_index, CutSet)`` from the sampler."""

    def __init__(self, *, tokenizer: Tokenizer, cmvn: Cmvn | None,
                 spec_augment_config: SpecAugmentConfig | None, seed: int, rank: int,
                 fbank_config: FbankConfig) -> None:
        self.tokenizer = tokenizer
        self.cmvn = cmvn
        self.spec_augment_config = spec_augment_config
        self.seed = seed
        self.rank = rank
        self.fbank_config = fbank_config

    def __getitem__(self, item: tuple[int, int, CutSet]) -> Batch:
        epoch, index, cuts = item
        gen = None
        if self.spec_augment_config is not None:
            state = np.random.SeedSequence([self.seed, epoch, self.rank, index]).generate_state(2)
            gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return collate_cuts(list(cuts), tokenizer=self.tokenizer, cmvn=self.cmvn,
                            spec_augment_config=self.spec_augment_config, generator=gen,
                            fbank_config=self.fbank_config)

    def __len__(self) -> int:  # pragma: no cover - lengths come from the sampler
        raise TypeError("_CutsDataset has no length; iterate through BatchLoader")


class _IndexedSampler:
    """Wraps the Lhotse sampler: skips ``skip`` batches, yields ``(epoch, index, cuts)``."""

    def __init__(self, sampler: DynamicBucketingSampler, epoch: int, skip: int) -> None:
        self.sampler, self.epoch, self.skip = sampler, epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int, CutSet]]:
        self.sampler.allow_iter_to_reset_state()
        self.sampler.set_epoch(self.epoch)
        for index, cuts in enumerate(self.sampler):
            if index >= self.skip:
                yield self.epoch, index, cuts


class BatchLoader:
    """Iterable over :class:`Batch` for one epoch at a time, with exact resume.

    Attributes:
        sampler: the Lhotse ``DynamicBucketingSampler`` (rank-sharded).
        epoch: current epoch (set with :meth:`set_epoch`).
    """

    def __init__(self, sampler: DynamicBucketingSampler, dataset: _CutsDataset,
                 num_workers: int) -> None:
        self.sampler = sampler
        self.dataset = dataset
        self.num_workers = num_workers
        self.epoch = 0
        self._batches_done = 0
        self._resume_skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shuffling seed). Setting the restored epoch keeps the resume point."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._resume_skip = 0
            self._batches_done = 0

    def __iter__(self) -> Iterator[Batch]:
        skip, self._resume_skip = self._resume_skip, 0
        return self._iterate(skip)

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` after its first ``skip`` (the training loop's data source).

        ``batches(e, skip=k)`` yields exactly what ``batches(e)`` yields after ``k`` batches;
        skipped batches cost only sampler work, no audio or features are loaded.
        """
        if skip < 0:
            raise InputDataError(f"skip must be >= 0, got {skip}")
        self.set_epoch(epoch)
        self._resume_skip = 0
        return self._iterate(skip)

    def _iterate(self, skip: int) -> Iterator[Batch]:
        self._batches_done = skip
        return self._generate(skip)

    def _generate(self, skip: int) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset,
            sampler=_IndexedSampler(self.sampler, self.epoch, skip),
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=2 if self.num_workers > 0 else None,
        )
        for batch in loader:
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Position to resume from: epoch and batches already returned in it."""
        return {"epoch": self.epoch, "batches_done": self._batches_done,
                "seed": self.dataset.seed, "rank": self.dataset.rank,
                "world_size": int(self.sampler.world_size)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume: the next iteration starts after the recorded batch."""
        for key, mine in (("seed", self.dataset.seed), ("rank", self.dataset.rank),
                          ("world_size", int(self.sampler.world_size))):
            if state.get(key, mine) != mine:
                raise InputDataError(
                    f"data loader state has {key}={state.get(key)!r}, this loader {mine!r}"
                )
        self.epoch = int(state["epoch"])
        self._batches_done = int(state["batches_done"])
        self._resume_skip = self._batches_done


def per_rank_duration(max_duration: float, world_size: int) -> float:
    """Seconds of audio per batch on each of ``world_size`` processes.

    ``max_duration`` is the global batch: the seconds of audio one optimizer step sees, summed
    over all processes, so the batch (and the model a number of steps trains) does not depend
    on how many processes share the work.

    Raises:
        InputDataError: ``max_duration`` is not positive or ``world_size`` is below 1.
    """
    if max_duration <= 0:
        raise InputDataError(f"max_duration must be positive, got {max_duration}")
    if world_size < 1:
        raise InputDataError(f"world_size must be at least 1, got {world_size}")
    return max_duration / world_size


def make_dataloader(
    cuts: CutSet,
    *,
    tokenizer: Tokenizer,
    cmvn: Cmvn | None,
    max_duration: float,
    shuffle: bool,
    spec_augment: SpecAugmentConfig | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    feature_cache: str | os.PathLike[str] | None = None,
    num_buckets: int = 10,
    fbank_config: FbankConfig | None = None,
    drop_last: bool = False,
    progress: bool = False,
) -> BatchLoader:
    """Build the training (or evaluation) batch iterator.

    Args:
        cuts: one supervision per cut.
        tokenizer: text → ids.
        cmvn: global normalization (None: raw fbank).
        max_duration: seconds of audio per batch of this rank (in a training run,
            :func:`per_rank_duration` of the global ``data.max_duration``).
        shuffle: shuffle within the bucketing sampler (seeded by ``seed`` and the epoch).
        spec_augment: augmentation policy, or None.
        seed: sampler and augmentation seed.
        rank: this process's rank; world_size: number of processes (DDP sharding).
        num_workers: DataLoader worker processes.
        feature_cache: directory for :func:`precompute_features`; computed once, then reused.
        num_buckets: duration buckets of the sampler.
        fbank_config: feature settings.
        drop_last: drop the last partial batch.
        progress: progress bar while building the feature cache.

    Returns:
        :class:`BatchLoader` (iterate once per epoch; ``set_epoch`` between epochs).
    """
    if max_duration <= 0:
        raise InputDataError(f"max_duration must be positive, got {max_duration}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputDataError(f"invalid rank {rank} for world_size {world_size}")
    fcfg = fbank_config or FbankConfig()
    cuts = cuts.to_eager()
    if len(cuts) == 0:
        raise CorpusError("make_dataloader: no cuts given")
    too_long = [(c.id, c.duration) for c in cuts if c.duration > max_duration]
    if too_long:
        raise InputDataError(
            f"cut {too_long[0][0]} ({too_long[0][1]:.2f} s) is longer than "
            f"max_duration={max_duration} s ({len(too_long)} such cuts)"
        )
    if feature_cache is not None:
        cuts = precompute_features(cuts, feature_cache, config=fcfg,
                                   num_jobs=max(1, num_workers), progress=progress)
    with warnings.catch_warnings():
        # an eager CutSet is what we want here (we validated and maybe cached it)
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
        sampler = DynamicBucketingSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
            num_buckets=max(1, min(num_buckets, len(cuts))), drop_last=drop_last,
            rank=rank, world_size=world_size,
        )
    dataset = _CutsDataset(tokenizer=tokenizer, cmvn=cmvn, spec_augment_config=spec_augment,
                           seed=seed, rank=rank, fbank_config=fcfg)
    return BatchLoader(sampler, dataset, num_workers)
