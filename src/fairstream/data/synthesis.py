"""Build the synthetic multi-accent corpus: plan, synthesize, mix, write manifests.

The build is a pure function of ``(config, seed)``:

* speakers come from :func:`fairstream.data.speakers.sample_speakers`;
* utterance ``i`` draws its text and its per-utterance variation from a generator seeded with
  ``(seed, i)``, and eSpeak NG is reloaded for every utterance (see
  :mod:`fairstream.data.espeak`), so audio bytes do not depend on the number of worker
  processes or on the order in which they finish;
* FLAC files are written atomically (temporary file + rename), so a file that exists is
  complete. ``resume=True`` keeps existing files and synthesizes only the missing ones;
* manifests, tables and the card are written at the end, and ``corpus.json`` gets
  ``"complete": true`` last: an interrupted build never looks complete.

The directory layout is :mod:`fairstream.data.layout` (described in docs/corpus.md).

Signal chain per utterance (D: samples)::

    eSpeak (22,050 Hz) -> resample to 16 kHz -> silence padding -> + noise at SNR
      -> optional telephone band-pass (300-3400 Hz) -> level (RMS dBFS, peak-limited) -> FLAC 16 bit
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import signal as signal_module
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from scipy import signal

from fairstream._io import atomic_path
from fairstream._io import atomic_write_text as _atomic_write_text
from fairstream.data import layout
from fairstream.data.espeak import ESPEAK_SAMPLE_RATE, EspeakSynthesizer, parse_voice
from fairstream.data.holdout import PhraseMatcher, choose_heldout_slots, draw_requests
from fairstream.data.layout import CorpusVersionError
from fairstream.data.presets import CorpusConfig, TextHoldout
from fairstream.data.speakers import (
    Speaker,
    sample_speakers,
    speakers_frame,
    zip_demographics,
)
from fairstream.data.text import normalize
from fairstream.errors import CorpusError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BuildSummary",
    "UtteranceSpec",
    "build_corpus",
    "make_noise",
    "plan_utterances",
    "render_utterance",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance (picklable; sent to worker processes)."""

    index: int
    utt_id: str
    speaker_id: str
    split: str
    text: str
    domain: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    noise_type: str
    snr_db: float
    telephone: bool
    lead_silence: float
    trail_silence: float
    level_dbfs: float
    synth_seed: int
    noise_seed: int
    rel_path: str


@dataclass(frozen=True)
class BuildSummary:
    """What a build did and how fast.

    Attributes:
        out: corpus directory.
        n_utterances: utterances in the corpus.
        n_synthesized: utterances synthesized by this run.
        n_reused: utterances found on disk (``resume``).
        hours: total audio hours; ``hours_by_split`` per split.
        synthesis_seconds: wall time of the synthesis stage of this run.
        synthesis_cpu_seconds: CPU time the workers spent synthesizing (summed over processes;
            on a shared machine this is the cost, the wall time includes waiting for a core).
        utterances_per_second: ``n_synthesized / synthesis_seconds``.
        real_time_factor: synthesis wall time / seconds of audio synthesized (lower is faster).
        total_seconds: wall time of the whole build (incl. manifests and CMVN).
    """

    out: str
    preset: str
    seed: int
    fingerprint: str
    jobs: int
    n_speakers: int
    n_utterances: int
    n_synthesized: int
    n_reused: int
    hours: float
    hours_by_split: dict[str, float]
    synthesis_seconds: float
    synthesis_cpu_seconds: float
    utterances_per_second: float
    real_time_factor: float
    cmvn_seconds: float
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:  # Any: JSON values of mixed types
        """JSON-ready dictionary."""
        return asdict(self)


# ------------------------------------------------------------------------------------------ plan


