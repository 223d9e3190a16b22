"""80-dimensional log-mel filterbank features (kaldi-native-fbank) and global CMVN.

The same extractor class backs the offline function and the online (streaming) extractor,
so that a model sees identical frames in training and in streaming recognition.

Framing uses ``snip_edges=True``: frame ``i`` covers samples ``[i*shift, i*shift + window)``
and only complete windows produce frames, so a signal of ``N`` samples yields
``max(0, 1 + (N - window) // shift)`` frames (400-sample window and 160-sample shift at 16 kHz).
Because no frame ever looks past its own window, the online extractor can emit every frame as
soon as its last sample arrives and chunked input gives exactly the offline frames.

Edge cases, consistently:

* :func:`compute_fbank` raises :class:`~fairstream.errors.InputDataError` for empty audio and
  for audio shorter than one window (no frame can be formed), and for non-finite samples.
* :class:`OnlineFbankExtractor` returns zero new frames until a window is complete; a stream
  shorter than one window therefore yields zero frames in total (``finish()`` returns an empty
  ``(0, 80)`` array), which streaming callers treat as "nothing heard yet".

Samples are float32 in ``[-1, 1]``. Integer PCM (int16/int32) is converted by dividing by the
full-scale value. A sample rate other than ``FbankConfig.sample_rate`` is an error unless the
caller asks for resampling (``resample=True``, polyphase resampling with
:func:`scipy.signal.resample_poly`); audio is never silently misread at the wrong rate.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt

from fairstream._io import atomic_write_text as _atomic_write_text
from fairstream.errors import InputDataError

__all__ = [
    "Cmvn",
    "FbankConfig",
    "OnlineFbankExtractor",
    "compute_cmvn",
    "compute_fbank",
    "num_frames",
    "resample",
    "to_float_samples",
]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FbankConfig:
    """Log-mel filterbank settings.

    Attributes:
        sample_rate: expected input rate in Hz.
        num_mel_bins: number of mel filters (feature dimension F).
        frame_length_ms: analysis window length.
        frame_shift_ms: hop between frames.
        dither: dithering constant; 0 keeps features deterministic.
        low_freq: lowest mel filter edge in Hz.
        high_freq: highest edge; ``<= 0`` means Nyquist plus this offset (Kaldi convention).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    low_freq: float = 20.0
    high_freq: float = 0.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise InputDataError(
                f"FbankConfig.sample_rate must be positive, got {self.sample_rate}"
            )
        if self.num_mel_bins <= 0:
            raise InputDataError(
                f"FbankConfig.num_mel_bins must be positive, got {self.num_mel_bins}"
            )
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise InputDataError(
                "FbankConfig needs 0 < frame_shift_ms <= frame_length_ms, got "
                f"shift={self.frame_shift_ms}, length={self.frame_length_ms}"
            )

    @property
    def window_samples(self) -> int:
        """Samples in one analysis window (400 at 16 kHz / 25 ms)."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        """Samples between frame starts (160 at 16 kHz / 10 ms)."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def frame_shift(self) -> float:
        """Frame shift in seconds."""
        return self.frame_shift_ms / 1000.0

    def to_knf(self) -> knf.FbankOptions:
        """The equivalent ``kaldi_native_fbank.FbankOptions``."""
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = float(self.sample_rate)
        opts.frame_opts.frame_length_ms = float(self.frame_length_ms)
        opts.frame_opts.frame_shift_ms = float(self.frame_shift_ms)
        opts.frame_opts.dither = float(self.dither)
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = int(self.num_mel_bins)
        opts.mel_opts.low_freq = float(self.low_freq)
        opts.mel_opts.high_freq = float(self.high_freq)
        return opts


def num_frames(num_samples: int, config: FbankConfig | None = None) -> int:
    """Number of frames :func:`compute_fbank` yields for ``num_samples`` samples."""
    cfg = config or FbankConfig()
    if num_samples < cfg.window_samples:
        return 0
    return 1 + (num_samples - cfg.window_samples) // cfg.shift_samples


