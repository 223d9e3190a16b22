"""Decoding: greedy and beam search with optional n-gram LM fusion (plain functions over a
model), streaming, and best-path decoding of the auxiliary CTC head.

The names below are loaded on first use, so that :mod:`fairstream.decoding.search` (the search
settings, plain data) can be imported without torch; the decoders themselves need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairstream.decoding.beam import BeamSearch, BeamState, beam_search, beam_search_chunk
    from fairstream.decoding.ctc import ctc_greedy_search
    from fairstream.decoding.greedy import GreedyState, greedy_search, greedy_search_chunk
    from fairstream.decoding.hypothesis import Hypothesis
    from fairstream.decoding.search import SearchConfig

__all__ = [
    "BeamSearch",
    "BeamState",
    "GreedyState",
    "Hypothesis",
    "SearchConfig",
    "beam_search",
    "beam_search_chunk",
    "ctc_greedy_search",
    "greedy_search",
    "greedy_search_chunk",
]

# exported name -> the submodule that defines it
_HOME = {
    "BeamSearch": "beam", "BeamState": "beam", "beam_search": "beam",
    "beam_search_chunk": "beam", "ctc_greedy_search": "ctc", "GreedyState": "greedy",
    "greedy_search": "greedy", "greedy_search_chunk": "greedy", "Hypothesis": "hypothesis",
    "SearchConfig": "search",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
