"""Command-line options for beam search with LM fusion, shared by `decode` and `transcribe`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["build_search", "lm_options"]

#: Default bonus per emitted token when an LM is fused (chosen on the demo's dev split).
LM_TOKEN_BONUS = 1.5


def lm_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--max-symbols``, ``--lm``, ``--lm-weight`` and ``--token-bonus``."""
    options = [
        click.option("--max-symbols", type=click.IntRange(min=1), default=3, show_default=True,
                     help="Tokens a hypothesis may emit per encoder frame (beam search)."),
        click.option("--lm", "lm_path",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Token n-gram LM (from `fairstream lm`) fused into the beam search."),
        click.option("--lm-weight", type=click.FloatRange(min=0), default=0.5,
                     show_default=True, help="Weight of the LM log-probability (with --lm)."),
        click.option("--token-bonus", type=float, default=None,
                     help=f"Score added per emitted token  [default: {LM_TOKEN_BONUS} with --lm, "
                          "else 0]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_search(beam: int, max_symbols: int, lm_path: Path | None, lm_weight: float,
                 token_bonus: float | None) -> Any:
    """A :class:`~fairstream.decoding.beam.BeamSearchConfig` from the options (LM loaded)."""
    from fairstream.decoding.beam import BeamSearchConfig
    from fairstream.lm import NgramLM

    lm = NgramLM.load(lm_path) if lm_path is not None else None
    if token_bonus is None:
        token_bonus = LM_TOKEN_BONUS if lm is not None else 0.0
    return BeamSearchConfig(beam=beam, max_symbols_per_frame=max_symbols, lm=lm,
                            lm_weight=lm_weight if lm is not None else 0.0,
                            token_bonus=token_bonus)
