"""Import real multi-talker recordings (meetings, calls) as a ``fairstream corpus mix``
directory, so ``fairstream mt train|decode|score`` and ``benchmarks/multitalker.py`` run on
them unchanged.

Two inputs are enough:

* a **reference**: SegLST JSON (``session_id``, ``speaker``, ``start_time``, ``end_time``,
  ``words``; what meeteval reads) or NIST **STM** (``file channel speaker begin end
  [<labels>] transcript`` per line, ``;;`` comments; the file name is the session);
* a **recording list**: one ``<session_id> <audio path>`` per line (a Kaldi ``wav.scp``
  without pipes); relative paths are relative to the list's directory.

Written to ``OUT`` in the layout :func:`fairstream.data.mixing.mix_corpus` writes:
``audio/<split>/<session>.flac`` (mono, the original sample rate; features resample on
load), ``<split>.seglst.json`` (normalized words, :func:`fairstream.data.text.normalize`),
Lhotse manifests, ``sessions.csv`` (rows of other splits already there are kept),
``import_report_<split>.json`` and, last, ``mix.json``.

Segments whose words normalize to nothing (STM's ``ignore_time_segment_in_scoring``,
``inter_segment_gap`` speakers, pure noise tags) are dropped and counted. Bad input —
a session without a recording, a recording that cannot be decoded or has several channels,
one speaker's turns overlapping each other, a turn outside the recording, a malformed line —
raises :class:`CorpusError` naming the session (or file and line), or with
``on_error="skip"`` drops that session, records why in the report and goes on. Recordings
listed but absent from the reference are reported, not imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fairstream._io import atomic_path, atomic_write_text
from fairstream.errors import CorpusError, InputDataError
from fairstream.metrics.multitalker import Segment, read_seglst

__all__ = ["MixImportReport", "import_sessions", "read_reference", "read_stm"]

logger = logging.getLogger(__name__)

_IGNORED_SPEAKERS = frozenset({"inter_segment_gap", "excluded_region"})
_IGNORE_WORDS = "ignore_time_segment_in_scoring"


@dataclass(frozen=True)
class MixImportReport:
    """What :func:`import_sessions` wrote and what it left out."""

    out: Path
    split: str
    sessions: int
    turns: int
    hours: float
    dropped_segments: int
    skipped: dict[str, str] = field(default_factory=dict)
    unreferenced_recordings: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (f"split {self.split}: {self.sessions} sessions, {self.turns} turns, "
                f"{self.hours:.2f} h; {self.dropped_segments} empty segments dropped, "
                f"{len(self.skipped)} sessions skipped, {len(self.unreferenced_recordings)} "
                "recordings without a reference")
        if self.skipped:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:5])
            more = f" (+{len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            text += f" — {shown}{more}; see import_report_{self.split}.json"
        return text


def read_stm(path: str | Path) -> list[Segment]:
    """Segments of a NIST STM file (the file name column is the session id).

    Raises:
        InputDataError: a line with fewer than 5 fields or bad times (file and line named).
    """
    p = Path(path)
    out = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"cannot read STM {p}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(";;"):
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            raise InputDataError(f"{p}:{n}: an STM line needs file, channel, speaker, begin "
                                 f"and end, got {line!r}")
        session, _channel, speaker, begin, end = fields[:5]
        rest = fields[5] if len(fields) > 5 else ""
        if rest.startswith("<"):  # optional <label,...> column
            close = rest.find(">")
            rest = rest[close + 1:] if close >= 0 else ""
        try:
            a, b = float(begin), float(end)
        except ValueError as exc:
            raise InputDataError(f"{p}:{n}: begin/end are not numbers: {begin!r} {end!r}"
                                 ) from exc
        if not np.isfinite(a) or not np.isfinite(b) or b < a:
            raise InputDataError(f"{p}:{n}: bad times begin {a}, end {b}")
        out.append(Segment(session, speaker, a, b, rest.strip()))
    return out


def read_reference(path: str | Path) -> list[Segment]:
    """SegLST (``.json``) or STM (any other suffix) segments."""
    p = Path(path)
    return read_seglst(p) if p.suffix.lower() == ".json" else read_stm(p)


def _read_recording_list(path: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"cannot read recording list {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise InputDataError(f"{path}:{n}: expected '<session_id> <audio path>', got "
                                 f"{line.strip()!r}")
        sid, audio = parts
        if audio.endswith("|"):
            raise InputDataError(f"{path}:{n}: piped commands are not supported; give a file")
        if sid in out:
            raise InputDataError(f"{path}:{n}: session {sid} is listed twice")
        a = Path(audio).expanduser()
        out[sid] = a if a.is_absolute() else (path.parent / a)
    return out


def import_sessions(reference: str | Path, recordings: str | Path, out_dir: str | Path, *,
                    split: str = "test", on_error: Literal["raise", "skip"] = "raise"
                    ) -> MixImportReport:
    """Import sessions as the module docstring says.

    Raises:
        CorpusError: a bad session (named) with ``on_error="raise"``; nothing importable.
        InputDataError: unreadable reference or recording list.
    """
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment

    from fairstream.data.mixing import overlap_ratio, write_split, write_summary
    from fairstream.data.text import normalize
    from fairstream.multitalker.targets import check_session

    if on_error not in ("raise", "skip"):
        raise InputDataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = Path(out_dir)
    audio_of = _read_recording_list(Path(recordings))
    by_session: dict[str, list[Segment]] = {}
    dropped = 0
    for seg in read_reference(reference):
        words = "" if seg.words.strip().lower() == _IGNORE_WORDS else normalize(seg.words)
        if not words or seg.speaker.lower() in _IGNORED_SPEAKERS:
            dropped += 1
            continue
        by_session.setdefault(seg.session_id, []).append(
            Segment(seg.session_id, seg.speaker, round(seg.start_time, 3),
                    round(seg.end_time, 3), words))
    skipped: dict[str, str] = {}

    def bad(sid: str, reason: str) -> None:
        if on_error == "raise":
            raise CorpusError(f"session {sid}: {reason}")
        logger.warning("skipping session %s: %s", sid, reason)
        skipped[sid] = reason

    segs: list[dict[str, Any]] = []
    recs, sups, rows = [], [], []
    hours = 0.0
    for sid in sorted(by_session):
        if sid not in audio_of:
            bad(sid, f"no recording in {recordings}")
            continue
        src = audio_of[sid]
        try:
            samples, rate = sf.read(str(src), dtype="float32", always_2d=True)
        except Exception as exc:  # decoders raise many types
            bad(sid, f"audio {src} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc}")
            continue
        if samples.shape[1] != 1:
            bad(sid, f"audio {src} has {samples.shape[1]} channels; give one mono mixture")
            continue
        if samples.shape[0] == 0 or not np.all(np.isfinite(samples)):
            bad(sid, f"audio {src} is empty or has NaN/infinite samples")
            continue
        duration = samples.shape[0] / rate
        turns = sorted(by_session[sid], key=lambda s: (s.start_time, s.end_time))
        try:
            check_session(turns, duration)
        except InputDataError as exc:
            bad(sid, str(exc).removeprefix(f"session {sid}: "))
            continue
        path = out / "audio" / split / f"{sid}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sf.write(tmp, samples[:, 0], rate, format="FLAC")
        recs.append(Recording.from_file(path.resolve(), recording_id=sid))
        for k, t in enumerate(turns):
            segs.append(t.as_dict())
            sups.append(SupervisionSegment(id=f"{sid}-{k}", recording_id=sid,
                                           start=t.start_time,
                                           duration=round(t.end_time - t.start_time, 3),
                                           speaker=t.speaker, text=t.words))
        rows.append({"session_id": sid, "split": split, "turns": len(turns),
                     "speakers": len({t.speaker for t in turns}),
                     "duration": round(duration, 3),
                     "overlap_ratio": round(overlap_ratio(
                         [(t.start_time, t.end_time) for t in turns]), 4),
                     "scale": 1.0})
        hours += duration / 3600
    if not rows:
        raise CorpusError(f"no session of {reference} could be imported"
                          + (f" ({len(skipped)} skipped; first: "
                             f"{next(iter(skipped.items()))})" if skipped else ""))
    write_split(out, split, segs, recs, sups)
    report = MixImportReport(out, split, len(rows), len(segs), hours, dropped, skipped,
                             tuple(sorted(set(audio_of) - set(by_session))))
    atomic_write_text(out / f"import_report_{split}.json",
                      json.dumps({**asdict(report), "out": str(out)}, indent=1) + "\n")
    table = out / "sessions.csv"
    kept = (pd.read_csv(table, dtype={"session_id": str, "split": str})
            .query("split != @split").to_dict("records") if table.is_file() else [])
    sources: dict[str, Any] = {}
    if (out / "mix.json").is_file():
        sources = dict(json.loads((out / "mix.json").read_text()).get("imported_from", {}))
    sources[split] = {"reference": str(reference), "recordings": str(recordings)}
    write_summary(out, kept + rows, {"imported_from": sources})
    return report
