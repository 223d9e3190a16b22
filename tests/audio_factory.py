"""Small factories for synthetic audio, Kaldi data dirs and cuts used by the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

WORDS = [
    "set", "a", "timer", "for", "twenty", "five", "minutes", "play", "some", "music", "by",
    "the", "beatles", "what", "is", "the", "weather", "in", "boston", "turn", "on", "the",
    "kitchen", "lights", "call", "maria", "add", "milk", "to", "my", "shopping", "list", "don't",
]


def tone(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A few sines plus noise: (N,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    freqs = rng.uniform(100, 3000, size=3)
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 6
    x = x + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def sentence(seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def write_wav(path: Path, seconds: float, sample_rate: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sample_rate, seed), sample_rate, subtype="PCM_16")
    return path


def make_kaldi_dir(root: Path, n: int = 6, *, sample_rate: int = 16000) -> Path:
    """A Kaldi data dir with ``n`` utterances of 3 speakers (absolute wav paths)."""
    data = root / "kaldi"
    data.mkdir(parents=True)
    wav, text, utt2spk = [], [], []
    for i in range(n):
        spk = f"spk{i % 3}"
        utt = f"{spk}-utt{i:03d}"
        p = write_wav(root / "wav" / f"{utt}.wav", 0.8 + 0.1 * i, sample_rate, seed=i)
        wav.append(f"{utt} {p.resolve()}")
        text.append(f"{utt} {sentence(i).upper()}!")
        utt2spk.append(f"{utt} {spk}")
    (data / "wav.scp").write_text("\n".join(wav) + "\n")
    (data / "text").write_text("\n".join(text) + "\n")
    (data / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    (data / "spk2gender").write_text("spk0 f\nspk1 m\nspk2 f\n")
    return data


def make_cuts(root: Path, n: int = 12, seed: int = 0) -> CutSet:
    """``n`` single-supervision cuts (0.5-2.5 s) of synthetic audio with transcripts."""
    rng = np.random.default_rng(seed)
    recs, sups = [], []
    for i in range(n):
        dur = float(np.round(rng.uniform(0.5, 2.5), 2))
        p = write_wav(root / f"u{i:03d}.wav", dur, seed=seed * 1000 + i)
        rec = Recording.from_file(p, recording_id=f"u{i:03d}")
        recs.append(rec)
        sups.append(SupervisionSegment(
            id=f"u{i:03d}", recording_id=rec.id, start=0.0, duration=rec.duration, channel=0,
            text=sentence(seed * 1000 + i), speaker=f"s{i % 4}",
        ))
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    ).trim_to_supervisions(keep_overlapping=False).to_eager()
