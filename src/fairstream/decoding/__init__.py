"""Decoding: greedy and beam search with optional n-gram LM fusion (plain functions over a
model), streaming, and best-path decoding of the auxiliary CTC head."""

from __future__ import annotations

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
