"""Features: 80-dim log-mel fbank (offline and streaming, identical frames) and global CMVN."""

from __future__ import annotations

from fairstream.features.fbank import (
    Cmvn,
    FbankConfig,
    OnlineFbankExtractor,
    compute_cmvn,
    compute_fbank,
    num_frames,
    resample,
    to_float_samples,
)

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
