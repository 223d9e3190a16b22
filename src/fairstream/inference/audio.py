"""A cut's audio and features for inference, with data errors named as the cut's."""

from __future__ import annotations

import numpy as np
from lhotse.audio.utils import AudioLoadingError
from lhotse.cut import Cut

from fairstream.errors import CorpusError, InputDataError
from fairstream.features.fbank import FbankConfig, compute_fbank, resample, to_float_samples

__all__ = ["cut_audio", "cut_fbank"]


def cut_audio(cut: Cut, sample_rate: int) -> np.ndarray:
    """The first channel of a cut's audio as float32 at ``sample_rate``.

    Raises:
        CorpusError: naming the cut when its audio cannot be loaded, has bad sample values or
            cannot be resampled.
    """
    try:
        audio = cut.load_audio()
    except (AudioLoadingError, OSError, ValueError) as exc:
        raise CorpusError(f"cut {cut.id}: audio cannot be loaded: {exc}") from exc
    try:
        audio = to_float_samples(audio[0] if audio.ndim == 2 else audio, name=f"cut {cut.id}")
        if int(cut.sampling_rate) != sample_rate:
            audio = resample(audio, int(cut.sampling_rate), sample_rate)
    except ValueError as exc:
        raise CorpusError(f"cut {cut.id}: {exc}") from exc
    return np.ascontiguousarray(audio, dtype=np.float32)


def cut_fbank(cut: Cut, config: FbankConfig | None = None) -> np.ndarray:
    """Raw (uncompensated) fbank of a mono cut, computed from its audio.

    Returns:
        (T, F) float32.

    Raises:
        CorpusError: naming the cut when its audio cannot be read, has several channels or
            is too short.
    """
    cfg = config or FbankConfig()
    try:
        audio = cut.load_audio()
    except Exception as e:  # lhotse raises many kinds for unreadable audio
        raise CorpusError(f"cut {cut.id}: audio cannot be loaded: {e}") from e
    if audio.ndim == 2:
        if audio.shape[0] != 1:
            raise CorpusError(f"cut {cut.id}: {audio.shape[0]} channels; expected mono")
        audio = audio[0]
    try:
        return compute_fbank(audio, int(cut.sampling_rate), cfg, name=f"cut {cut.id}")
    except InputDataError as e:
        raise CorpusError(str(e)) from e
