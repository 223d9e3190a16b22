"""The utterance table of a corpus split: one row per cut, its audio path and speaker metadata.

The ``path`` column is the key that trial lists and embedding tables share: the audio file
relative to the corpus ``audio/`` directory when it lies inside it (``test/spk0042/x.flac``,
VoxCeleb style), else the path as the recording manifest names it (imported corpora point at
the user's original files).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from lhotse import CutSet
from lhotse.cut import Cut

from fairstream.data.layout import AUDIO_DIR
from fairstream.errors import CorpusError

__all__ = ["METADATA_COLUMNS", "cut_path", "utterance_table"]

logger = logging.getLogger(__name__)

#: speaker columns carried into utterance and embedding tables when the corpus has them
METADATA_COLUMNS = (
    "accent", "gender", "age_band", "voice", "noise_type", "telephone", "state", "zip",
)


def cut_path(cut: Cut, corpus_root: Path) -> str:
    """The shared key of a cut's audio (see the module docstring)."""
    sources = getattr(cut.recording, "sources", None) if cut.has_recording else None
    if not sources:
        raise CorpusError(f"cut {cut.id} has no audio source")
    src = Path(str(sources[0].source))
    if not src.is_absolute() and not src.exists() and (corpus_root / src).exists():
        src = corpus_root / src  # a manifest path relative to the corpus, not to the working dir
    audio = (corpus_root / AUDIO_DIR).resolve()
    try:
        return src.resolve().relative_to(audio).as_posix()
    except ValueError:
        return src.as_posix()


def utterance_table(
    cuts: CutSet, corpus_root: str | Path, speakers: pd.DataFrame | None = None, *, split: str = ""
) -> pd.DataFrame:
    """One row per cut: ``cut_id, speaker_id, path, duration, split`` + speaker metadata.

    Args:
        cuts: the split's cuts (one supervision each).
        corpus_root: corpus directory (to make paths relative to ``audio/``).
        speakers: the corpus ``speakers.csv`` table; supervision ``custom`` fields fill in
            for speakers it lacks.
        split: split name recorded in the table.

    Raises:
        CorpusError: a cut without supervision/speaker, or two cuts sharing an audio file.
    """
    root = Path(corpus_root)
    meta = (
        speakers.drop_duplicates("speaker_id").set_index("speaker_id")
        if speakers is not None and "speaker_id" in speakers.columns
        else None
    )
    rows = []
    for cut in cuts:
        if not cut.supervisions or cut.supervisions[0].speaker is None:
            raise CorpusError(f"cut {cut.id} has no supervision with a speaker")
        sup = cut.supervisions[0]
        spk = str(sup.speaker)
        row: dict[str, object] = {
            "cut_id": cut.id,
            "speaker_id": spk,
            "path": cut_path(cut, root),
            "duration": float(cut.duration),
            "split": split,
        }
        custom = sup.custom or {}
        for col in METADATA_COLUMNS:
            if meta is not None and col in meta.columns and spk in meta.index:
                row[col] = meta.at[spk, col]
            elif col in custom:
                row[col] = custom[col]
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        raise CorpusError(f"split {split!r} of {root} has no cuts")
    dup = table["path"][table["path"].duplicated()]
    if not dup.empty:
        raise CorpusError(
            f"audio {dup.iloc[0]!r} backs more than one cut; trials need one utterance per file"
        )
    return table
