"""The public names of the top-level package are pinned: changing them is a deliberate act."""

from __future__ import annotations

import fairstream

EXPECTED = {
    "__version__",
    "FairstreamError",
    "CorpusError",
    "InputDataError",
    "MissingDependencyError",
    "TooFewSpeakersError",
    "CheckpointError",
    "TrainingError",
}


def test_public_names_are_pinned() -> None:
    assert set(fairstream.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    for name in fairstream.__all__:
        assert hasattr(fairstream, name), name
