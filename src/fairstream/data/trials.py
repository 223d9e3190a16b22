"""Speaker-verification trial lists in the VoxCeleb format.

One trial per line: ``<label> <enrollment path> <test path>``, label ``1`` for a target trial
(same speaker) and ``0`` for a non-target trial, paths relative to an audio root (for our
corpora the ``audio/`` directory, e.g. ``test/spk0042/spk0042-0007.flac``). This is the
format of VoxCeleb1's ``veri_test2.txt``, so a user's own VoxCeleb list reads unchanged.

Trials are built from held-out speakers (the ``test`` split by default). Besides random
non-target pairs, every speaker gets non-target pairs with a speaker of the *same gender* and of
the *same accent*: those are the hard impostors, and the only ones that count in a per-gender
or per-accent EER (a trial belongs to a group when both sides do).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text
from fairstream._lines import read_lines
from fairstream.errors import InputDataError

__all__ = [
    "Trial",
    "TrialSpec",
    "build_trials",
    "check_files",
    "check_known",
    "read_trials",
    "write_trials",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One verification trial: ``label`` 1 (target) or 0 (non-target) and two utterance paths."""

    label: int
    enroll: str
    test: str

    def to_line(self) -> str:
        """The VoxCeleb-format line (without newline)."""
        return f"{self.label} {self.enroll} {self.test}"


@dataclass(frozen=True)
class TrialSpec:
    """How many trials to draw per held-out speaker.

    Attributes:
        targets: target pairs per speaker (fewer when the speaker has fewer distinct pairs).
        same_gender: non-target pairs with another speaker of the same gender.
        same_accent: non-target pairs with another speaker of the same accent.
        random: non-target pairs with any other speaker.
        seed: random seed (the list is a deterministic function of the table and the spec).
    """

    targets: int = 20
    same_gender: int = 20
    same_accent: int = 20
    random: int = 20
    seed: int = 0


def build_trials(utterances: pd.DataFrame, spec: TrialSpec | None = None) -> list[Trial]:
    """Draw a trial list from a table of utterances of held-out speakers.

    Args:
        utterances: one row per utterance with columns ``path`` (unique) and ``speaker_id``;
            optional ``gender`` and ``accent`` columns enable same-gender / same-accent
            non-target pairs.
        spec: numbers of trials per speaker.

    Returns:
        Trials sorted target-first per speaker; no pair appears twice (in either order).

    Raises:
        InputDataError: missing columns, duplicate paths, or fewer than two speakers.
    """
    spec = spec or TrialSpec()
    for col in ("path", "speaker_id"):
        if col not in utterances.columns:
            raise InputDataError(f"utterance table has no column {col!r} "
                                 f"(has {list(utterances.columns)})")
    dup = utterances["path"][utterances["path"].duplicated()]
    if not dup.empty:
        raise InputDataError(f"utterance path {dup.iloc[0]!r} appears more than once")
    table = utterances.sort_values(["speaker_id", "path"]).reset_index(drop=True)
    by_speaker = {str(s): list(g["path"]) for s, g in table.groupby("speaker_id", sort=True)}
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise InputDataError(f"need at least two speakers to build trials, got {speakers}")
    meta = table.drop_duplicates("speaker_id").set_index("speaker_id")
    rng = np.random.default_rng(spec.seed)
    seen: set[tuple[str, str]] = set()
    trials: list[Trial] = []

    def add(label: int, a: str, b: str) -> bool:
        key = (a, b) if a < b else (b, a)
        if a == b or key in seen:
            return False
        seen.add(key)
        trials.append(Trial(label, a, b))
        return True

    def impostors(spk: str, column: str | None) -> list[str]:
        if column is None:
            return [s for s in speakers if s != spk]
        if column not in meta.columns or pd.isna(meta.at[spk, column]):
            return []
        value = meta.at[spk, column]
        return [s for s in speakers if s != spk and meta.at[s, column] == value]

    for spk in speakers:
        utts = by_speaker[spk]
        n_pairs = len(utts) * (len(utts) - 1) // 2
        want = min(spec.targets, n_pairs)
        tries = 0
        added = 0
        while added < want and tries < 20 * want + 20:
            i, j = rng.choice(len(utts), 2, replace=False)
            added += add(1, utts[i], utts[j])
            tries += 1
        impostor_kinds = (("gender", spec.same_gender), ("accent", spec.same_accent),
                          (None, spec.random))
        for column, count in impostor_kinds:
            pool = impostors(spk, column)
            if not pool or count == 0:
                continue
            added = tries = 0
            while added < count and tries < 20 * count + 20:
                other = pool[int(rng.integers(len(pool)))]
                a = utts[int(rng.integers(len(utts)))]
                b = by_speaker[other][int(rng.integers(len(by_speaker[other])))]
                added += add(0, a, b)
                tries += 1
    n_t = sum(t.label for t in trials)
    logger.info("built %d trials (%d target) over %d speakers", len(trials), n_t, len(speakers))
    return trials


def read_trials(path: str | Path) -> list[Trial]:
    """Read a VoxCeleb-format trial list (``label enroll test`` per line; blank lines skipped).

    Raises:
        InputDataError: the file is missing, or a line is not UTF-8, does not have three
            fields or its label is not 0/1; the message names the file and the line number.
    """
    path = Path(path)
    trials: list[Trial] = []
    for n, line in read_lines(path, "trial list"):
        fields = line.split()
        if len(fields) != 3:
            raise InputDataError(
                f"{path}:{n}: expected '<label> <enroll> <test>', got {line.strip()!r}"
            )
        if fields[0] not in ("0", "1"):
            raise InputDataError(f"{path}:{n}: label must be 0 or 1, got {fields[0]!r}")
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise InputDataError(f"trial list {path} is empty")
    return trials


def write_trials(trials: Iterable[Trial], path: str | Path) -> Path:
    """Write trials in the VoxCeleb format, atomically."""
    lines = []
    for t in trials:
        if t.label not in (0, 1) or any(c.isspace() for c in t.enroll + t.test):
            raise InputDataError(f"cannot write trial {t}: label must be 0/1, paths without spaces")
        lines.append(t.to_line() + "\n")
    return atomic_write_text(path, "".join(lines))


def check_known(
    trials: Sequence[Trial], known: Iterable[str], *, source: str = "embeddings"
) -> None:
    """Raise if a trial names an utterance that ``known`` (e.g. the embedded paths) lacks.

    Raises:
        InputDataError: names the first unknown utterances and how many there are.
    """
    have = set(known)
    missing = sorted({p for t in trials for p in (t.enroll, t.test) if p not in have})
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise InputDataError(
            f"{len(missing)} utterance(s) named in the trials are unknown to {source}: {shown}"
            + (" ..." if len(missing) > 5 else "")
        )


def check_files(trials: Sequence[Trial], root: str | Path) -> None:
    """Raise if a trial names a file that does not exist under ``root``.

    Raises:
        InputDataError: names the first missing files and how many there are.
    """
    root = Path(root)
    paths = sorted({p for t in trials for p in (t.enroll, t.test)})
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        shown = ", ".join(str(root / m) for m in missing[:5])
        raise InputDataError(
            f"{len(missing)} file(s) named in the trials do not exist: {shown}"
            + (" ..." if len(missing) > 5 else "")
        )
