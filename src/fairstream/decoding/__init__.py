"""Decoding: greedy and modified beam search (plain functions over a model), streaming, and
best-path decoding of the auxiliary CTC head."""

from __future__ import annotations

from fairstream.decoding.beam import modified_beam_search
from fairstream.decoding.ctc import ctc_greedy_search
from fairstream.decoding.greedy import GreedyState, greedy_search, greedy_search_chunk
from fairstream.decoding.hypothesis import Hypothesis

__all__ = [
    "GreedyState",
    "Hypothesis",
    "ctc_greedy_search",
    "greedy_search",
    "greedy_search_chunk",
    "modified_beam_search",
]
