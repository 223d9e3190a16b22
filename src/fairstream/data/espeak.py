"""A small ctypes binding to the eSpeak NG library bundled by ``espeakng-loader``.

eSpeak NG keeps global state inside the shared library (wave generator phase, pitch flutter
index, random generators). Two consequences shape this module:

* **One thread per process.** Call :class:`EspeakSynthesizer` from a single thread; run
  several processes to synthesize in parallel.
* **Reproducibility.** Some of that state is held in C ``static`` variables that no API resets,
  so the same request synthesized twice in one loaded library gives slightly different audio.
  To make every utterance a pure function of its request, the synthesizer loads a *private copy*
  of the library for each utterance, seeds eSpeak's and libc's random generators, synthesizes,
  and unloads it again (about 5 ms per utterance). The same request then yields bit-identical
  samples in any process, in any order.

Voices are named like ``en-gb-scotland`` or ``en-gb-scotland+f3``: an accent (a language code or
voice file name from ``espeak-ng-data/lang``) and an optional variant from
``espeak-ng-data/voices/!v``. Unknown accents or variants raise :class:`CorpusError`.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from fairstream.errors import CorpusError

__all__ = [
    "ESPEAK_SAMPLE_RATE",
    "EspeakSynthesizer",
    "VoiceSpec",
    "available_accents",
    "available_variants",
    "parse_voice",
    "synthesize",
]

logger = logging.getLogger(__name__)

ESPEAK_SAMPLE_RATE = 22050
"""eSpeak NG always synthesizes at 22,050 Hz."""

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_EE_OK = 0

_RATE_RANGE = (80, 450)  # words per minute accepted by eSpeak

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class VoiceSpec:
    """A parsed voice name.

    Attributes:
        accent: the accent as given, lower-cased (``"en-gb-scotland"``).
        identifier: eSpeak's voice file identifier (``"gmw/en-GB-scotland"``).
        variant: variant file name in ``voices/!v`` (``"f3"``) or ``None``.
    """

    accent: str
    identifier: str
    variant: str | None

    @property
    def espeak_name(self) -> str:
        """The string handed to ``espeak_SetVoiceByName``."""
        return self.identifier if self.variant is None else f"{self.identifier}+{self.variant}"


def _default_paths() -> tuple[Path, Path]:
    import espeakng_loader

    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


@lru_cache(maxsize=4)
def _accent_index(data_path: str) -> Mapping[str, str]:
    """Map lower-case language codes and voice file names to eSpeak voice identifiers."""
    lang_dir = Path(data_path) / "lang"
    index: dict[str, str] = {}
    by_language: dict[str, tuple[int, str]] = {}
    for path in sorted(p for p in lang_dir.rglob("*") if p.is_file()):
        identifier = path.relative_to(lang_dir).as_posix()
        index.setdefault(path.name.lower(), identifier)
        index.setdefault(identifier.lower(), identifier)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "language":
                priority = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 5
                code = parts[1].lower()
                best = by_language.get(code)
                if best is None or priority < best[0]:
                    by_language[code] = (priority, identifier)
                break  # only the voice's own (first) language names it
    for code, (_, identifier) in by_language.items():
        index.setdefault(code, identifier)
    return index


@lru_cache(maxsize=4)
def _variant_names(data_path: str) -> frozenset[str]:
    vdir = Path(data_path) / "voices" / "!v"
    if not vdir.is_dir():
        return frozenset()
    return frozenset(p.name for p in vdir.iterdir() if p.is_file())


def available_accents(data_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Accent names (language codes and voice file names) this eSpeak data directory knows."""
    dp = str(data_path) if data_path is not None else str(_default_paths()[1])
    return sorted(_accent_index(dp))


