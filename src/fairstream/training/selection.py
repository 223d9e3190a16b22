"""Which speakers or cuts a training run uses: a data-selection hook for recipes
(``data.select``).

A recipe can train on a chosen set of speakers or cuts, or train on all data while showing a
chosen set more often::

    data:
      select:
        where: "accent in ['en-029'] and gender == 'female'"   # a predicate on speakers.csv
        speakers_file: cohort.txt                             # and/or speaker ids, one a line
        cuts_file: cuts.txt                                   # and/or cut ids, one a line
        oversample: 3      # optional: all data, the selected cuts three times
        general_share: 0.3 # optional (without oversample): mix in other cuts, drawn at
                           # random, so that they make up this share of the training set

Every criterion given must hold: a cut is selected when its speaker satisfies ``where`` and
is listed in ``speakers_file`` and the cut is listed in ``cuts_file``. Selection applies to
the training split only; validation always sees its whole split. :func:`select_speakers`
resolves the speaker criteria against ``speakers.csv``, :func:`select_cuts` applies the
whole selection to cuts.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from lhotse import CutSet

from fairstream.errors import InputDataError

__all__ = ["SelectConfig", "select_cuts", "select_speakers"]

logger = logging.getLogger(__name__)

_KEY = "data.select"


@dataclass(frozen=True)
class SelectConfig:
    """The ``data.select`` section: training speakers or cuts to train on or oversample.

    Attributes:
        speakers_file: a text file of speaker ids, one per line (blank lines and lines starting
            with ``#`` are ignored); a relative path is taken from the working directory.
        where: a :meth:`pandas.DataFrame.query` predicate on the columns of ``speakers.csv``,
            for example ``accent in ['en-029'] and gender == 'female'``.
        cuts_file: a text file of training cut ids, one per line (blank lines and lines
            starting with ``#`` are ignored); a relative path is taken from the working
            directory. With a speaker criterion, only the listed cuts of selected speakers.
        oversample: ``None``: train on the selected cuts only; an integer ``r >= 1``: train
            on all data, with each selected cut taken ``r`` times per epoch.
        general_share: with a selection and no ``oversample``: add other training cuts, drawn
            at random (seed 0, the same on every run), so that they are this share of the
            cuts trained on (``0.3``: 70 % selected cuts, 30 % general ones; capped by the
            cuts there are). Fine-tuning on a cohort with some general data mixed in forgets
            less of the rest.
    """

    speakers_file: str | None = None
    where: str | None = None
    cuts_file: str | None = None
    oversample: int | None = None
    general_share: float | None = None

    def __post_init__(self) -> None:
        if self.oversample is not None and self.oversample < 1:
            raise InputDataError(f"{_KEY}.oversample must be >= 1, got {self.oversample}")
        if self.oversample is not None and not self.active:
            raise InputDataError(
                f"{_KEY}.oversample needs {_KEY}.speakers_file, {_KEY}.where or "
                f"{_KEY}.cuts_file to say what"
            )
        if self.general_share is not None:
            if not 0.0 < self.general_share < 1.0:
                raise InputDataError(f"{_KEY}.general_share must be in (0, 1), got "
                                     f"{self.general_share}")
            if self.oversample is not None or not self.active:
                raise InputDataError(f"{_KEY}.general_share mixes general cuts into a "
                                     "selection: it needs a selection and no oversample")
        if self.where is not None and not self.where.strip():
            raise InputDataError(f"{_KEY}.where is empty")

    @property
    def selects_speakers(self) -> bool:
        """Whether a speaker criterion (``speakers_file`` or ``where``) is given."""
        return self.speakers_file is not None or self.where is not None

    @property
    def active(self) -> bool:
        """Whether anything is selected (otherwise every cut is used once)."""
        return self.selects_speakers or self.cuts_file is not None


def _read_id_lines(key: str, path: Path) -> list[tuple[int, str]]:
    """``(line number, id)`` of each id line of a list file (blank and ``#`` lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{_KEY}.{key}: cannot read {path}: {exc}") from exc
    ids = [(number, line.strip()) for number, line in enumerate(lines, start=1)]
    return [(number, i) for number, i in ids if i and not i.startswith("#")]


def _read_speakers_file(path: Path, known: AbstractSet[str]) -> set[str]:
    ids: set[str] = set()
    for number, speaker in _read_id_lines("speakers_file", path):
        if speaker not in known:
            raise InputDataError(
                f"{_KEY}.speakers_file {path} line {number}: speaker id {speaker!r} is not "
                "in the corpus's speakers.csv"
            )
        ids.add(speaker)
    if not ids:
        raise InputDataError(f"{_KEY}.speakers_file {path} lists no speaker ids")
    return ids


def _read_cuts_file(path: Path, known: AbstractSet[str]) -> set[str]:
    listed = _read_id_lines("cuts_file", path)
    unknown = [(number, cut) for number, cut in listed if cut not in known]
    if unknown:
        shown = ", ".join(f"{cut!r} (line {number})" for number, cut in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InputDataError(
            f"{_KEY}.cuts_file {path}: {len(unknown)} cut id(s) are not training cuts: "
            f"{shown}{more}"
        )
    if not listed:
        raise InputDataError(f"{_KEY}.cuts_file {path} lists no cut ids")
    return {cut for _, cut in listed}


def _query_speakers(where: str, speakers: pd.DataFrame) -> set[str]:
    columns = ", ".join(str(c) for c in speakers.columns)
    try:
        chosen = speakers.query(where, engine="python")
    except pd.errors.UndefinedVariableError as exc:
        match = re.search(r"name '([^']+)' is not defined", str(exc))
        name = match.group(1) if match else str(exc)
        raise InputDataError(
            f"{_KEY}.where: unknown column {name!r} in {where!r} "
            f"(columns of speakers.csv: {columns})"
        ) from exc
    except Exception as exc:  # pandas raises many kinds for a bad expression; all are the recipe's
        raise InputDataError(f"{_KEY}.where: cannot evaluate {where!r}: {exc}") from exc
    if not isinstance(chosen, pd.DataFrame):
        raise InputDataError(f"{_KEY}.where: {where!r} is not a true/false test of each speaker")
    return set(chosen["speaker_id"].astype(str))


def select_speakers(config: SelectConfig, speakers: pd.DataFrame) -> set[str] | None:
    """The speaker ids ``config`` selects, or ``None`` when it has no speaker criterion.

    Args:
        config: the ``data.select`` section.
        speakers: the corpus's ``speakers.csv`` (a ``speaker_id`` column and attributes).

    Raises:
        InputDataError: an unreadable speakers file, an id that is not in ``speakers.csv``, a
            predicate naming an unknown column or failing to evaluate, or an empty selection;
            the message names the key.
    """
    if not config.selects_speakers:
        return None
    if "speaker_id" not in speakers.columns:
        raise InputDataError(f"{_KEY}: speakers.csv has no speaker_id column")
    chosen = set(speakers["speaker_id"].astype(str))
    if config.speakers_file is not None:
        chosen &= _read_speakers_file(Path(config.speakers_file), chosen)
    if config.where is not None:
        chosen &= _query_speakers(config.where, speakers)
    if not chosen:
        raise InputDataError(f"{_KEY} selects no speaker (where={config.where!r}, "
                             f"speakers_file={config.speakers_file!r})")
    return chosen


def select_cuts(cuts: CutSet, config: SelectConfig, speakers: pd.DataFrame) -> CutSet:
    """The training cuts ``config`` asks for: the selected cuts (those of the selected speakers
    that ``cuts_file`` lists, when both are given), or all cuts with the selected ones
    repeated ``oversample`` times (repeats keep their cut id).

    Args:
        cuts: the training split's cuts (one supervision each, with a speaker).
        config: the ``data.select`` section.
        speakers: the corpus's ``speakers.csv``.

    Raises:
        InputDataError: see :func:`select_speakers`; also for an unreadable cuts file, cut ids
            that are not training cuts (named), or when no cut is selected.
    """
    if not config.active:
        return cuts
    items = list(cuts)
    chosen = select_speakers(config, speakers)
    listed = None
    if config.cuts_file is not None:
        listed = _read_cuts_file(Path(config.cuts_file), {c.id for c in items})
    selected = [
        c for c in items
        if (chosen is None or (c.supervisions and c.supervisions[0].speaker in chosen))
        and (listed is None or c.id in listed)
    ]
    if not selected:
        if listed is None and chosen is not None:
            raise InputDataError(
                f"{_KEY} selects {len(chosen)} speakers, none of whom has a training cut "
                f"(e.g. {sorted(chosen)[:5]})"
            )
        raise InputDataError(
            f"{_KEY}: none of the {len(listed or ())} cuts of {_KEY}.cuts_file belongs to "
            f"the selected speakers (where={config.where!r}, "
            f"speakers_file={config.speakers_file!r})"
        )
    present = {c.supervisions[0].speaker for c in selected if c.supervisions}
    if chosen is not None and len(present) < len(chosen):  # speakers of other splits, say
        logger.info("%s: %d of the %d selected speakers have no selected training cut",
                    _KEY, len(chosen) - len(present), len(chosen))
    if config.oversample is None:
        logger.info("%s: training on %d cuts of %d speakers (of %d cuts)",
                    _KEY, len(selected), len(present), len(items))
        if config.general_share is not None:
            chosen_ids = {c.id for c in selected}
            others = [c for c in items if c.id not in chosen_ids]
            share = config.general_share
            n = min(len(others), round(share / (1.0 - share) * len(selected)))
            picked = random.Random(0).sample(others, n)
            logger.info("%s: with %d general cuts (%.0f %% of %d)", _KEY, n,
                        100.0 * n / max(1, n + len(selected)), n + len(selected))
            return CutSet.from_cuts(selected + picked)
        return CutSet.from_cuts(selected)
    logger.info("%s: %d cuts of %d speakers taken %d times, with the other %d cuts",
                _KEY, len(selected), len(present), config.oversample,
                len(items) - len(selected))
    return CutSet.from_cuts(items + selected * (config.oversample - 1))
