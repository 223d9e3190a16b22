"""Import speech data a user already has into a fairstream corpus directory.

Two sources:

* a Kaldi data directory (:func:`import_kaldi_dir`): ``wav.scp``, ``text``, ``utt2spk``,
  optional ``spk2gender`` and optional ``segments``;
* Lhotse recording and supervision manifests (:func:`import_lhotse_manifests`).

Both write the layout every other part of fairstream reads (:mod:`fairstream.data.layout`,
described in docs/corpus.md)::

    OUT/corpus.json                         written last; "complete": true only when done
    OUT/manifests/<split>_{recordings,supervisions,cuts}.jsonl.gz
    OUT/speakers.csv                        speaker_id, split, gender; unknown columns empty
    OUT/zip_demographics.csv                header only (imported data has no zip table)
    OUT/cmvn.json                           global CMVN on the train split's fbank
    OUT/corpus_card.md                      what was imported, counts per split and gender
    OUT/import_report_<split>.json          imported and skipped items with reasons

Audio stays where it is: recordings point at the original files (absolute paths). A file
whose sample rate is not 16 kHz is resampled on load and the resampling is recorded in the
recording manifest (a Lhotse ``Resample`` transform) when ``resample=True`` (default);
with ``resample=False`` it is an error. Supervision text is the normalized transcript
(:func:`fairstream.data.text.normalize`); the original is kept in ``custom["orig_text"]``
when it differs. One cut per supervision, with the supervision's id.

Bad input — missing or corrupt audio, multi-channel audio, a wrong sample rate without
``resample``, empty or non-UTF-8 transcripts, duplicate ids, ids missing from one of the
files, piped commands or ark offsets in ``wav.scp`` — raises :class:`CorpusError` naming the
item, or with ``on_error="skip"`` drops the item, records it in the report and goes on.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from tqdm.auto import tqdm

from fairstream._io import atomic_write_bytes as _atomic_bytes
from fairstream.data import layout
from fairstream.data.layout import SPEAKER_COLUMNS, CorpusVersionError
from fairstream.data.text import normalize
from fairstream.errors import CorpusError, InputDataError
from fairstream.features.fbank import FbankConfig, compute_cmvn, compute_fbank

__all__ = [
    "METADATA_KEYS",
    "SPEAKER_COLUMNS",
    "ImportReport",
    "OnError",
    "SkippedItem",
    "import_kaldi_dir",
    "import_lhotse_manifests",
]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

#: keys every supervision's ``custom`` carries (None when unknown).
METADATA_KEYS = ("accent", "gender", "age_band", "lat", "lon", "zip")
TARGET_RATE = 16000


@dataclass(frozen=True)
class SkippedItem:
    """An item left out by ``on_error="skip"``: its id and why."""

    item: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote and what it skipped."""

    out: Path
    split: str
    source: str
    num_utterances: int
    num_speakers: int
    hours: float
    num_resampled: int
    skipped: tuple[SkippedItem, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        text = (f"split {self.split}: {self.num_utterances} utterances, {self.num_speakers} "
                f"speakers, {self.hours:.2f} h, {self.num_resampled} recordings resampled to "
                f"{TARGET_RATE} Hz, {len(self.skipped)} items skipped")
        if self.skipped:
            shown = "; ".join(f"{s.item}: {s.reason}" for s in self.skipped[:10])
            more = f" (+{len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
            text += f" — {shown}{more}; see import_report_{self.split}.json"
        return text

    def to_dict(self) -> dict[str, Any]:  # Any: JSON values of mixed types
        """JSON-ready form."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["skipped"] = [asdict(s) for s in self.skipped]
        return d


class _Errors:
    """Raise or record per-item errors according to ``on_error``."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise InputDataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped: dict[str, str] = {}

    def __call__(self, item: str, reason: str) -> None:
        if self.on_error == "raise":
            raise CorpusError(f"{item}: {reason}")
        if item not in self.skipped:
            logger.warning("skipping %s: %s", item, reason)
            self.skipped[item] = reason


# --------------------------------------------------------------------------- atomic IO
def _atomic_json(path: Path, obj: object) -> None:
    _atomic_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _atomic_csv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    _atomic_bytes(path, buf.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------- shared checks
def _check_recording(
    rec: Recording, name: str, *, resample: bool, check_audio: bool
) -> tuple[Recording, bool]:
    """Validate one recording; return it (resampled if needed) and whether it was resampled.

    Raises:
        CorpusError: naming ``name``.
    """
    if rec.num_channels != 1:
        raise CorpusError(f"{name}: {rec.num_channels} channels; only mono audio is supported")
    resampled = False
    if rec.sampling_rate != TARGET_RATE:
        if not resample:
            raise CorpusError(
                f"{name}: sample rate {rec.sampling_rate} Hz, expected {TARGET_RATE} Hz "
                "(pass resample=True to resample on load)"
            )
        rec = rec.resample(TARGET_RATE)
        resampled = True
    if rec.num_samples <= 0:
        raise CorpusError(f"{name}: empty audio")
    if check_audio:
        try:
            audio = rec.load_audio()
        except Exception as e:  # decoder errors come in many types
            raise CorpusError(f"{name}: audio cannot be decoded: {_first_line(e)}") from e
        if audio.size == 0:
            raise CorpusError(f"{name}: empty audio")
        if not np.all(np.isfinite(audio)):
            raise CorpusError(f"{name}: audio contains NaN or infinite samples")
    return rec, resampled


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _recording_from_file(path: Path, rec_id: str) -> Recording:
    if not path.is_file():
        raise CorpusError(f"{rec_id}: audio file {path} does not exist")
    try:
        return Recording.from_file(path, recording_id=rec_id)
    except Exception as e:
        raise CorpusError(f"{rec_id}: cannot read audio file {path}: {_first_line(e)}") from e


def _gender(value: object) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(v)


def _clean_text(raw: str, item: str) -> tuple[str, str]:
    """Normalized text (non-empty) and the original; raises CorpusError naming ``item``."""
    if not raw.strip():
        raise CorpusError(f"{item}: empty transcript")
    norm = normalize(raw)
    if not norm:
        raise CorpusError(f"{item}: transcript {raw!r} is empty after normalization")
    return norm, raw


# --------------------------------------------------------------------------- Kaldi
def _read_kaldi_table(
    path: Path, errors: _Errors, *, allow_empty_value: bool = False,
    where_of: dict[str, str] | None = None,
) -> dict[str, str]:
    """Read ``<id> <value...>`` lines; duplicates and undecodable lines go to ``errors``.

    Args:
        where_of: if given, filled with id → ``file:line`` of the id's line, for messages.

    Returns:
        id → value (rest of the line, stripped). Duplicate ids are dropped entirely.
    """
    table: dict[str, str] = {}
    dups: set[str] = set()
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise CorpusError(f"Kaldi file {path} does not exist") from None
    for lineno, raw in enumerate(raw_lines, start=1):
        fields_ = raw.split(maxsplit=1)
        if not fields_:
            continue
        key = fields_[0].decode("utf-8", errors="replace")
        where = f"{path.name}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors(key, f"{where} is not valid UTF-8")
            dups.add(key)  # do not import a half-read item under this id
            continue
        parts = line.strip().split(maxsplit=1)
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            errors(key, f"{where} has no value")
            dups.add(key)
            continue
        if key in table or key in dups:
            errors(key, f"duplicate id in {where}")
            dups.add(key)
            table.pop(key, None)
            continue
        table[key] = value
        if where_of is not None:
            where_of[key] = where
    return table


def import_kaldi_dir(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "train",
    on_error: OnError = "raise",
    resample: bool = True,
    check_audio: bool = True,
    audio_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    cmvn_max_cuts: int | None = 2000,
    progress: bool = False,
) -> ImportReport:
    """Import a Kaldi data directory as one split of a fairstream corpus.

    Supported: ``wav.scp`` lines ``<id> <audio file path>`` (any format libsndfile reads),
    ``text`` (``<utt> <transcript>``), ``utt2spk``, optional ``spk2gender`` (m/f) and optional
    ``segments`` (``<utt> <recording> <start> <end>``; then ``wav.scp`` is keyed by recording).
    Not supported (clear error naming the id): piped commands (``... |``) and ark offsets
    (``file.ark:123``) — write such audio to files first.

    Args:
        src: the Kaldi data directory.
        out: corpus directory to create, or an imported corpus to add ``split`` to.
        split: split name: "train", "dev", "test" or another (e.g. "audit"); see
            :func:`fairstream.data.layout.check_split_name`.
        on_error: "raise" on the first bad item, or "skip" bad items and report them.
        resample: resample non-16 kHz audio on load (recorded in the manifest) instead of erroring.
        check_audio: decode every file once to catch corrupt audio.
        audio_root: base for relative paths in ``wav.scp`` (default: the current directory,
            Kaldi's convention).
        overwrite: replace ``split`` if ``out`` already holds it.
        cmvn_max_cuts: CMVN on at most this many train cuts (evenly spaced); None = all.
        progress: show progress bars.

    Returns:
        :class:`ImportReport`.

    Raises:
        CorpusError: a bad item (with ``on_error="raise"``), a missing required file, or
            nothing left to import.
    """
    src_p = Path(src)
    if not src_p.is_dir():
        raise CorpusError(f"Kaldi data directory {src_p} does not exist")
    errors = _Errors(on_error)
    root = Path(audio_root) if audio_root is not None else Path.cwd()

    text_where: dict[str, str] = {}  # utterance id → "text:12", for messages
    seg_where: dict[str, str] = {}  # utterance id → "segments:3"
    wav = _read_kaldi_table(src_p / "wav.scp", errors)
    text = _read_kaldi_table(src_p / "text", errors, allow_empty_value=True,
                             where_of=text_where)
    utt2spk = _read_kaldi_table(src_p / "utt2spk", errors)
    spk2gender = (
        _read_kaldi_table(src_p / "spk2gender", errors)
        if (src_p / "spk2gender").exists() else {}
    )
    segments: dict[str, tuple[str, float, float]] | None = None
    if (src_p / "segments").exists():
        segments = {}
        for utt, value in _read_kaldi_table(src_p / "segments", errors,
                                            where_of=seg_where).items():
            parts = value.split()
            try:
                rec_id, start, end = parts[0], float(parts[1]), float(parts[2])
                if not 0 <= start < end:
                    raise ValueError
            except (IndexError, ValueError):
                errors(utt, f"{seg_where[utt]}: {value!r} is not '<recording> <start> <end>' "
                            "with 0 <= start < end")
                continue
            segments[utt] = (rec_id, start, end)

    # recordings
    recordings: dict[str, Recording] = {}
    n_resampled = 0
    for rec_id, value in tqdm(wav.items(), desc="audio", disable=not progress):
        if value.endswith("|"):
            errors(rec_id, f"wav.scp entry {value!r} is a piped command; not supported — "
                           "write the audio to a file and list its path")
            continue
        path = Path(value)
        if not path.is_absolute():
            path = root / path
        if not path.exists() and ":" in value and value.rsplit(":", 1)[1].isdigit():
            errors(rec_id, f"wav.scp entry {value!r} is an ark offset; not supported")
            continue
        try:
            rec = _recording_from_file(path, rec_id)
            rec, was_resampled = _check_recording(rec, rec_id, resample=resample,
                                                  check_audio=check_audio)
        except CorpusError as e:
            errors(rec_id, str(e).removeprefix(f"{rec_id}: "))
            continue
        n_resampled += was_resampled
        recordings[rec_id] = rec

    # supervisions
    utt_ids = set(text) | set(utt2spk) | (set(segments) if segments is not None else set(wav))
    sups: list[SupervisionSegment] = []
    for utt in sorted(utt_ids):
        if utt in errors.skipped:
            continue
        if utt not in text:
            errors(utt, f"missing from {src_p / 'text'}")
            continue
        if utt not in utt2spk:
            errors(utt, f"missing from {src_p / 'utt2spk'}")
            continue
        if segments is not None:
            if utt not in segments:
                errors(utt, f"missing from {src_p / 'segments'}")
                continue
            rec_id, start, end = segments[utt]
        else:
            rec_id, start, end = utt, 0.0, -1.0
        if rec_id not in recordings:
            if rec_id not in errors.skipped:
                errors(utt, f"recording {rec_id} is missing from {src_p / 'wav.scp'}")
            else:
                errors(utt, f"recording {rec_id} was skipped: {errors.skipped[rec_id]}")
            continue
        rec = recordings[rec_id]
        if end < 0:
            end = rec.duration
        if end > rec.duration + 0.01:
            errors(utt, f"{seg_where.get(utt, rec_id)}: segment ends at {end:.3f} s, after "
                        f"the end of {rec_id} ({rec.duration:.3f} s)")
            continue
        end = min(end, rec.duration)
        try:
            norm, raw = _clean_text(text[utt], utt)
        except CorpusError as e:
            errors(utt, f"{text_where[utt]}: " + str(e).removeprefix(f"{utt}: "))
            continue
        spk = utt2spk[utt]
        gender = _gender(spk2gender.get(spk))
        custom: dict[str, str | None] = {k: None for k in METADATA_KEYS}
        custom["gender"] = gender
        if raw != norm:
            custom["orig_text"] = raw
        sups.append(SupervisionSegment(
            id=utt, recording_id=rec_id, start=start, duration=round(end - start, 6),
            channel=0, text=norm, speaker=spk, gender=gender, custom=custom,
        ))

    used = {s.recording_id for s in sups}
    recs = [recordings[r] for r in sorted(used)]
    source = {"type": "kaldi", "path": str(src_p.resolve())}
    return _write_split(out, split, recs, sups, source, errors, n_resampled,
                        overwrite=overwrite, cmvn_max_cuts=cmvn_max_cuts, progress=progress,
                        options={"resample": resample, "check_audio": check_audio})


# --------------------------------------------------------------------------- Lhotse
def _iter_jsonl(
    path: Path, errors: _Errors, kind: str
) -> Iterator[tuple[str, dict[str, Any]]]:  # Any: a manifest item is JSON data
    # Any: gzip.open and open return file types with no common annotation
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw_lines = f.read().splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{kind} manifest {path} does not exist") from None
    except (OSError, EOFError) as e:
        raise CorpusError(f"{kind} manifest {path} cannot be read: {e}") from e
    for lineno, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            errors(where, "line is not valid UTF-8")
            continue
        except json.JSONDecodeError as e:
            errors(where, f"line is not valid JSON: {e}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            errors(where, f"line is not a {kind} (no 'id')")
            continue
        yield where, obj


def import_lhotse_manifests(
    recordings: str | os.PathLike[str],
    supervisions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "train",
    on_error: OnError = "raise",
    resample: bool = True,
    check_audio: bool = True,
    overwrite: bool = False,
    cmvn_max_cuts: int | None = 2000,
    progress: bool = False,
) -> ImportReport:
    """Import Lhotse recording + supervision manifests (JSONL, optionally gzipped) as one split.

    Supervision ``custom`` fields are kept; the metadata keys fairstream uses
    (:data:`METADATA_KEYS`) are added as None when absent, ``gender`` taken from the
    supervision when set. Arguments as in :func:`import_kaldi_dir`.

    Raises:
        CorpusError: a bad item (with ``on_error="raise"``), a missing manifest, or nothing
            left to import.
    """
    errors = _Errors(on_error)
    rec_path, sup_path = Path(recordings), Path(supervisions)
    recs: dict[str, Recording] = {}
    dup_recs: set[str] = set()
    n_resampled = 0
    for where, obj in tqdm(_iter_jsonl(rec_path, errors, "recording"), desc="audio",
                           disable=not progress):
        rid = obj["id"]
        if rid in recs or rid in dup_recs:
            errors(rid, f"duplicate recording id ({where})")
            dup_recs.add(rid)
            recs.pop(rid, None)
            continue
        try:
            rec = Recording.from_dict(obj)
        except Exception as e:  # noqa: BLE001 - any parse failure is this item's fault
            errors(rid, f"malformed recording ({where}): {_first_line(e)}")
            continue
        if any(s.type == "command" for s in rec.sources):
            errors(rid, "audio source is a shell command; not supported — "
                        "write the audio to a file")
            continue
        missing = [s.source for s in rec.sources
                   if s.type == "file" and not Path(s.source).is_file()]
        if missing:
            errors(rid, f"audio file {missing[0]} does not exist")
            continue
        try:
            rec, was_resampled = _check_recording(rec, rid, resample=resample,
                                                  check_audio=check_audio)
        except CorpusError as e:
            errors(rid, str(e).removeprefix(f"{rid}: "))
            continue
        n_resampled += was_resampled
        recs[rid] = rec

    sups: list[SupervisionSegment] = []
    seen: set[str] = set()
    dup_sups: set[str] = set()
    for where, obj in _iter_jsonl(sup_path, errors, "supervision"):
        sid = obj["id"]
        if sid in seen:
            errors(sid, f"duplicate supervision id ({where})")
            dup_sups.add(sid)
            continue
        seen.add(sid)
        try:
            sup = SupervisionSegment.from_dict(obj)
        except Exception as e:  # noqa: BLE001 - any parse failure is this item's fault
            errors(sid, f"malformed supervision ({where}): {_first_line(e)}")
            continue
        rid = sup.recording_id
        if rid not in recs:
            reason = errors.skipped.get(rid, f"not in {rec_path.name}")
            errors(sid, f"recording {rid} unusable: {reason}")
            continue
        if not sup.speaker:
            errors(sid, "supervision has no speaker")
            continue
        rec = recs[rid]
        if sup.start < 0 or sup.duration <= 0 or sup.end > rec.duration + 0.01:
            errors(sid, f"span {sup.start:.3f}-{sup.end:.3f} s outside recording {rid} "
                        f"({rec.duration:.3f} s)")
            continue
        try:
            norm, raw = _clean_text(sup.text or "", sid)
        except CorpusError as e:
            errors(sid, str(e).removeprefix(f"{sid}: "))
            continue
        custom = dict(sup.custom or {})
        for k in METADATA_KEYS:
            custom.setdefault(k, None)
        gender = _gender(sup.gender) or _gender(custom.get("gender"))
        custom["gender"] = gender
        if raw != norm:
            custom["orig_text"] = raw
        sups.append(SupervisionSegment(
            id=sid, recording_id=rid, start=sup.start,
            duration=min(sup.duration, rec.duration - sup.start), channel=0,
            text=norm, speaker=sup.speaker, gender=gender, language=sup.language, custom=custom,
        ))
    sups = [s for s in sups if s.id not in dup_sups]
    used = {s.recording_id for s in sups}
    source = {"type": "lhotse", "recordings": str(rec_path.resolve()),
              "supervisions": str(sup_path.resolve())}
    return _write_split(out, split, [recs[r] for r in sorted(used)], sups, source, errors,
                        n_resampled, overwrite=overwrite, cmvn_max_cuts=cmvn_max_cuts,
                        progress=progress,
                        options={"resample": resample, "check_audio": check_audio})


# --------------------------------------------------------------------------- writing
def _read_corpus_json(out: Path) -> dict[str, Any] | None:  # Any: JSON data
    p = out / layout.CORPUS_JSON
    if not p.exists():
        if out.exists() and any(out.iterdir()):
            raise CorpusError(f"output directory {out} is not empty and holds no {p.name}")
        return None
    try:
        info = layout.read_corpus_json(out)
    except CorpusVersionError:
        raise
    except CorpusError as e:
        raise CorpusError(f"output directory {out} already holds a different corpus ({e}); "
                          "choose another --out") from e
    if "importer" not in (info.get("config") or {}):
        raise CorpusError(
            f"output directory {out} already holds a different corpus ({p}); choose another --out"
        )
    return info


def _write_split(
    out_arg: str | os.PathLike[str],
    split: str,
    recs: list[Recording],
    sups: list[SupervisionSegment],
    source: dict[str, str],
    errors: _Errors,
    n_resampled: int,
    *,
    overwrite: bool,
    cmvn_max_cuts: int | None,
    progress: bool,
    options: dict[str, Any],  # Any: importer options of mixed types, stored in corpus.json
) -> ImportReport:
    out = Path(out_arg)
    try:
        layout.check_split_name(split)
    except CorpusError as e:
        raise InputDataError(str(e)) from None
    if not sups:
        detail = "; ".join(f"{k}: {v}" for k, v in list(errors.skipped.items())[:5])
        skipped = f" (skipped: {detail})" if detail else ""
        raise CorpusError(f"nothing to import from {source}{skipped}")
    info = _read_corpus_json(out)
    # Any: per-split entries of corpus.json (JSON data)
    splits: dict[str, Any] = dict(info["config"]["splits"]) if info else {}
    if split in splits and not overwrite:
        raise CorpusError(f"{out} already holds split {split!r}; pass overwrite=True to replace it")

    # mark incomplete while writing, so a crash never leaves a corpus that looks complete
    config = {"importer": source["type"], "splits": splits}
    if info is not None:
        layout.write_corpus_json(out, {**info, "complete": False})

    rec_set = RecordingSet.from_recordings(recs)
    sup_set = SupervisionSet.from_segments(sups)
    cuts = CutSet.from_manifests(recordings=rec_set, supervisions=sup_set)
    cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    assert {c.id for c in cuts} == {s.id for s in sups}
    for kind, manifest in zip(layout.MANIFEST_KINDS, (rec_set, sup_set, cuts)):
        layout.write_manifest(out, split, kind, (item.to_dict() for item in manifest))

    # speakers.csv: keep rows of other splits
    rows: list[dict[str, str]] = []
    spk_csv = out / layout.SPEAKERS_CSV
    if spk_csv.exists():
        with spk_csv.open(encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("split") != split]
    genders: dict[str, str | None] = {}
    for s in sups:
        genders.setdefault(str(s.speaker), s.gender)
    for spk in sorted(genders):
        row = {c: "" for c in SPEAKER_COLUMNS}
        row.update(speaker_id=spk, split=split, gender=genders[spk] or "")
        rows.append(row)
    _atomic_csv(spk_csv, SPEAKER_COLUMNS, rows)
    if not (out / layout.ZIP_DEMOGRAPHICS_CSV).exists():
        _atomic_csv(out / layout.ZIP_DEMOGRAPHICS_CSV, layout.ZIP_COLUMNS, [])

    if split == "train":
        selected = list(cuts)
        if cmvn_max_cuts is not None and len(selected) > cmvn_max_cuts:
            idx = np.linspace(0, len(selected) - 1, cmvn_max_cuts).round().astype(int)
            selected = [selected[i] for i in idx]
        fcfg = FbankConfig()

        def feats() -> Iterator[np.ndarray]:
            for c in tqdm(selected, desc="cmvn", disable=not progress):
                audio = c.load_audio()
                if audio.shape[-1] >= fcfg.window_samples:
                    yield compute_fbank(audio[0], TARGET_RATE, fcfg, name=c.id)

        compute_cmvn(feats()).save(out / layout.CMVN_JSON)

    hours = sum(s.duration for s in sups) / 3600.0
    report = ImportReport(
        out=out, split=split, source=source["type"], num_utterances=len(sups),
        num_speakers=len(genders), hours=hours, num_resampled=n_resampled,
        skipped=tuple(SkippedItem(k, v) for k, v in errors.skipped.items()),
    )
    _atomic_json(layout.import_report_path(out, split), report.to_dict())

    splits[split] = {"source": source, "utterances": len(sups), "speakers": len(genders),
                     "hours": round(hours, 4), "skipped": len(report.skipped), **options}
    config["splits"] = splits
    fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    _write_card(out, splits)
    layout.write_corpus_json(out, {
        "preset": None, "seed": None, "config": config, "splits": layout.order_splits(splits),
        "planted": {}, "complete": True, "fingerprint": fingerprint, "relative_audio_paths": False,
    })
    logger.info("imported %d utterances (%d speakers, %.2f h) into %s split %s; skipped %d",
                len(sups), len(genders), hours, out, split, len(report.skipped))
    return report


def _write_card(out: Path, splits: dict[str, Any]) -> None:  # Any: corpus.json split entries
    rows = []
    spk_csv = out / layout.SPEAKERS_CSV
    with spk_csv.open(encoding="utf-8", newline="") as f:
        genders = Counter((r["split"], r["gender"] or "unknown") for r in csv.DictReader(f))
    for name, s in sorted(splits.items()):
        rows.append(f"| {name} | {s['source']['type']} | {s['utterances']} | {s['speakers']} | "
                    f"{s['hours']:.3f} | {s['skipped']} |")
    gender_rows = [f"| {sp} | {g} | {n} |" for (sp, g), n in sorted(genders.items())]
    text = "\n".join([
        "# Corpus card (imported data)",
        "",
        "This corpus was imported from existing recordings; it is not synthetic and carries",
        "no planted cohorts. Speaker metadata other than gender (when given) is unknown.",
        "",
        "| split | source | utterances | speakers | hours | skipped |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "| split | gender | speakers |",
        "|---|---|---|",
        *gender_rows,
        "",
    ])
    _atomic_bytes(out / layout.CORPUS_CARD, text.encode("utf-8"))
