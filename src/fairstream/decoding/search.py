"""The search settings: one frozen dataclass, one set of defaults.

:class:`SearchConfig` says how a transducer's output is searched. The same class is the
``decode`` section of a training recipe (stored in every checkpoint, so a model travels with
its recommended search), the options of ``fairstream decode`` / ``fairstream transcribe``,
and the settings of :func:`~fairstream.inference.decode_cuts`, the streaming recognizer and
the demo. It holds plain data only; the token LM a beam search fuses is loaded separately
and joined to the settings in :class:`~fairstream.decoding.beam.BeamSearch`.

This module imports neither torch nor the rest of fairstream's decoders (the package
loads its decoders on first use), so the settings can be read and checked without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fairstream.errors import InputDataError

__all__ = ["DEFAULT_LM_ORDER", "LM_TOKEN_BONUS", "SEARCH_METHODS", "SearchConfig"]

#: Score added per emitted token when an LM is fused and ``token_bonus`` is not set; it
#: offsets the LM's preference for short outputs (chosen on the demo's dev split).
LM_TOKEN_BONUS = 1.5
#: Order of the token n-gram LM ``fairstream lm`` fits when neither ``--order`` nor the
#: recipe's ``decode.lm_order`` gives one (over tokens, so 6 spans about three words).
DEFAULT_LM_ORDER = 6
#: The searches :class:`SearchConfig` can ask for.
SEARCH_METHODS = ("greedy", "beam")


@dataclass(frozen=True)
class SearchConfig:
    """How a transducer's output is searched.

    Attributes:
        method: ``greedy`` or ``beam`` (frame-synchronous beam search, see
            :mod:`fairstream.decoding.beam`).
        beam: hypotheses kept per frame (beam search only).
        max_symbols_per_frame: tokens a hypothesis may emit at one encoder frame (greedy and
            beam search).
        lm_order: order of the token n-gram LM this search fuses (``0``: none). ``fairstream
            lm`` fits it on the training transcripts and stores it beside the checkpoint
            (``lm.json``); beam search only.
        lm_weight: weight of the LM log-probability when an LM is fused.
        token_bonus: score added per emitted token in beam search; ``None``:
            :data:`LM_TOKEN_BONUS` when an LM is fused, else 0.
    """

    method: Literal["greedy", "beam"] = "greedy"
    beam: int = 8
    max_symbols_per_frame: int = 3
    lm_order: int = 0
    lm_weight: float = 0.5
    token_bonus: float | None = None

    def __post_init__(self) -> None:
        if self.method not in SEARCH_METHODS:
            raise InputDataError(
                f"decode.method must be one of {', '.join(SEARCH_METHODS)}, got {self.method!r}"
            )
        if self.beam < 1 or self.max_symbols_per_frame < 1:
            raise InputDataError(
                f"decode.beam and decode.max_symbols_per_frame must be >= 1, got {self.beam} "
                f"and {self.max_symbols_per_frame}"
            )
        if self.lm_order == 1 or self.lm_order < 0:
            raise InputDataError(f"decode.lm_order must be 0 (no LM) or >= 2, got {self.lm_order}")
        if not self.lm_weight >= 0:
            raise InputDataError(f"decode.lm_weight must be >= 0, got {self.lm_weight}")
        if self.token_bonus is not None and not math.isfinite(self.token_bonus):
            raise InputDataError(f"decode.token_bonus must be finite, got {self.token_bonus}")

    def bonus(self, with_lm: bool) -> float:
        """The per-token bonus that applies, with or without an LM fused."""
        if self.token_bonus is not None:
            return self.token_bonus
        return LM_TOKEN_BONUS if with_lm else 0.0

    def describe(self, lm: str | None = None) -> str:
        """One line for logs: the search and, for beam search, the LM ``lm`` (a name) it fuses."""
        if self.method == "greedy":
            return f"greedy search, up to {self.max_symbols_per_frame} tokens per frame"
        text = (f"beam search, beam {self.beam}, up to {self.max_symbols_per_frame} tokens per "
                f"frame")
        if lm is None:
            bonus = self.bonus(False)
            return text + (f", token bonus {bonus:g}" if bonus else "") + ", no LM"
        return (text + f", LM {lm} (weight {self.lm_weight:g}), "
                f"token bonus {self.bonus(True):g}")