def plan_utterances(
    config: CorpusConfig, speakers: Sequence[Speaker], seed: int
) -> list[UtteranceSpec]:
    """Every utterance of the corpus, in a fixed order (the config's splits; speaker by speaker).

    Utterance ``i`` depends only on ``(seed, i)`` and its speaker; with
    ``config.text_holdout`` its text also depends on the training sentences and the held-out
    slot values (:func:`fairstream.data.holdout.draw_requests`).
    """
    per_split = {name: k for name, (_, k) in config.split_sizes().items()}
    utterances = [(spk, k) for spk in speakers for k in range(per_split[spk.split])]
    requests = draw_requests([spk.split for spk, _ in utterances], seed, config.text_holdout,
                             _heldout_slots(config, seed))
    specs: list[UtteranceSpec] = []
    for i, ((spk, k), request) in enumerate(zip(utterances, requests)):
        rng = np.random.default_rng([seed, 201, i])
        rate_jitter = float(rng.uniform(-config.rate_jitter, config.rate_jitter))
        rate = round(spk.rate * (1.0 + rate_jitter))
        pitch_jitter = int(rng.integers(-config.pitch_jitter, config.pitch_jitter + 1))
        pitch = int(np.clip(spk.pitch + pitch_jitter, 0, 100))
        utt_id = f"{spk.speaker_id}-{k:03d}"
        specs.append(UtteranceSpec(
            index=i, utt_id=utt_id, speaker_id=spk.speaker_id, split=spk.split,
            text=request.text, domain=request.domain, voice=spk.voice,
            rate=int(np.clip(rate, 80, 450)), pitch=pitch,
            pitch_range=spk.pitch_range, noise_type=spk.noise_type,
            snr_db=round(spk.snr_db + float(rng.uniform(-config.snr_jitter_db,
                                                        config.snr_jitter_db)), 2),
            telephone=spk.telephone,
            lead_silence=round(float(rng.uniform(*config.lead_silence)), 3),
            trail_silence=round(float(rng.uniform(*config.trail_silence)), 3),
            level_dbfs=round(float(rng.uniform(*config.level_dbfs)), 2),
            synth_seed=int(rng.integers(1, 2**31 - 1)),
            noise_seed=int(rng.integers(0, 2**63 - 1)),
            rel_path=f"audio/{spk.split}/{spk.speaker_id}/{utt_id}.flac",
        ))
    return specs


def _heldout_slots(config: CorpusConfig, seed: int) -> dict[str, tuple[str, ...]]:
    """Open slot → values held out of training (empty without ``config.text_holdout``)."""
    if config.text_holdout is None:
        return {}
    return choose_heldout_slots(config.text_holdout.slot_share, seed)


# Any: the corpus.json entry is JSON data of mixed types
def _text_holdout_info(holdout: TextHoldout, splits: Sequence[str],
                       specs: Sequence[UtteranceSpec],
                       heldout: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The ``corpus.json["text_holdout"]`` entry: the option and what it realized."""
    matcher = PhraseMatcher(v for values in heldout.values() for v in values)
    with_heldout = {s: 0 for s in splits}
    train_texts = {normalize(s.text) for s in specs if s.split == "train"}
    seen_in_train = {s: 0 for s in splits if s != "train"}
    for spec in specs:
        with_heldout[spec.split] += matcher.contains(spec.text)
        if spec.split != "train":
            seen_in_train[spec.split] += normalize(spec.text) in train_texts
    return {
        "disjoint_sentences": holdout.disjoint_sentences,
        "slot_share": holdout.slot_share,
        "heldout_slots_file": layout.HELDOUT_SLOTS_JSON,
        "heldout_values": {slot: len(values) for slot, values in heldout.items()},
        "utterances_with_heldout_values": with_heldout,
        "utterances_whose_sentence_is_in_train": seen_in_train,
    }


# ------------------------------------------------------------------------------------- signals


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / rms).astype(np.float32) if rms > 0 else x.astype(np.float32)


def _colored(
    rng: np.random.Generator, n: int, exponent: float, white: np.ndarray | None = None
) -> np.ndarray:
    """Noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown). Returns (n,) unit RMS.

    ``white`` (optional) is the excitation to shape instead of fresh white noise.
    """
    if white is None:
        white = rng.standard_normal(sp_fft.next_fast_len(n, real=True))
    if exponent == 0:
        return _unit_rms(white[:n])
    m = len(white)
    spec = sp_fft.rfft(white)
    f = np.fft.rfftfreq(m)
    f[0] = f[1] if m > 1 else 1.0
    spec = spec / f ** (exponent / 2.0)
    spec[0] = 0.0
    return _unit_rms(sp_fft.irfft(spec, m)[:n])


@lru_cache(maxsize=8)
def _resample_filter(up: int, down: int) -> np.ndarray:
    """The FIR filter scipy's resample_poly designs by default (computed once)."""
    max_rate = max(up, down)
    taps: np.ndarray = signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    return taps