def to_float_samples(samples: npt.ArrayLike, *, name: str = "audio") -> np.ndarray:
    """Validate and convert audio to a contiguous 1-D float32 array in ``[-1, 1]``.

    Args:
        samples: 1-D array-like (N,), or (1, N) for a single channel. Float input is taken
            as is; int16 / int32 PCM is scaled by its full-scale value.
        name: what to call the audio in error messages (e.g. an utterance id).

    Returns:
        (N,) float32.

    Raises:
        InputDataError: more than one channel, unsupported dtype or non-finite samples.
    """
    arr = np.asarray(samples)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise InputDataError(
            f"{name}: expected mono audio of shape (N,) or (1, N), got shape {arr.shape}"
        )
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)
    else:
        raise InputDataError(f"{name}: unsupported sample dtype {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InputDataError(f"{name}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(arr)


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (:func:`scipy.signal.resample_poly`) of (N,) float32 audio."""
    from scipy.signal import resample_poly

    if orig_rate <= 0 or target_rate <= 0:
        raise InputDataError(f"invalid sample rates {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return samples
    g = math.gcd(int(orig_rate), int(target_rate))
    out = resample_poly(samples, int(target_rate) // g, int(orig_rate) // g)
    return np.ascontiguousarray(out, dtype=np.float32)


def _read_frames(fbank: knf.OnlineFbank, start: int, stop: int, dim: int) -> np.ndarray:
    out = np.empty((max(0, stop - start), dim), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        out[row] = fbank.get_frame(i)
    return out


def compute_fbank(
    samples: npt.ArrayLike,
    sample_rate: int = 16000,
    config: FbankConfig | None = None,
    *,
    resample_input: bool = False,
    name: str = "audio",
) -> np.ndarray:
    """Offline log-mel filterbank of one utterance.

    Args:
        samples: (N,) float32 audio in ``[-1, 1]`` (or int16/int32 PCM, see
            :func:`to_float_samples`).
        sample_rate: rate of ``samples`` in Hz.
        config: feature settings; defaults to :class:`FbankConfig` ().
        resample_input: if ``sample_rate`` differs from ``config.sample_rate``, resample
            instead of raising.
        name: name of the audio for error messages.

    Returns:
        (T, F) float32 with ``T = 1 + (N - window) // shift`` and ``F = config.num_mel_bins``.

    Raises:
        InputDataError: wrong sample rate (without ``resample_input``), empty audio, audio
            shorter than one window, or malformed samples.
    """
    cfg = config or FbankConfig()
    x = to_float_samples(samples, name=name)
    if sample_rate != cfg.sample_rate:
        if not resample_input:
            raise InputDataError(
                f"{name}: sample rate {sample_rate} Hz differs from the feature rate "
                f"{cfg.sample_rate} Hz; resample the audio or pass resample_input=True"
            )
        x = resample(x, sample_rate, cfg.sample_rate)
    if x.size == 0:
        raise InputDataError(f"{name}: empty audio (0 samples)")
    if x.size < cfg.window_samples:
        raise InputDataError(
            f"{name}: audio has {x.size} samples, shorter than one analysis window "
            f"({cfg.window_samples} samples = {cfg.frame_length_ms} ms)"
        )
    fbank = knf.OnlineFbank(cfg.to_knf())
    fbank.accept_waveform(float(cfg.sample_rate), x)
    fbank.input_finished()
    feats = _read_frames(fbank, 0, fbank.num_frames_ready, cfg.num_mel_bins)
    assert feats.shape[0] == num_frames(x.size, cfg)
    return feats


class OnlineFbankExtractor:
    """Streaming fbank: feed chunks of any size, receive the frames they complete.

    The concatenation of all returned frames equals :func:`compute_fbank` on the
    concatenated audio, for any chunking (tested).

    Args:
        config: feature settings (its ``sample_rate`` is the only accepted input rate).
    """

    def __init__(self, config: FbankConfig | None = None) -> None:
        self.config = config or FbankConfig()
        self._opts = self.config.to_knf()
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self._fbank = knf.OnlineFbank(self._opts)
        self._emitted = 0
        self._finished = False
        self._num_samples = 0

    @property
    def num_frames_emitted(self) -> int:
        """Frames returned so far in this stream."""
        return self._emitted

    @property
    def num_samples_accepted(self) -> int:
        """Samples accepted so far in this stream."""
        return self._num_samples

    def accept(self, samples: npt.ArrayLike, sample_rate: int | None = None) -> np.ndarray:
        """Add audio, return the newly completed frames.

        Args:
            samples: (n,) float32 chunk, any ``n >= 0``.
            sample_rate: rate of the chunk; must equal ``config.sample_rate`` if given.

        Returns:
            (n_new_frames, F) float32 (possibly zero rows).
        """
        if self._finished:
            raise InputDataError("OnlineFbankExtractor: accept() after finish(); call reset()")
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise InputDataError(
                f"OnlineFbankExtractor: chunk sample rate {sample_rate} Hz differs from "
                f"{self.config.sample_rate} Hz; resample the stream before feeding it"
            )
        x = to_float_samples(samples, name="audio chunk")
        if x.size:
            self._fbank.accept_waveform(float(self.config.sample_rate), x)
            self._num_samples += x.size
        return self._drain()

    def finish(self) -> np.ndarray:
        """Mark the end of the stream and return any remaining frames ((n, F) float32)."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True
        return self._drain()

    def _drain(self) -> np.ndarray:
        ready = self._fbank.num_frames_ready
        frames = _read_frames(self._fbank, self._emitted, ready, self.config.num_mel_bins)
        if ready > self._emitted:
            # discard frames already handed out so a long stream does not grow memory
            self._fbank.pop(ready - self._emitted)
        self._emitted = ready
        return frames


@dataclass(frozen=True, eq=False)
class Cmvn:
    """Global mean/variance normalization: ``(x - mean) / std``.

    Attributes:
        mean: (F,) float32.
        std: (F,) float32, strictly positive.
        frames: number of frames the statistics were computed on (0 if unknown).
    """

    mean: np.ndarray
    std: np.ndarray
    frames: int = 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise InputDataError(
                f"Cmvn: mean {mean.shape} and std {std.shape} must be equal, non-empty"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise InputDataError("Cmvn: mean/std must be finite and std > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        """Feature dimension F."""
        return int(self.mean.size)

    @overload
    def apply(self, feats: np.ndarray) -> np.ndarray: ...

    @overload
    def apply(self, feats: torch.Tensor) -> torch.Tensor: ...

    def apply(self, feats: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalize (T, F) or (B, T, F) features; numpy arrays or torch tensors."""
        shape = getattr(feats, "shape", None)
        if shape is None or len(shape) == 0 or shape[-1] != self.dim:
            raise InputDataError(f"Cmvn: features of shape {shape} do not end in dim {self.dim}")
        if isinstance(feats, np.ndarray):
            out: np.ndarray = ((feats - self.mean) / self.std).astype(np.float32, copy=False)
            return out
        import torch

        if isinstance(feats, torch.Tensor):
            m = torch.from_numpy(self.mean).to(feats.device, feats.dtype)
            s = torch.from_numpy(self.std).to(feats.device, feats.dtype)
            return (feats - m) / s
        raise InputDataError(f"Cmvn.apply: unsupported feature type {type(feats).__name__}")

    def to_dict(self) -> dict[str, list[float] | int]:
        """JSON-ready ``{"mean": [...], "std": [...], "frames": N}``."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "frames": int(self.frames)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics as JSON (atomically)."""
        _atomic_write_text(Path(path), json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cmvn:
        """Read statistics written by :meth:`save` (or a corpus ``cmvn.json``)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]),
                       frames=int(data.get("frames", 0)))
        except FileNotFoundError:
            raise InputDataError(f"CMVN file {p} does not exist") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise InputDataError(f"CMVN file {p} is malformed: {e}") from e


def compute_cmvn(feats: Iterable[np.ndarray], *, std_floor: float = 1e-5) -> Cmvn:
    """Global mean and standard deviation over all frames of all utterances.

    Accumulates in float64 (sum and sum of squares), so the result does not depend on how
    frames are split across utterances beyond rounding.

    Args:
        feats: iterable of (T_i, F) arrays.
        std_floor: lower bound for the standard deviation of constant dimensions.

    Returns:
        :class:`Cmvn` with ``frames = Σ T_i``.
    """
    total = 0
    s: np.ndarray | None = None
    sq: np.ndarray | None = None
    for i, f in enumerate(feats):
        a = np.asarray(f, dtype=np.float64)
        if a.ndim != 2:
            raise InputDataError(f"compute_cmvn: item {i} has shape {a.shape}, expected (T, F)")
        if s is None:
            s = np.zeros(a.shape[1])
            sq = np.zeros(a.shape[1])
        elif a.shape[1] != s.size:
            raise InputDataError(f"compute_cmvn: item {i} has dim {a.shape[1]}, expected {s.size}")
        assert sq is not None
        s += a.sum(axis=0)
        sq += np.square(a).sum(axis=0)
        total += a.shape[0]
    if s is None or sq is None or total == 0:
        raise InputDataError("compute_cmvn: no frames given")
    mean = s / total
    var = np.maximum(sq / total - mean**2, 0.0)
    std = np.maximum(np.sqrt(var), std_floor)
    return Cmvn(mean=mean.astype(np.float32), std=std.astype(np.float32), frames=total)
