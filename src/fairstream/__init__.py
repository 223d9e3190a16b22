"""fairstream: streaming end-to-end speech recognition and the fairness work around it."""

from __future__ import annotations

from fairstream.errors import (
    CheckpointError,
    CorpusError,
    FairstreamError,
    InputDataError,
    MissingDependencyError,
    TooFewSpeakersError,
    TrainingError,
)

__version__ = "0.2.0"

__all__ = [
    "CheckpointError",
    "CorpusError",
    "FairstreamError",
    "InputDataError",
    "MissingDependencyError",
    "TooFewSpeakersError",
    "TrainingError",
    "__version__",
]
