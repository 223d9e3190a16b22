"""The corpus directory layout: file names, split names and ``corpus.json``.

Every module that reads or writes a corpus directory takes its paths and its ``corpus.json``
handling from here; docs/corpus.md describes the same layout for people. Nothing here needs
numpy, pandas or lhotse, so torch-free readers (the audit) can use it too::

    ROOT/corpus.json                                  description; "complete": true written last
    ROOT/manifests/<split>_{recordings,supervisions,cuts}.jsonl.gz    Lhotse manifests
    ROOT/speakers.csv                                 one row per speaker (``split`` column)
    ROOT/zip_demographics.csv                         zip-level attributes (may be header only)
    ROOT/cmvn.json                                    global CMVN of 80-dim fbank on train
    ROOT/corpus_card.md                               human-readable description
    ROOT/heldout_slots.json                           slot values held out of training (if any)
    ROOT/audio/<split>/<speaker>/<utterance>.flac     synthetic corpora only
    ROOT/import_report_<split>.json                   imported corpora only

Version policy: ``corpus.json["version"]`` is the layout version that wrote the corpus. This
release writes :data:`CORPUS_VERSION` and reads every version in :data:`READABLE_VERSIONS`;
a file without a version is version 1 (the layout before the field was checked). Any other
value is a :class:`CorpusVersionError` naming the version found and the versions readable.
The version is not part of a corpus' fingerprint, which hashes only what the audio and
manifests are made from.

Splits are data: ``corpus.json["splits"]`` lists them in order (:func:`corpus_splits` also
reads corpora written before that field existed). :data:`DEFAULT_SPLITS` is the set a
synthetic preset has unless it declares more.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from fairstream._io import atomic_write_bytes, atomic_write_text
from fairstream.errors import CorpusError

# Any: a parsed JSON object (corpus.json, a manifest line) holds values of any JSON type
JsonObject: TypeAlias = dict[str, Any]

__all__ = [
    "AUDIO_DIR",
    "CMVN_JSON",
    "CORPUS_CARD",
    "CORPUS_FORMAT",
    "CORPUS_JSON",
    "CORPUS_VERSION",
    "DEFAULT_SPLITS",
    "HELDOUT_SLOTS_JSON",
    "MANIFESTS_DIR",
    "MANIFEST_KINDS",
    "READABLE_VERSIONS",
    "SPEAKERS_CSV",
    "SPEAKER_COLUMNS",
    "ZIP_COLUMNS",
    "ZIP_DEMOGRAPHICS_CSV",
    "CorpusVersionError",
    "JsonObject",
    "check_split_name",
    "corpus_splits",
    "corpus_version",
    "import_report_path",
    "manifest_path",
    "order_splits",
    "read_corpus_json",
    "read_heldout_slots",
    "write_corpus_json",
    "write_heldout_slots",
    "write_manifest",
]

#: ``corpus.json["format"]`` of every fairstream corpus.
CORPUS_FORMAT = "fairstream-corpus"
#: Layout version this release writes.
CORPUS_VERSION = 1
#: Layout versions this release reads.
READABLE_VERSIONS: tuple[int, ...] = (1,)
#: Splits of a corpus that declares none (and of every preset unless it adds more).
DEFAULT_SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Lhotse manifests every split has.
MANIFEST_KINDS: tuple[str, ...] = ("recordings", "supervisions", "cuts")

CORPUS_JSON = "corpus.json"
MANIFESTS_DIR = "manifests"
SPEAKERS_CSV = "speakers.csv"
ZIP_DEMOGRAPHICS_CSV = "zip_demographics.csv"
CMVN_JSON = "cmvn.json"
CORPUS_CARD = "corpus_card.md"
AUDIO_DIR = "audio"
HELDOUT_SLOTS_JSON = "heldout_slots.json"

#: Columns every ``speakers.csv`` has, in this order (values may be empty when unknown);
#: synthetic corpora add more after them.
SPEAKER_COLUMNS: tuple[str, ...] = (
    "speaker_id", "split", "accent", "voice", "gender", "age_band", "pitch", "rate",
    "noise_type", "snr_db", "telephone", "lat", "lon", "zip", "state",
)
#: Columns every ``zip_demographics.csv`` has; synthetic corpora add the attributes after them.
ZIP_COLUMNS: tuple[str, ...] = ("zip", "state", "lat", "lon")

_SPLIT_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")


class CorpusVersionError(CorpusError):
    """``corpus.json`` carries a layout version this release cannot read.

    Attributes:
        path: the ``corpus.json`` file.
        found: the ``version`` value found there.
        readable: the versions this release reads.
    """

    def __init__(self, path: Path, found: object, readable: tuple[int, ...]) -> None:
        self.path = path
        self.found = found
        self.readable = readable
        newer = isinstance(found, int) and not isinstance(found, bool) and found > max(readable)
        hint = "; it was written by a newer fairstream, upgrade to read it" if newer else ""
        super().__init__(
            f"{path}: corpus layout version {found!r} is not readable by this release "
            f"(reads version{'s' if len(readable) > 1 else ''} "
            f"{', '.join(map(str, readable))}){hint}"
        )


def check_split_name(name: str) -> str:
    """Return ``name`` if it can name a split (lower-case letters, digits, ``_``, ``-``).

    Raises:
        CorpusError: naming the bad value.
    """
    if not isinstance(name, str) or not _SPLIT_NAME.match(name):
        raise CorpusError(
            f"split name {name!r} is not valid: use lower-case letters, digits, '_' and '-', "
            "starting with a letter"
        )
    return name


def order_splits(names: Iterable[str]) -> list[str]:
    """Distinct ``names``: the default splits first (train, dev, test), then the rest in order."""
    seen = list(dict.fromkeys(names))
    return [s for s in DEFAULT_SPLITS if s in seen] + [s for s in seen if s not in DEFAULT_SPLITS]


def manifest_path(root: str | os.PathLike[str], split: str, kind: str) -> Path:
    """``ROOT/manifests/<split>_<kind>.jsonl.gz`` (whether or not it exists).

    Raises:
        CorpusError: ``kind`` is not one of :data:`MANIFEST_KINDS`.
    """
    if kind not in MANIFEST_KINDS:
        raise CorpusError(f"unknown manifest kind {kind!r}; expected one of {MANIFEST_KINDS}")
    return Path(root) / MANIFESTS_DIR / f"{split}_{kind}.jsonl.gz"


def write_manifest(root: str | os.PathLike[str], split: str, kind: str,
                   items: Iterable[JsonObject]) -> Path:
    """Write one split's manifest (Lhotse JSONL.gz, one ``to_dict()`` per line) atomically.

    The gzip header has no name and mtime 0, so equal items give equal bytes.
    """
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        for item in items:
            gz.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
    return atomic_write_bytes(manifest_path(root, split, kind), buf.getvalue())


def import_report_path(root: str | os.PathLike[str], split: str) -> Path:
    """``ROOT/import_report_<split>.json`` (what an importer imported and skipped)."""
    return Path(root) / f"import_report_{split}.json"


def corpus_version(info: JsonObject, path: Path) -> int:
    """The layout version of a parsed ``corpus.json`` (1 when the field is absent).

    Raises:
        CorpusVersionError: the version is not in :data:`READABLE_VERSIONS`.
    """
    found = info.get("version", 1)
    if isinstance(found, bool) or found not in READABLE_VERSIONS:
        raise CorpusVersionError(path, found, READABLE_VERSIONS)
    return int(found)


def corpus_splits(info: JsonObject) -> list[str]:
    """The splits a parsed ``corpus.json`` lists, in its order.

    Corpora written before the ``splits`` field existed list them as the keys of ``counts``
    (synthetic) or of ``config["splits"]`` (imported); an empty list means none is recorded.

    Raises:
        CorpusError: a split entry is not a valid split name.
    """
    listed = info.get("splits")
    if listed is None:  # written before the field existed: default splits first, as then
        legacy = info.get("counts") or (info.get("config") or {}).get("splits") or {}
        listed = order_splits(legacy) if isinstance(legacy, dict) else legacy
    if not isinstance(listed, list):
        raise CorpusError(f"corpus.json 'splits' must be a list of names, got {listed!r}")
    return [check_split_name(s) for s in listed]


def read_corpus_json(root: str | os.PathLike[str]) -> JsonObject:
    """Parse and check ``ROOT/corpus.json``: a fairstream corpus of a readable version.

    Completeness is not checked (an unfinished build is readable; ``load_corpus`` refuses it).

    Raises:
        CorpusError: the file is missing, not JSON or not a fairstream corpus description.
        CorpusVersionError: its layout version is not readable by this release.
    """
    path = Path(root) / CORPUS_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(info, dict) or info.get("format") != CORPUS_FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise CorpusError(f"{path} is not a {CORPUS_FORMAT} description (format={found!r})")
    corpus_version(info, path)
    return info


def write_corpus_json(root: str | os.PathLike[str], info: JsonObject) -> Path:
    """Write ``ROOT/corpus.json`` atomically with this release's format and version.

    ``info`` supplies every other field; ``format`` and ``version`` are set here and come
    first, so every writer produces the same header.
    """
    body = {k: v for k, v in info.items() if k not in ("format", "version")}
    data = {"format": CORPUS_FORMAT, "version": CORPUS_VERSION, **body}
    return atomic_write_text(Path(root) / CORPUS_JSON, json.dumps(data, indent=2) + "\n")


def write_heldout_slots(root: str | os.PathLike[str],
                        slots: Mapping[str, Sequence[str]]) -> Path:
    """Write ``ROOT/heldout_slots.json``: open slot → the values held out of training.

    The file is ``{"slots": {slot: [value, ...]}}`` with slots and values in the given order.
    """
    data = {"slots": {slot: list(values) for slot, values in slots.items()}}
    return atomic_write_text(Path(root) / HELDOUT_SLOTS_JSON, json.dumps(data, indent=2) + "\n")


def read_heldout_slots(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Open slot → held-out values from ``ROOT/heldout_slots.json``.

    A corpus built without held-out slot values has no such file: the result is empty.

    Raises:
        CorpusError: the file exists but is not JSON of the written form.
    """
    path = Path(root) / HELDOUT_SLOTS_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path} is not valid JSON: {e}") from e
    slots = data.get("slots") if isinstance(data, dict) else None
    if not isinstance(slots, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in slots.values()):
        raise CorpusError(f'{path}: expected {{"slots": {{slot: [value, ...]}}}}')
    return {str(k): list(v) for k, v in slots.items()}
