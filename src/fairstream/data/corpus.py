"""Open a corpus directory written by ``fairstream corpus build`` (or an importer).

The layout itself (file names, ``corpus.json``, its version and splits) is defined in
:mod:`fairstream.data.layout` and described in docs/corpus.md.

Example::

    corpus = load_corpus("data/demo")
    train = corpus.cuts("train")            # lhotse CutSet, audio paths resolved
    corpus.speakers.groupby("split").size()
    mean, std = corpus.cmvn
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairstream.data import layout
from fairstream.data.layout import MANIFEST_KINDS, JsonObject
from fairstream.errors import CorpusError

if TYPE_CHECKING:
    from lhotse import CutSet, RecordingSet, SupervisionSet

__all__ = ["MANIFEST_KINDS", "Corpus", "load_corpus"]


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus directory.

    Attributes:
        root: the corpus directory.
        info: the parsed ``corpus.json``.
    """

    root: Path
    info: JsonObject = field(repr=False)

    @property
    def splits(self) -> list[str]:
        """The splits ``corpus.json`` lists, in its order.

        A ``corpus.json`` that records none falls back to the splits that have a cuts
        manifest (train, dev, test first, then the rest by name).
        """
        listed = layout.corpus_splits(self.info)
        if listed:
            return listed
        suffix = "_cuts.jsonl.gz"
        found = (self.root / layout.MANIFESTS_DIR).glob(f"*{suffix}")
        return layout.order_splits(sorted(p.name[: -len(suffix)] for p in found))

    @property
    def version(self) -> int:
        """Layout version of ``corpus.json`` (checked on load; 1 when the file has none)."""
        return layout.corpus_version(self.info, self.root / layout.CORPUS_JSON)

    def manifest_path(self, split: str, kind: str) -> Path:
        """Path of ``manifests/<split>_<kind>.jsonl.gz``.

        Raises:
            CorpusError: the kind is unknown or the file does not exist.
        """
        path = layout.manifest_path(self.root, split, kind)
        if not path.is_file():
            raise CorpusError(
                f"corpus {self.root} has no {kind} manifest for split {split!r} ({path}); "
                f"splits present: {', '.join(self.splits) or 'none'}"
            )
        return path

    def cuts(self, split: str) -> CutSet:
        """The split's cuts with audio paths resolved against :attr:`root`."""
        from lhotse import CutSet

        cuts = CutSet.from_file(self.manifest_path(split, "cuts"))
        return cuts.with_recording_path_prefix(str(self.root)) if self._relative_paths else cuts

    def recordings(self, split: str) -> RecordingSet:
        """The split's recordings with audio paths resolved against :attr:`root`."""
        from lhotse import RecordingSet

        recs = RecordingSet.from_file(self.manifest_path(split, "recordings"))
        return recs.with_path_prefix(str(self.root)) if self._relative_paths else recs

    def supervisions(self, split: str) -> SupervisionSet:
        """The split's supervisions (text + speaker metadata in ``custom``)."""
        from lhotse import SupervisionSet

        return SupervisionSet.from_file(self.manifest_path(split, "supervisions"))

    @property
    def _relative_paths(self) -> bool:
        return bool(self.info.get("relative_audio_paths", True))

    @cached_property
    def speakers(self) -> pd.DataFrame:
        """``speakers.csv`` (one row per speaker; ``zip`` kept as a 5-character string)."""
        return _read_csv(self.root / layout.SPEAKERS_CSV)

    @cached_property
    def zip_demographics(self) -> pd.DataFrame:
        """``zip_demographics.csv`` (synthetic zip-level attributes)."""
        return _read_csv(self.root / layout.ZIP_DEMOGRAPHICS_CSV)

    @property
    def planted(self) -> JsonObject:
        """The planted disparity: ``under_represented_accents``, ``train_share``, ``test_share``."""
        return dict(self.info.get("planted") or {})

    @cached_property
    def cmvn(self) -> tuple[np.ndarray, np.ndarray]:
        """Global CMVN statistics on train: ``(mean, std)``, each (80,) float32."""
        path = self.root / layout.CMVN_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            mean = np.asarray(data["mean"], dtype=np.float32)
            std = np.asarray(data["std"], dtype=np.float32)
        except FileNotFoundError:
            raise CorpusError(f"corpus {self.root} has no cmvn.json") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise CorpusError(f"{path} is malformed: {e}") from e
        if mean.shape != std.shape or mean.ndim != 1:
            raise CorpusError(f"{path}: mean {mean.shape} and std {std.shape} must be equal 1-D")
        return mean, std


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CorpusError(f"corpus file {path} is missing")
    try:
        return pd.read_csv(path, dtype={"zip": str, "speaker_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path} is not a readable CSV: {e}") from e


def load_corpus(root: str | os.PathLike[str]) -> Corpus:
    """Open and validate a corpus directory.

    Checks that ``corpus.json`` exists, is a fairstream corpus of a layout version this release
    reads, is marked complete, and that the cuts, recordings and supervisions manifests of
    every split it lists exist.

    Raises:
        CorpusVersionError: the layout version is newer or unknown (a :class:`CorpusError`).
        CorpusError: with the missing or bad file named.
    """
    path = Path(root)
    if not path.is_dir():
        raise CorpusError(f"corpus directory {path} does not exist")
    meta = path / layout.CORPUS_JSON
    if not meta.is_file():
        raise CorpusError(f"{path} is not a corpus: {meta} is missing "
                          "(build one with `fairstream corpus build`)")
    info = layout.read_corpus_json(path)
    if info.get("complete") is not True:
        raise CorpusError(
            f"corpus {path} is incomplete (its build was interrupted or is still running); "
            f"finish it with `fairstream corpus build ... --out {path} --resume`"
        )
    corpus = Corpus(root=path, info=info)
    splits = corpus.splits
    if not splits:
        raise CorpusError(f"corpus {path} has no manifests in {path / layout.MANIFESTS_DIR}")
    for split in splits:
        for kind in MANIFEST_KINDS:
            corpus.manifest_path(split, kind)
    return corpus