@lru_cache(maxsize=8)
def _sos(kind: str, sample_rate: int) -> np.ndarray:
    nyq = sample_rate / 2.0
    if kind == "telephone":
        order, low, high = 4, 300.0, 3400.0
    elif kind == "speech_band":
        order, low, high = 2, 150.0, 4000.0
    else:
        raise AssertionError(kind)
    band = [low / nyq, min(high, 0.95 * nyq) / nyq]
    sos: np.ndarray = signal.butter(order, band, btype="bandpass", output="sos")
    return sos


def make_noise(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of a given type.

    Args:
        kind: ``white``, ``pink``, ``brown``, ``babble`` (several syllable-rate modulated
            speech-band noise "talkers") or ``hum`` (60 Hz mains hum with harmonics + hiss).
        n: number of samples.
        sample_rate: Hz.
        rng: generator (the only source of randomness).

    Returns:
        (n,) float32 with RMS 1.
    """
    if n <= 0:
        return np.zeros(0, np.float32)
    if kind == "white":
        return _colored(rng, n, 0.0)
    if kind == "pink":
        return _colored(rng, n, 1.0)
    if kind == "brown":
        return _colored(rng, n, 2.0)
    if kind == "babble":
        # several "talkers": white noise with independent 8 Hz syllable-like envelopes,
        # then shaped once to a pink, speech-band spectrum
        talkers = int(rng.integers(4, 8))
        m = sp_fft.next_fast_len(n, real=True)
        step = sample_rate // 8
        t_ctrl = np.arange(0, m + step, step)
        grid = np.arange(m)
        excitation = np.zeros(m, np.float64)
        for _ in range(talkers):
            env = np.interp(grid, t_ctrl, rng.random(len(t_ctrl))) ** 2
            excitation += env * rng.standard_normal(m)
        babble = _colored(rng, n, 1.0, excitation)
        return _unit_rms(signal.sosfilt(_sos("speech_band", sample_rate), babble))
    if kind == "hum":
        t = np.arange(n) / sample_rate
        hum = np.zeros(n, np.float64)
        for k in range(1, 6):
            hum += np.sin(2 * np.pi * 60.0 * k * t + rng.uniform(0, 2 * np.pi)) / k
        return _unit_rms(_unit_rms(hum) + 0.1 * rng.standard_normal(n))
    raise CorpusError(f"unknown noise type {kind!r}; expected white, pink, brown, babble or hum")


def render_utterance(spec: UtteranceSpec, synth: EspeakSynthesizer, sample_rate: int) -> np.ndarray:
    """Synthesize and mix one utterance.

    Returns:
        (N,) float32 samples in [-1, 1] at ``sample_rate``.
    """
    speech = synth.synthesize(spec.text, voice=spec.voice, rate=spec.rate, pitch=spec.pitch,
                              pitch_range=spec.pitch_range, seed=spec.synth_seed)
    if sample_rate != ESPEAK_SAMPLE_RATE:
        g = math.gcd(sample_rate, ESPEAK_SAMPLE_RATE)
        up, down = sample_rate // g, ESPEAK_SAMPLE_RATE // g
        resampled = signal.resample_poly(speech, up, down, window=_resample_filter(up, down))
        speech = resampled.astype(np.float32)
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    if speech_power <= 0:
        raise CorpusError(f"utterance {spec.utt_id}: eSpeak returned silence for {spec.text!r}")
    lead, trail = int(spec.lead_silence * sample_rate), int(spec.trail_silence * sample_rate)
    clean = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    rng = np.random.default_rng(spec.noise_seed)
    noise = make_noise(spec.noise_type, len(clean), sample_rate, rng)
    noise_gain = math.sqrt(speech_power / 10.0 ** (spec.snr_db / 10.0))
    mix = clean.astype(np.float64) + noise_gain * noise
    if spec.telephone:
        mix = signal.sosfilt(_sos("telephone", sample_rate), mix)
    rms = float(np.sqrt(np.mean(np.square(mix))))
    mix *= 10.0 ** (spec.level_dbfs / 20.0) / max(rms, 1e-9)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.98:
        mix *= 0.98 / peak
    return mix.astype(np.float32)


def _write_flac_atomic(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, sample_rate, format="FLAC", subtype="PCM_16")


# ------------------------------------------------------------------------------------ workers

class _WorkerState(TypedDict, total=False):
    root: Path
    sample_rate: int
    synth: EspeakSynthesizer


_WORKER: _WorkerState = {}
_T = TypeVar("_T")
_R = TypeVar("_R")


def _init_worker(root: str, sample_rate: int, in_pool: bool = False) -> None:
    if in_pool:  # Ctrl-C reaches the whole process group: let the parent stop the pool
        signal_module.signal(signal_module.SIGINT, signal_module.SIG_IGN)
    _WORKER["root"] = Path(root)
    _WORKER["sample_rate"] = sample_rate
    _WORKER["synth"] = EspeakSynthesizer()


def _synthesize_one(spec: UtteranceSpec) -> tuple[int, int, float]:
    cpu = time.process_time()
    try:
        samples = render_utterance(spec, _WORKER["synth"], _WORKER["sample_rate"])
    except CorpusError as e:
        raise CorpusError(f"utterance {spec.utt_id} ({spec.rel_path}): {e}") from e
    _write_flac_atomic(_WORKER["root"] / spec.rel_path, samples, _WORKER["sample_rate"])
    return spec.index, len(samples), time.process_time() - cpu


def _fbank_of_file(path: str) -> np.ndarray:
    from fairstream.features.fbank import compute_fbank

    samples, sr = sf.read(path, dtype="float32")
    return compute_fbank(samples, sample_rate=sr)


class _Executor:
    """Runs a function over items in-process (jobs=1) or in a process pool (forkserver)."""

    def __init__(self, jobs: int, root: Path, sample_rate: int) -> None:
        self.jobs = jobs
        self._pool: Pool | None = None
        if jobs > 1:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = ctx.Pool(jobs, initializer=_init_worker,
                                  initargs=(str(root), sample_rate, True))
        else:
            _init_worker(str(root), sample_rate)

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T], *, ordered: bool) -> Iterator[_R]:
        if self._pool is None:
            return map(fn, items)
        chunk = max(1, min(16, len(items) // (self.jobs * 8) or 1))
        if ordered:
            return self._pool.imap(fn, items, chunksize=chunk)
        return self._pool.imap_unordered(fn, items, chunksize=chunk)

    def close(self, *, terminate: bool = False) -> None:
        if self._pool is not None:
            if terminate:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None


# ----------------------------------------------------------------------------------- writing


def _write_manifests(out: Path, splits: Sequence[str], specs: Sequence[UtteranceSpec],
                     num_samples: dict[int, int], speakers: dict[str, Speaker],
                     sample_rate: int) -> None:
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    for split in splits:
        recs, sups, cuts = [], [], []
        for spec in (s for s in specs if s.split == split):
            n = num_samples[spec.index]
            duration = n / sample_rate
            spk = speakers[spec.speaker_id]
            source = AudioSource(type="file", channels=[0], source=spec.rel_path)
            rec = Recording(id=spec.utt_id, sources=[source], sampling_rate=sample_rate,
                            num_samples=n, duration=duration)
            sup = SupervisionSegment(
                id=spec.utt_id, recording_id=spec.utt_id, start=0.0, duration=duration, channel=0,
                text=spec.text, language="en", speaker=spec.speaker_id, gender=spk.gender,
                custom={
                    "accent": spk.accent, "gender": spk.gender, "age_band": spk.age_band,
                    "lat": spk.lat, "lon": spk.lon, "zip": spk.zip, "state": spk.state,
                    "split": split, "voice": spk.voice,
                    "noise_type": spk.noise_type, "snr_db": spec.snr_db, "telephone": spk.telephone,
                    "domain": spec.domain,
                },
            )
            cut = MonoCut(id=spec.utt_id, start=0.0, duration=duration, channel=0, recording=rec,
                          supervisions=[sup])
            recs.append(rec.to_dict())
            sups.append(sup.to_dict())
            cuts.append(cut.to_dict())
        for kind, items in zip(layout.MANIFEST_KINDS, (recs, sups, cuts)):
            layout.write_manifest(out, split, kind, items)


def _frame_to_csv(path: Path, df: pd.DataFrame) -> None:
    _atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


# --------------------------------------------------------------------------------- out dir


def _read_corpus_json(out: Path) -> dict[str, Any]:  # Any: JSON data
    try:
        return layout.read_corpus_json(out)
    except CorpusVersionError:
        raise
    except CorpusError as e:
        raise CorpusError(f"{e}; remove {out} or choose another --out") from e


def _prepare_out_dir(
    out: Path, header: dict[str, Any], resume: bool  # Any: the corpus.json header (JSON data)
) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output {out} exists and is not a directory")
    if (out / layout.CORPUS_JSON).exists():
        existing = _read_corpus_json(out)
        added = _added_splits(existing, header)
        if added and resume:
            logger.info("extending the corpus in %s with the split(s) %s; the other splits are "
                        "kept as they are", out, ", ".join(added))
        elif existing.get("fingerprint") != header["fingerprint"]:
            raise CorpusError(
                f"output directory {out} already holds a different corpus (preset "
                f"{existing.get('preset')!r}, seed {existing.get('seed')!r}, fingerprint "
                f"{str(existing.get('fingerprint'))[:12]}) than the one requested (preset "
                f"{header['preset']!r}, seed {header['seed']}, fingerprint "
                f"{header['fingerprint'][:12]}); "
                f"choose another --out or delete it"
            )
        if not resume:
            state = "a complete" if existing.get("complete") else "an unfinished"
            raise CorpusError(f"output directory {out} already holds {state} build of this corpus; "
                              f"pass --resume to continue it or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise CorpusError(f"output directory {out} is not empty and holds no corpus.json; "
                          f"choose an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    layout.write_corpus_json(out, {**header, "complete": False})
    for stale in out.glob(f"{layout.AUDIO_DIR}/*/*/*.tmp"):
        stale.unlink()


def _added_splits(
    existing: dict[str, Any], header: dict[str, Any]  # Any: corpus.json headers (JSON data)
) -> list[str]:
    """The extra splits ``header`` adds to the corpus ``existing`` describes, when it is that
    corpus with more extra splits appended (same preset, seed and every other setting); else [].

    Extra speakers are drawn after all others and every split plans its utterances on its own,
    so such a corpus keeps the existing splits byte for byte: a build with ``resume`` extends it.
    """
    old = dict(existing.get("config") or {})
    new = json.loads(json.dumps(header["config"]))  # tuples → lists, as read from JSON
    old_extra, new_extra = old.pop("extra_splits", []), new.pop("extra_splits", [])
    if (existing.get("seed") != header["seed"] or old != new
            or len(new_extra) <= len(old_extra) or new_extra[:len(old_extra)] != old_extra):
        return []
    return [str(x["name"]) for x in new_extra[len(old_extra):]]


# ----------------------------------------------------------------------------------- card


def _shares(df: pd.DataFrame, split: str, accents: Sequence[str]) -> dict[str, float]:
    sub = df[df["split"] == split]
    n = max(len(sub), 1)
    return {a: round(float((sub["accent"] == a).sum()) / n, 4) for a in accents}


_CARD_WHAT_IS_SYNTHETIC = """\
## What is synthetic

**Everything.** No recording of a person is in this corpus.

- Speech: eSpeak NG formant synthesis (the `espeakng-loader` build), one English accent voice and
  one voice variant per speaker, with per-speaker pitch, pitch range and speaking rate.
- Text: voice-assistant requests from templates (timers, alarms, music, weather, shopping, smart
  home, calls and messages, calendar, questions); numbers written as words.
- Channel: additive noise (white, pink, brown, babble-like, 60 Hz hum) at a per-speaker SNR, and
  for some speakers a telephone band-limit (300-3400 Hz); 16 kHz, 16-bit FLAC.
- Speakers: gender follows the voice variant; age band is drawn at random and only nudges rate
  and pitch range. Home zip codes are real US zip codes (`zipcodes` package) drawn from states
  tied to the accent (with a share of speakers living anywhere); coordinates are the zip
  centroid plus about 1 km of jitter.
- `zip_demographics.csv` is **synthetic**: census-style majority attributes drawn per zip from
  a regional profile. They correlate with accent through geography; they are not census data
  and say nothing about real places."""

_CARD_FILES = """\
`manifests/<split>_{recordings,supervisions,cuts}.jsonl.gz` (Lhotse; audio paths are relative
to the corpus directory, `fairstream.data.corpus.load_corpus` resolves them), `speakers.csv`,
`zip_demographics.csv`, `cmvn.json` (global CMVN of 80-dim fbank on train), `audio/`."""


# Any: the corpus.json header is JSON data of mixed types (plus the config under "_config")
def _card(header: dict[str, Any], spk_df: pd.DataFrame, utt_counts: dict[tuple[str, str], int],
          hours: dict[str, float]) -> str:
    cfg: CorpusConfig = header["_config"]
    splits = cfg.splits
    planted = header["planted"]
    accents = list(cfg.speakers.accents)
    lines = [
        f"# Corpus card: fairstream synthetic multi-accent corpus (preset `{header['preset']}`)",
        "",
        (f"Seed {header['seed']}, fingerprint `{header['fingerprint'][:16]}`, "
         f"format version {layout.CORPUS_VERSION}."),
        (f"Rebuild: `fairstream corpus build --preset {header['preset']} --seed {header['seed']} "
         "--out DIR` (same seed → identical audio bytes and manifests)."),
        "",
        *_CARD_WHAT_IS_SYNTHETIC.splitlines(),
        "",
        "## Planted disparity",
        "",
        ("Under-represented accents (the planted cohorts): "
         f"**{', '.join(planted['under_represented_accents'])}**."),
        ("Each has a configured share of "
         f"{cfg.speakers.under_represented_train_share:.0%} of the training "
         "speakers, while dev and test keep the normal shares. "
         "A model trained on `train` should be"),
        "measurably worse on these accents; cohort-discovery methods should find them.",
        "",
        "| accent | label | train share | test share |",
        "|---|---|---:|---:|",
    ]
    from fairstream.data.speakers import ACCENT_LABELS

    for a in accents:
        mark = " (planted)" if a in planted["under_represented_accents"] else ""
        lines.append(f"| {a}{mark} | {ACCENT_LABELS.get(a, a)} | {planted['train_share'][a]:.1%} | "
                     f"{planted['test_share'][a]:.1%} |")
    lines += ["", "## Counts", "",
              "Hours of audio: " + ", ".join(f"{s} {hours[s]:.2f} h" for s in splits)
              + f" (total {sum(hours.values()):.2f} h).", "",
              "Speakers (utterances) per accent and split:", "",
              "| accent | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for a in accents:
        cells = []
        for s in splits:
            n_spk = int(((spk_df["accent"] == a) & (spk_df["split"] == s)).sum())
            cells.append(f"{n_spk} ({utt_counts.get((a, s), 0)})")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    for column in ("gender", "age_band", "noise_type", "telephone"):
        values = sorted(spk_df[column].astype(str).unique())
        lines += ["", f"Speakers per {column} and split:", "",
                  f"| {column} | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        for v in values:
            cells = [str(int(((spk_df[column].astype(str) == v) & (spk_df["split"] == s)).sum()))
                     for s in splits]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if "text_holdout" in header:
        lines += ["", *_card_text_holdout(header["text_holdout"], header["_heldout"])]
    lines += ["", "## Files", "", *_CARD_FILES.splitlines()]
    if "text_holdout" in header:
        lines.append(f"`{layout.HELDOUT_SLOTS_JSON}`: the slot values held out of training.")
    lines.append("")
    return "\n".join(lines)


# Any: the corpus.json "text_holdout" entry (JSON data)
def _card_text_holdout(info: dict[str, Any], heldout: dict[str, tuple[str, ...]]) -> list[str]:
    disjoint = ("No dev/test sentence occurs among the training sentences. "
                if info["disjoint_sentences"] else "")
    with_heldout = info["utterances_with_heldout_values"]
    lines = [
        "## Clean test text",
        "",
        f"{disjoint}{info['slot_share']:.0%} of the values of each open slot are held out of "
        "training: no training sentence contains one, the other splits draw from all values.",
        "Utterances with a held-out value: "
        + ", ".join(f"{s} {n}" for s, n in with_heldout.items()) + ".",
        "",
        "| slot | held-out values |",
        "|---|---|",
    ]
    lines += [f"| {slot} | {', '.join(values)} |" for slot, values in heldout.items()]
    return lines


# ------------------------------------------------------------------------------------- build


def build_corpus(
    config: CorpusConfig,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    jobs: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> BuildSummary:
    """Synthesize a corpus into ``out``.

    Args:
        config: a preset from :mod:`fairstream.data.presets` (or a modified copy).
        out: output directory (new or empty; or a previous build of the same corpus with
            ``resume``, or with ``resume`` a complete build of this corpus without some of its
            extra splits, which are then added: the other splits are kept byte for byte).
        seed: corpus seed.
        jobs: worker processes for synthesis and CMVN (1 = in this process). Workers start
            with ``forkserver`` (``spawn`` where unavailable), so a script that calls this with
            ``jobs > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        resume: continue an unfinished build; finished audio files are kept, not re-synthesized.
        progress: show tqdm progress bars.

    Returns:
        A :class:`BuildSummary` (counts, hours, utterances per second).

    Raises:
        CorpusError: ``out`` holds a different corpus or an unfinished one without ``resume``,
            an unknown voice, or a synthesis failure (the message names the utterance).
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if jobs < 1:
        raise CorpusError(f"jobs must be >= 1, got {jobs}")
    root = Path(out)
    fingerprint = config.fingerprint(seed)
    speakers = sample_speakers(config.speakers, seed,
                               [(x.name, x.speakers) for x in config.extra_splits])
    for voice in sorted({s.voice for s in speakers}):
        parse_voice(voice)  # unknown accent/variant -> CorpusError naming it, before any output
    specs = plan_utterances(config, speakers, seed)
    heldout = _heldout_slots(config, seed)
    spk_df = speakers_frame(speakers)
    accents = list(config.speakers.accents)
    header: dict[str, Any] = {  # Any: JSON data of mixed types
        "preset": config.preset,
        "seed": int(seed),
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "sample_rate": config.sample_rate,
        "splits": list(config.splits),
        "planted": {
            "under_represented_accents": list(config.speakers.under_represented),
            "configured_train_share": round(config.speakers.under_represented_train_share, 4),
            "train_share": _shares(spk_df, "train", accents),
            "test_share": _shares(spk_df, "test", accents),
            "dev_share": _shares(spk_df, "dev", accents),
        },
    }
    if config.text_holdout is not None:  # absent otherwise: corpus.json stays as it was
        header["text_holdout"] = _text_holdout_info(config.text_holdout, config.splits, specs,
                                                    heldout)
    _prepare_out_dir(root, header, resume)

    num_samples: dict[int, int] = {}
    todo: list[UtteranceSpec] = []
    for spec in specs:
        path = root / spec.rel_path
        if resume and path.exists():
            try:
                num_samples[spec.index] = sf.info(str(path)).frames
                continue
            except RuntimeError:
                logger.warning("re-synthesizing unreadable %s", path)
        todo.append(spec)
    n_reused = len(num_samples)
    logger.info("%d utterances to synthesize, %d reused", len(todo), n_reused)

    executor = _Executor(jobs, root, config.sample_rate)
    try:
        t0 = time.perf_counter()
        synthesized_samples = 0
        synthesis_cpu = 0.0
        with tqdm(total=len(todo), disable=not progress, unit="utt", desc="synthesize") as bar:
            for index, n, cpu in executor.map(_synthesize_one, todo, ordered=False):
                num_samples[index] = n
                synthesized_samples += n
                synthesis_cpu += cpu
                bar.update(1)
        synthesis_seconds = time.perf_counter() - t0

        # global CMVN on (an evenly spaced subset of) train
        t1 = time.perf_counter()
        train = [s for s in specs if s.split == "train"]
        n_pick = min(len(train), config.cmvn_max_utterances)
        pick = np.unique(np.linspace(0, len(train) - 1, n_pick).round().astype(int))
        paths = [str(root / train[i].rel_path) for i in pick]
        from fairstream.features.fbank import compute_cmvn

        feats = executor.map(_fbank_of_file, paths, ordered=True)
        cmvn = compute_cmvn(tqdm(feats, total=len(paths), disable=not progress, unit="utt",
                                 desc="cmvn"))
        cmvn_seconds = time.perf_counter() - t1
    except BaseException:
        executor.close(terminate=True)
        raise
    executor.close()

    by_id = {s.speaker_id: s for s in speakers}
    _write_manifests(root, config.splits, specs, num_samples, by_id, config.sample_rate)
    cmvn.save(root / layout.CMVN_JSON)
    _frame_to_csv(root / layout.SPEAKERS_CSV, spk_df)
    _frame_to_csv(root / layout.ZIP_DEMOGRAPHICS_CSV, zip_demographics(speakers, seed))
    if config.text_holdout is not None:
        layout.write_heldout_slots(root, heldout)
    hours = {s: 0.0 for s in config.splits}
    utt_counts: dict[tuple[str, str], int] = {}
    for spec in specs:
        hours[spec.split] += num_samples[spec.index] / config.sample_rate / 3600.0
        key = (by_id[spec.speaker_id].accent, spec.split)
        utt_counts[key] = utt_counts.get(key, 0) + 1
    card = _card({**header, "_config": config, "_heldout": heldout}, spk_df, utt_counts, hours)
    _atomic_write_text(root / layout.CORPUS_CARD, card)
    counts = {
        s: {"speakers": int((spk_df["split"] == s).sum()),
            "utterances": sum(1 for x in specs if x.split == s),
            "hours": round(hours[s], 4)}
        for s in config.splits
    }
    layout.write_corpus_json(root, {**header, "counts": counts, "complete": True})

    synthesized_seconds_audio = synthesized_samples / config.sample_rate
    summary = BuildSummary(
        out=str(root), preset=config.preset, seed=int(seed), fingerprint=fingerprint, jobs=jobs,
        n_speakers=len(speakers), n_utterances=len(specs), n_synthesized=len(todo),
        n_reused=n_reused, hours=round(sum(hours.values()), 4),
        hours_by_split={k: round(v, 4) for k, v in hours.items()},
        synthesis_seconds=round(synthesis_seconds, 3),
        synthesis_cpu_seconds=round(synthesis_cpu, 3),
        utterances_per_second=(round(len(todo) / synthesis_seconds, 2)
                               if todo and synthesis_seconds > 0 else 0.0),
        real_time_factor=(round(synthesis_seconds / synthesized_seconds_audio, 5)
                          if synthesized_seconds_audio else 0.0),
        cmvn_seconds=round(cmvn_seconds, 3), total_seconds=round(time.perf_counter() - t_start, 3),
    )
    logger.info("built %s: %s", root, summary)
    return summary
