"""Exceptions raised by fairstream.

Hierarchy::

    FairstreamError
     ├── CorpusError          a corpus directory, manifest or audio file is unusable
     ├── InputDataError       a user-supplied table, file or value is malformed
     │    └── TooFewSpeakersError  valid data, too few speakers for a method to report
     ├── CheckpointError      a checkpoint is corrupt or belongs to another configuration
     ├── TrainingError        training cannot go on (e.g. the loss stays NaN)
     └── MissingDependencyError  a feature needs an optional extra that is not installed

Every message names the bad item (file, utterance id, column or value). ``InputDataError``
and ``CorpusError`` also derive from ``ValueError`` so that callers catching ``ValueError``
keep working. ``MissingDependencyError`` derives from ``ImportError`` and names the extra to
install (``pip install 'fairstream[asr]'``).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CorpusError",
    "FairstreamError",
    "InputDataError",
    "MissingDependencyError",
    "TooFewSpeakersError",
    "TrainingError",
]


class FairstreamError(Exception):
    """Base class of every error fairstream raises on purpose."""


class CorpusError(FairstreamError, ValueError):
    """A corpus directory, manifest, transcript or audio file is unusable."""


class InputDataError(FairstreamError, ValueError):
    """A user-supplied table, file or value is malformed."""


class TooFewSpeakersError(InputDataError):
    """The data are valid but hold too few speakers for a method (e.g. k-means, a partition)."""


class CheckpointError(FairstreamError, ValueError):
    """A checkpoint is corrupt, or was written for another configuration or vocabulary."""


class TrainingError(FairstreamError, RuntimeError):
    """Training cannot continue (for example the loss is NaN batch after batch)."""


class MissingDependencyError(FairstreamError, ImportError):
    """A feature needs an optional extra (``[asr]``, ``[corpus]``) that is not installed.

    Attributes:
        extra: the extra that provides it, e.g. ``"asr"``.
    """

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the [{extra}] extra ({missing} is not installed): "
            f"pip install 'fairstream[{extra}]'"
        )
        self.extra = extra
        self.name = missing
