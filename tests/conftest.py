"""Shared fixtures: a tiny synthetic corpus built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the ``tiny`` preset (seed 0): ~200 utterances, 40 speakers, train/dev/test.

    Built once per session (a few seconds); treat it as read-only.
    """
    from fairstream.data.presets import get_preset
    from fairstream.data.synthesis import build_corpus

    out = tmp_path_factory.mktemp("tiny_corpus") / "corpus"
    build_corpus(get_preset("tiny"), out, seed=0, jobs=1, progress=False)
    return out
