"""Inference: load a trained transducer, choose its search, decode cuts into a results table.

Nothing here imports :mod:`fairstream.training` (a test checks it), so serving, benchmarks and
the command-line decoders depend only on the model, the features, the decoders and the
checkpoint format. The results table itself lives in the torch-free :mod:`fairstream.results`.
"""

from __future__ import annotations

from fairstream.decoding.search import SearchConfig
from fairstream.inference.audio import cut_audio, cut_fbank
from fairstream.inference.decode import decode_cuts, summarize_wer, write_trn_pair
from fairstream.inference.model import LoadedModel, load_transducer
from fairstream.inference.search import (
    LM_FILE,
    beam_search_for,
    lm_beside,
    recipe_lm,
    recipe_search,
)

__all__ = [
    "LM_FILE",
    "LoadedModel",
    "SearchConfig",
    "beam_search_for",
    "cut_audio",
    "cut_fbank",
    "decode_cuts",
    "lm_beside",
    "load_transducer",
    "recipe_lm",
    "recipe_search",
    "summarize_wer",
    "write_trn_pair",
]
