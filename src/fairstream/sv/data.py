"""Speaker-balanced training batches with additive-noise augmentation, for the one training loop.

A batch holds ``speakers_per_batch`` distinct speakers × ``utterances_per_speaker`` utterances
each (so every batch has same-speaker pairs for the pairwise loss), each cut to a random crop of
``crop_frames`` frames (shorter utterances are repeated to length).

Noise augmentation works on the fbank features, exactly where it is cheap: the filterbank is
linear in the power spectrum, so for noise uncorrelated with the speech the expected mel power
of the mix is the sum of the two, and the noisy log-mel features are
``log(exp(F_speech) + g · P_noise)``, with ``g`` set so that the mel-power ratio is the drawn SNR.
Noise sources: white, pink and brown noise (fixed waveforms, fbank computed once) and babble
(the mel power of three other training utterances). Features are computed once per cut (from
the optional feature cache of :func:`fairstream.training.data.precompute_features`), kept in
memory as float16, and CMVN is applied after the augmentation.

Group balancing (``balance``, by the speaker metadata column ``balance_by``, e.g. the accent):
``"sampling"`` draws each batch's speakers with probability inversely proportional to the size of
their group among the training speakers (every group equally likely per draw, speakers still
distinct within a batch); ``"weights"`` keeps the plain speaker order and gives every sample the
loss weight ``S / (G · S_g)`` (S training speakers, G groups, S_g speakers in the sample's group:
mean weight 1 over speakers), carried by the batch as ``SpeakerBatch.weights``. Group sizes are
counted in speakers because batches draw speakers, not utterances, uniformly.

Batches are a pure function of (seed, epoch, batch index) — :class:`SpeakerBatches` satisfies
the :class:`fairstream.training.loop.DataSource` protocol, so resuming is exact.

Dimension letters: B batch (= P speakers × K utterances), T frames (= crop), F feature bins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lhotse import CutSet
from tqdm.auto import tqdm

from fairstream.errors import InputDataError
from fairstream.features.fbank import Cmvn, FbankConfig, compute_fbank
from fairstream.training.data import load_cut_features, precompute_features

__all__ = ["SpeakerBatch", "SpeakerBatches", "SvDataConfig", "inverse_group_weights",
           "mix_at_snr", "noise_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SvDataConfig:
    """Data settings of speaker-embedding training.

    Attributes:
        corpus: corpus directory (the CLI's ``--corpus`` sets it).
        train_split: split whose speakers are the training classes.
        speakers_per_batch: P distinct speakers per batch.
        utterances_per_speaker: K utterances per speaker per batch (>= 2 for positive pairs).
        crop_frames: T, frames per training crop (10 ms each).
        noise_prob: probability that a crop gets additive noise.
        snr_db: (min, max) SNR of the added noise, uniform.
        batches_per_epoch: batches per epoch (``None``: utterances / batch size).
        feature_cache: directory for cached fbank features (``None``: compute in memory).
        num_jobs: processes computing features for the cache.
        balance: ``"none"`` (plain speaker cycling), ``"sampling"`` (group-balanced speaker
            sampling) or ``"weights"`` (inverse group-frequency loss weights).
        balance_by: speaker metadata column defining the groups of ``balance``.
    """

    corpus: str | None = None
    train_split: str = "train"
    speakers_per_batch: int = 32
    utterances_per_speaker: int = 2
    crop_frames: int = 200
    noise_prob: float = 0.6
    snr_db: tuple[float, float] = (5.0, 20.0)
    batches_per_epoch: int | None = None
    feature_cache: str | None = None
    num_jobs: int = 1
    balance: Literal["none", "sampling", "weights"] = "none"
    balance_by: str = "accent"


@dataclass(frozen=True)
class SpeakerBatch:
    """A training batch of speaker crops.

    Attributes:
        features: (B, T, F) float32, augmented and CMVN-normalized.
        feature_lens: (B,) int64 (all ``T``: crops have equal length).
        speaker_index: (B,) int64 class index of the speaker (training-speaker order).
        speaker_ids: B speaker ids.
        cut_ids: B cut ids.
        weights: (B,) float32 per-sample loss weights (``balance="weights"``), else ``None``.
    """

    features: torch.Tensor
    feature_lens: torch.Tensor
    speaker_index: torch.Tensor
    speaker_ids: list[str]
    cut_ids: list[str]
    weights: torch.Tensor | None = None


def inverse_group_weights(groups: Sequence[str]) -> np.ndarray:
    """Per-item weight ``n / (G · n_g)``: inverse group frequency, mean 1 over the items.

    Args:
        groups: the group of each item (e.g. each training speaker's accent).

    Returns:
        (n,) float64; every group's weights sum to ``n / G``.
    """
    names, codes, counts = np.unique(np.asarray(groups, dtype=str), return_inverse=True,
                                     return_counts=True)
    return len(codes) / (len(names) * counts[codes].astype(np.float64))


def noise_features(seconds: float = 4.0, seed: int = 0,
                   config: FbankConfig | None = None) -> list[np.ndarray]:
    """Fbank of white, pink and brown noise: three (T, F) float32 arrays."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 16000)
    f[0] = f[1]
    out = []
    for x in (white, np.fft.irfft(spectrum / np.sqrt(f), n), np.fft.irfft(spectrum / f, n)):
        x = 0.3 * x / np.abs(x).max()
        out.append(compute_fbank(x.astype(np.float32), 16000, config, name="noise"))
    return out


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Log-mel features of speech ``x`` (T, F) plus noise of mel power ``noise`` (T, F) at
    ``snr_db`` (ratio of the total mel powers): ``log(exp(x) + g · noise)``, float32."""
    speech = np.exp(x.astype(np.float64))
    g = speech.sum() / max(noise.sum(), 1e-20) / (10.0 ** (snr_db / 10.0))
    return np.log(speech + g * noise).astype(np.float32)


class SpeakerBatches:
    """The training :class:`~fairstream.training.loop.DataSource` of speaker-embedding models.

    Args:
        cuts: training cuts, one supervision with a speaker each.
        cmvn: global CMVN applied after augmentation.
        config: :class:`SvDataConfig`.
        seed: base seed of every random draw.
        progress: progress bar while loading features.
        groups: speaker id -> group (``config.balance_by``); needed unless ``config.balance``
            is ``"none"``.
    """

    def __init__(self, cuts: CutSet, cmvn: Cmvn, config: SvDataConfig, *, seed: int = 0,
                 progress: bool = False, rank: int = 0, world_size: int = 1,
                 groups: Mapping[str, str] | None = None) -> None:
        if config.utterances_per_speaker < 1 or config.speakers_per_batch < 2:
            raise InputDataError(
                f"need speakers_per_batch >= 2 and utterances_per_speaker >= 1, got "
                f"{config.speakers_per_batch} and {config.utterances_per_speaker}"
            )
        if not 0 <= rank < world_size:
            raise InputDataError(f"rank {rank} is not in [0, {world_size})")
        self.config = config
        self.cmvn = cmvn
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        if config.feature_cache is not None:
            cuts = precompute_features(cuts, Path(config.feature_cache),
                                       num_jobs=config.num_jobs, progress=progress)
        self.cut_ids: list[str] = []
        self.feats: list[np.ndarray] = []
        spk_of: list[str] = []
        for cut in tqdm(cuts, desc="loading features", disable=not progress):
            if not cut.supervisions or cut.supervisions[0].speaker is None:
                raise InputDataError(f"cut {cut.id} has no speaker")
            self.cut_ids.append(cut.id)
            spk_of.append(str(cut.supervisions[0].speaker))
            self.feats.append(load_cut_features(cut).astype(np.float16))
        self.speakers: list[str] = sorted(set(spk_of))
        if len(self.speakers) < config.speakers_per_batch:
            raise InputDataError(
                f"{len(self.speakers)} training speakers, fewer than speakers_per_batch="
                f"{config.speakers_per_batch}"
            )
        index = {s: i for i, s in enumerate(self.speakers)}
        self.speaker_of_cut = np.array([index[s] for s in spk_of], dtype=np.int64)
        self.cuts_of_speaker: list[np.ndarray] = [
            np.flatnonzero(self.speaker_of_cut == k) for k in range(len(self.speakers))
        ]
        self.speaker_weight: np.ndarray | None = None
        if config.balance != "none":
            self.speaker_weight = self._group_weights(groups)
        self.noises = [np.exp(n.astype(np.float64)) for n in noise_features(seed=seed)]
        b = config.speakers_per_batch * config.utterances_per_speaker
        self.n_batches = max(config.batches_per_epoch or len(self.feats) // b, world_size)
        logger.info("%d training cuts of %d speakers, %d batches of %d per epoch",
                    len(self.feats), len(self.speakers), self.n_batches, b)

    def _group_weights(self, groups: Mapping[str, str] | None) -> np.ndarray:
        """Inverse group-frequency weight of each training speaker (see the module docstring)."""
        col = self.config.balance_by
        if self.config.balance not in ("sampling", "weights"):
            raise InputDataError(f"data.balance must be 'none', 'sampling' or 'weights', got "
                                 f"{self.config.balance!r}")
        if groups is None:
            raise InputDataError(f"data.balance={self.config.balance!r} needs the training "
                                 f"speakers' {col!r} (speaker metadata)")
        missing = [s for s in self.speakers if s not in groups or not str(groups[s]).strip()]
        if missing:
            raise InputDataError(f"{len(missing)} training speaker(s) have no {col!r} to balance "
                                 f"by, e.g. {missing[0]!r}")
        labels = [str(groups[s]) for s in self.speakers]
        weights = inverse_group_weights(labels)
        logger.info("balance=%s by %s: %d groups, speaker weights %.2f..%.2f",
                    self.config.balance, col, len(set(labels)), weights.min(), weights.max())
        return weights

    @property
    def num_speakers(self) -> int:
        """Number of training speakers (classes)."""
        return len(self.speakers)

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """Cut indices of each batch of ``epoch``, (B,) each; speakers cycle in a shuffle."""
        rng = np.random.default_rng([self.seed, epoch, 0])
        p = self.config.speakers_per_batch
        if self.config.balance == "sampling":
            assert self.speaker_weight is not None
            prob = self.speaker_weight / self.speaker_weight.sum()
            return [self._cuts_of(rng.choice(len(self.speakers), p, replace=False, p=prob), rng)
                    for _ in range(self.n_batches)]
        order = np.concatenate([rng.permutation(len(self.speakers)) for _ in range(
            (self.n_batches * p) // len(self.speakers) + 2)])
        return [self._cuts_of(order[b * p:(b + 1) * p], rng) for b in range(self.n_batches)]

    def _cuts_of(self, spks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """K cut indices of each speaker of ``spks``, speaker after speaker."""
        k = self.config.utterances_per_speaker
        idx: list[int] = []
        for s in spks:
            pool = self.cuts_of_speaker[s]
            idx.extend(rng.choice(pool, k, replace=len(pool) < k))
        return np.asarray(idx, dtype=np.int64)

    def _crop(self, i: int, rng: np.random.Generator) -> np.ndarray:
        x = self.feats[i].astype(np.float32)
        t = self.config.crop_frames
        if x.shape[0] < t:
            x = np.concatenate([x] * (t // x.shape[0] + 1))
        start = int(rng.integers(0, x.shape[0] - t + 1))
        return x[start:start + t]

    def _noise_of_kind(self, kind: int, rng: np.random.Generator) -> np.ndarray:
        t = self.config.crop_frames
        src = self.noises[kind]
        src = np.concatenate([src] * (t // src.shape[0] + 1))
        start = int(rng.integers(0, src.shape[0] - t + 1))
        return src[start:start + t]

    def _noise(self, rng: np.random.Generator, exclude: int) -> np.ndarray:
        """(T, F) mel power of one noise draw."""
        t = self.config.crop_frames
        kind = int(rng.integers(len(self.noises) + 1))
        if kind < len(self.noises):
            return self._noise_of_kind(kind, rng)
        total = np.zeros((t, self.feats[0].shape[1]))
        drawn = rng.choice(len(self.feats), min(4, len(self.feats)), replace=False)
        others = [j for j in drawn if j != exclude]
        for j in others[:3]:
            total += np.exp(self._crop(int(j), rng).astype(np.float64))
        if not others:  # a one-utterance corpus has no babble: white noise instead
            return self._noise_of_kind(0, rng)
        return total

    def _augment(self, x: np.ndarray, rng: np.random.Generator, i: int) -> np.ndarray:
        if rng.random() >= self.config.noise_prob:
            return x
        noise = self._noise(rng, i)
        return mix_at_snr(x, noise, rng.uniform(*self.config.snr_db))

    def make_batch(self, epoch: int, b: int, indices: Sequence[int] | np.ndarray) -> SpeakerBatch:
        """Batch ``b`` of ``epoch`` from its planned cut indices (random draws seeded by both)."""
        rng = np.random.default_rng([self.seed, epoch, b + 1])
        crops = [self.cmvn.apply(self._augment(self._crop(int(i), rng), rng, int(i)))
                 for i in indices]
        feats = torch.from_numpy(np.stack(crops).astype(np.float32))
        n = len(indices)
        spk = self.speaker_of_cut[np.asarray(indices)]
        weights = None
        if self.config.balance == "weights" and self.speaker_weight is not None:
            weights = torch.from_numpy(self.speaker_weight[spk].astype(np.float32))
        return SpeakerBatch(
            features=feats,
            feature_lens=torch.full((n,), feats.shape[1], dtype=torch.int64),
            speaker_index=torch.from_numpy(spk),
            speaker_ids=[self.speakers[self.speaker_of_cut[i]] for i in indices],
            cut_ids=[self.cut_ids[i] for i in indices],
            weights=weights,
        )

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[SpeakerBatch]:
        """This process's batches of ``epoch`` after its first ``skip`` (DataSource protocol).

        Under DDP, rank ``r`` of ``W`` takes global batches ``r, r + W, r + 2W, ...`` (every
        rank the same number).
        """
        plan = self._plan(epoch)
        mine = list(range(self.rank, len(plan) - len(plan) % self.world_size, self.world_size))
        for b in mine[skip:]:
            yield self.make_batch(epoch, b, plan[b])