def available_variants(data_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Voice variant names (files in ``voices/!v``), e.g. ``m3``, ``f2``, ``Andrea``."""
    dp = str(data_path) if data_path is not None else str(_default_paths()[1])
    return sorted(_variant_names(dp))


def parse_voice(voice: str, data_path: str | os.PathLike[str] | None = None) -> VoiceSpec:
    """Resolve ``"accent[+variant]"`` against the eSpeak data directory.

    Raises:
        CorpusError: the accent or the variant does not exist (the message names it).
    """
    dp = str(data_path) if data_path is not None else str(_default_paths()[1])
    if not isinstance(voice, str) or not voice.strip():
        raise CorpusError(f"unknown eSpeak voice {voice!r}: expected 'accent' or 'accent+variant'")
    accent, _, variant = voice.strip().partition("+")
    identifier = _accent_index(dp).get(accent.lower())
    if identifier is None:
        raise CorpusError(
            f"unknown eSpeak voice {voice!r}: no accent {accent!r} in {dp}/lang "
            f"(English ones: {', '.join(a for a in available_accents(dp) if a.startswith('en'))})"
        )
    if variant:
        if variant not in _variant_names(dp):
            raise CorpusError(
                f"unknown eSpeak voice {voice!r}: no variant {variant!r} in {dp}/voices/!v"
            )
        return VoiceSpec(accent=accent.lower(), identifier=identifier, variant=variant)
    return VoiceSpec(accent=accent.lower(), identifier=identifier, variant=None)


class _PrivateLibrary:
    """A per-process private copy of the shared library.

    On Linux the copy lives in an anonymous in-memory file (``memfd``) that disappears with the
    process, whatever way it ends; elsewhere it is a temporary file removed at exit.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _copies: ClassVar[dict[tuple[int, str], str]] = {}
    _fds: ClassVar[list[int]] = []

    @classmethod
    def path_for(cls, library_path: Path) -> str:
        key = (os.getpid(), str(library_path))
        with cls._lock:
            copy = cls._copies.get(key)
            if copy is None:
                copy = cls._make_copy(library_path)
                cls._copies[key] = copy
            return copy

    @classmethod
    def _make_copy(cls, library_path: Path) -> str:
        data = library_path.read_bytes()
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            fd = os.memfd_create("fairstream-espeak")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            cls._fds.append(fd)
            return f"/proc/self/fd/{fd}"
        tmpdir = Path(tempfile.mkdtemp(prefix="fairstream-espeak-"))
        copy = tmpdir / library_path.name
        copy.write_bytes(data)
        atexit.register(shutil.rmtree, tmpdir, True)
        return str(copy)


class EspeakSynthesizer:
    """Text → float32 samples at 22,050 Hz with a given voice, rate and pitch.

    Example::

        synth = EspeakSynthesizer()
        samples = synth.synthesize("set a timer for ten minutes", voice="en-gb-scotland+f3",
                                   rate=160, pitch=45, seed=7)

    Use one instance from one thread only (eSpeak NG has global state); parallelize with
    processes.
    """

    def __init__(
        self,
        *,
        library_path: str | os.PathLike[str] | None = None,
        data_path: str | os.PathLike[str] | None = None,
    ) -> None:
        default_lib, default_data = _default_paths()
        self.library_path: Path = Path(library_path) if library_path is not None else default_lib
        self.data_path: Path = Path(data_path) if data_path is not None else default_data
        if not self.library_path.is_file():
            raise CorpusError(f"eSpeak NG library {self.library_path} does not exist")
        if not (self.data_path / "phontab").is_file():
            raise CorpusError(f"eSpeak NG data directory {self.data_path} has no phontab")
        self._owner_thread = threading.get_ident()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)
        self._libc = ctypes.CDLL(None)

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (always 22,050)."""
        return ESPEAK_SAMPLE_RATE

    def _on_audio(self, wav: ctypes._Pointer, n: int, events: int | None) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int = 0,
    ) -> np.ndarray:
        """Synthesize one utterance.

        Args:
            text: the words to speak (UTF-8; numbers should already be written as words).
            voice: ``"accent"`` or ``"accent+variant"``, e.g. ``"en-029+m3"``.
            rate: speaking rate in words per minute (80–450).
            pitch: base pitch 0–100 (50 = the voice's default).
            pitch_range: pitch variation 0–100 (50 = default; 0 is monotone).
            seed: seeds eSpeak's noise generators; same arguments → identical samples.

        Returns:
            (N,) float32 samples in [-1, 1] at 22,050 Hz.

        Raises:
            CorpusError: unknown voice, a parameter out of range, empty text, or an eSpeak failure.
        """
        if threading.get_ident() != self._owner_thread:
            raise CorpusError("EspeakSynthesizer used from a second thread; use one per process")
        if not text or not text.strip():
            raise CorpusError(f"cannot synthesize empty text {text!r}")
        spec = parse_voice(voice, self.data_path)
        if not _RATE_RANGE[0] <= rate <= _RATE_RANGE[1]:
            raise CorpusError(
                f"speaking rate {rate} wpm is outside {_RATE_RANGE[0]}..{_RATE_RANGE[1]}"
            )
        for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
            if not 0 <= value <= 100:
                raise CorpusError(f"{name} {value} is outside 0..100")
        lib = ctypes.CDLL(_PrivateLibrary.path_for(self.library_path), mode=ctypes.RTLD_LOCAL)
        handle = lib._handle
        self._chunks = []
        initialized = False
        try:
            lib.espeak_Initialize.argtypes = [
                ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
            ]
            lib.espeak_Initialize.restype = ctypes.c_int
            sr = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_DONT_EXIT
            )
            if sr != ESPEAK_SAMPLE_RATE:
                raise CorpusError(f"espeak_Initialize({self.data_path}) failed (returned {sr})")
            initialized = True
            lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            status = lib.espeak_SetVoiceByName(spec.espeak_name.encode())
            if status != _EE_OK:
                raise CorpusError(f"unknown eSpeak voice {voice!r} "
                                  f"(espeak_SetVoiceByName returned {status})")
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                                 (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100)):
                lib.espeak_SetParameter(param, int(value), 0)
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
            self._libc.srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
            data = text.encode("utf-8") + b"\0"
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != _EE_OK:
                raise CorpusError(f"espeak_Synth failed with status {status} for text {text!r}")
            lib.espeak_Synchronize()
        finally:
            if initialized:
                lib.espeak_Terminate()
            del lib
            _ctypes.dlclose(handle)
        if not self._chunks:
            raise CorpusError(f"eSpeak produced no audio for {text!r} with voice {voice!r}")
        samples = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        self._chunks = []
        return samples


_DEFAULT: dict[int, EspeakSynthesizer] = {}


def synthesize(text: str, *, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               seed: int = 0) -> np.ndarray:
    """Synthesize with a per-process, per-thread default :class:`EspeakSynthesizer`.

    Returns:
        (N,) float32 samples at 22,050 Hz.
    """
    key = threading.get_ident()
    synth = _DEFAULT.get(key)
    if synth is None:
        synth = _DEFAULT[key] = EspeakSynthesizer()
    return synth.synthesize(text, voice=voice, rate=rate, pitch=pitch, pitch_range=pitch_range,
                            seed=seed)
