"""Search options shared by `decode` and `transcribe`: greedy, beam, or the recipe's search.

Defaults come from :class:`~fairstream.decoding.search.SearchConfig`, the one definition of
the search settings; an option left out keeps its default (or, with ``--search recipe``, the
value stored in the checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from fairstream.decoding.search import LM_TOKEN_BONUS, SearchConfig

__all__ = ["ChosenSearch", "choose_search", "search_options"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])  # Any: click commands take any options


@dataclass(frozen=True)
class ChosenSearch:
    """The search a command runs.

    Attributes:
        config: the settings (for ``--search recipe``: the checkpoint's, with overrides).
        lm: the token LM fused by beam search, or ``None``.
        lm_path: the file it came from.
        source: ``options`` or ``recipe`` (the checkpoint's ``decode`` section).
        ctc: best path of the auxiliary CTC head instead of a transducer search.
    """

    config: SearchConfig
    lm: Any = None  # Any: an NgramLM (imported lazily: `--help` does not load the decoders)
    lm_path: Path | None = None
    source: str = "options"
    ctc: bool = False

    def describe(self) -> str:
        """One line naming the search, for the command's log."""
        if self.ctc:
            return "best path of the auxiliary CTC head (a diagnostic)"
        lm = f"{self.lm_path} ({self.lm.order}-gram)" if self.lm is not None else None
        origin = " (the checkpoint's recipe)" if self.source == "recipe" else ""
        return self.config.describe(lm) + origin

    def metadata(self) -> dict[str, Any]:  # Any: plain JSON data for the table's metadata
        """The search as plain data for the results table's metadata."""
        cfg = self.config
        beam = cfg.method == "beam" and not self.ctc
        return {"method": "ctc" if self.ctc else cfg.method, "source": self.source,
                "beam": cfg.beam, "max_symbols": cfg.max_symbols_per_frame,
                "lm": str(self.lm_path) if self.lm_path else None,
                "lm_weight": cfg.lm_weight if beam and self.lm is not None else None,
                "token_bonus": cfg.bonus(self.lm is not None) if beam else None,
                "search": dataclasses.asdict(cfg)}


def search_options(*, ctc: bool = False) -> Callable[[F], F]:
    """Add ``--search``, ``--beam``, ``--max-symbols``, ``--lm``, ``--lm-weight`` and
    ``--token-bonus`` (``ctc``: also offer ``--search ctc``)."""
    d = SearchConfig()
    choices = ["greedy", "beam", "recipe"] + (["ctc"] if ctc else [])
    options = [
        click.option("--search", "--method", "method", type=click.Choice(choices),
                     default=None,
                     help="greedy (the default; beam with --beam), beam search, the search "
                          "stored in the checkpoint's recipe (recipe; its LM from --lm or "
                          "lm.json beside the checkpoint)"
                          + (", or ctc: best path of the auxiliary CTC head (a diagnostic; "
                             "offline only)" if ctc else "") + "."),
        click.option("--beam", type=click.IntRange(min=1), default=None,
                     help=f"Beam width (without --search: beam search)  [default: {d.beam}]"),
        click.option("--max-symbols", type=click.IntRange(min=1), default=None,
                     help="Tokens a hypothesis may emit per encoder frame  "
                          f"[default: {d.max_symbols_per_frame}]"),
        click.option("--lm", "lm_path",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Token n-gram LM (from `fairstream lm`) fused into beam search."),
        click.option("--lm-weight", type=click.FloatRange(min=0), default=None,
                     help=f"Weight of the LM log-probability  [default: {d.lm_weight}]"),
        click.option("--token-bonus", type=float, default=None,
                     help=f"Score added per emitted token  [default: {LM_TOKEN_BONUS} with an "
                          "LM, else 0]"),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# Any: the checkpoint's stored config, plain JSON data
def choose_search(method: str | None, checkpoint: Path, checkpoint_config: Mapping[str, Any],
                  *, beam: int | None, max_symbols: int | None, lm_path: Path | None,
                  lm_weight: float | None, token_bonus: float | None) -> ChosenSearch:
    """The search the options ask for, its LM loaded; logged (stderr) as the command runs.

    Raises:
        click.UsageError: an LM for a greedy search.
        FairstreamError: bad settings, or a recipe LM that is not there (the message says
            how to make it).
    """
    from fairstream.inference.search import recipe_lm, recipe_search
    from fairstream.lm import NgramLM

    if method is None:
        method = "beam" if beam is not None else "greedy"
    given: dict[str, Any] = {"beam": beam, "max_symbols_per_frame": max_symbols,  # Any: mixed
                             "lm_weight": lm_weight, "token_bonus": token_bonus}
    overrides = {k: v for k, v in given.items() if v is not None}
    if method == "recipe":
        config = dataclasses.replace(recipe_search(checkpoint_config, checkpoint), **overrides)
        if lm_path is not None and config.method != "beam":
            raise click.UsageError("--lm needs beam search; the checkpoint's recipe is greedy")
        lm = recipe_lm(config, checkpoint, lm_path)
        if lm is not None and lm_path is None:
            from fairstream.inference.search import lm_beside

            lm_path = lm_beside(checkpoint)
        source = "recipe"
    else:
        if lm_path is not None and method != "beam":
            raise click.UsageError("--lm needs --search beam (or recipe)")
        config = SearchConfig(method="beam" if method == "beam" else "greedy", **overrides)
        lm = NgramLM.load(lm_path) if lm_path is not None else None
        source = "options"
    if lm is not None:
        config = dataclasses.replace(config, lm_order=lm.order)
    chosen = ChosenSearch(config, lm, lm_path, source, ctc=method == "ctc")
    click.echo(f"search: {chosen.describe()}", err=True)
    return chosen
