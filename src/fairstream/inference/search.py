"""The search a checkpoint recommends, and the token LM it fuses.

A transducer checkpoint stores its recipe's search as the ``decode`` section of its config (a
:class:`~fairstream.decoding.search.SearchConfig`). When that search fuses a token n-gram
LM (``lm_order > 0``), ``fairstream lm`` fits it and stores it beside the checkpoint as
:data:`LM_FILE`; :func:`recipe_lm` finds it there unless another file is named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairstream.config_parse import from_dict
from fairstream.decoding.beam import BeamSearch
from fairstream.decoding.search import SearchConfig
from fairstream.errors import CheckpointError, InputDataError
from fairstream.lm.ngram import NgramLM

__all__ = ["LM_FILE", "beam_search_for", "lm_beside", "recipe_lm", "recipe_search"]

logger = logging.getLogger(__name__)

#: File name of the token LM stored beside a checkpoint.
LM_FILE = "lm.json"


def lm_beside(checkpoint: str | os.PathLike[str]) -> Path:
    """Where ``fairstream lm`` stores the token LM of ``checkpoint``: ``lm.json`` beside it."""
    return Path(checkpoint).parent / LM_FILE


# Any: the checkpoint's stored config, plain JSON data
def recipe_search(config: Mapping[str, Any], source: object = "checkpoint") -> SearchConfig:
    """The search stored in a training config's ``decode`` section (defaults if it has none).

    Args:
        config: the resolved training config, as stored in a checkpoint (plain data).
        source: name of the checkpoint, for messages.

    Raises:
        CheckpointError: the section is not a valid search (the message names the key).
    """
    try:
        return from_dict(SearchConfig, config.get("decode"), path="decode")
    except InputDataError as exc:
        raise CheckpointError(f"{source}: stored search settings are unusable: {exc}") from exc


def recipe_lm(search: SearchConfig, checkpoint: str | os.PathLike[str],
              lm_path: str | os.PathLike[str] | None = None) -> NgramLM | None:
    """The token LM a search fuses: ``lm_path`` if given, else, when the search asks for one
    (beam search with ``lm_order > 0``), the LM stored beside ``checkpoint``.

    Raises:
        InputDataError: an LM is named for greedy search, or the search needs an LM that is
            not there (the message says how to make it).
    """
    if search.method != "beam":
        if lm_path is not None:
            raise InputDataError(f"an LM ({lm_path}) is fused by beam search only; this "
                                 "search is greedy")
        return None
    if lm_path is None and search.lm_order == 0:
        return None
    path = Path(lm_path) if lm_path is not None else lm_beside(checkpoint)
    if not path.is_file():
        raise InputDataError(
            f"the search fuses a {search.lm_order}-gram token LM, expected at {path}: fit it "
            f"with `fairstream lm --checkpoint {checkpoint} --corpus CORPUS` or name one "
            "with --lm"
        )
    lm = NgramLM.load(path)
    if search.lm_order and lm.order != search.lm_order:
        logger.warning("%s is a %d-gram LM; the recipe fuses a %d-gram", path, lm.order,
                       search.lm_order)
    return lm


def beam_search_for(search: SearchConfig, lm: NgramLM | None = None) -> BeamSearch | None:
    """The beam search that ``search`` describes, fusing ``lm``; ``None`` for greedy search.

    Raises:
        InputDataError: an LM is given for greedy search.
    """
    if search.method == "greedy":
        if lm is not None:
            raise InputDataError("an LM is fused by beam search only; this search is greedy")
        return None
    return BeamSearch(search, lm)
