"""A tiny speech corpus (eSpeak, corpus-directory layout) and a tiny trained transducer.

Both are built once per test session (cached in module globals) and shared by the training,
decoding and CLI tests.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from fairstream.data.espeak import synthesize
from fairstream.features.fbank import compute_cmvn, compute_fbank, resample

SENTENCES = [
    "turn on the lights", "play some music", "call maria", "what is the weather",
    "set a timer", "turn off the lights", "add milk", "stop the music",
]
SPEAKERS = [  # speaker_id, split, accent, voice, gender, age_band, lat, lon, zip, state
    ("s01", "train", "en-us", "en-us", "female", "18-29", 42.36, -71.06, "02108", "MA"),
    ("s02", "train", "en-gb", "en-gb", "male", "30-44", 40.71, -74.01, "10001", "NY"),
    ("s03", "train", "en-us", "en-us+m3", "male", "45-59", 34.05, -118.24, "90012", "CA"),
    ("s04", "dev", "en-us", "en-us+f2", "female", "60+", 41.88, -87.63, "60601", "IL"),
    ("s05", "test", "en-us", "en-us", "female", "30-44", 29.76, -95.37, "77002", "TX"),
    ("s06", "test", "en-gb", "en-gb+m1", "male", "18-29", 47.61, -122.33, "98101", "WA"),
]
COLUMNS = ["speaker_id", "split", "accent", "voice", "gender", "age_band", "lat", "lon", "zip",
           "state"]

_CACHE: dict[str, Path] = {}


def build_tiny_corpus(root: Path) -> Path:
    """Write a corpus directory with train (24 utts), dev (4) and test (8) splits."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifests").mkdir(exist_ok=True)
    all_feats = []
    rows: list[dict[str, Any]] = []
    for spk, split, accent, voice, gender, age, lat, lon, zipc, state in SPEAKERS:
        rows.append(dict(zip(COLUMNS, [spk, split, accent, voice, gender, age, lat, lon, zipc,
                                       state])))
    by_split: dict[str, tuple[list, list]] = {}
    for row in rows:
        spk, split = row["speaker_id"], row["split"]
        recs, sups = by_split.setdefault(split, ([], []))
        texts = SENTENCES if split != "dev" else SENTENCES[:4]
        for k, text in enumerate(texts):
            utt = f"{spk}-u{k:02d}"
            audio = resample(synthesize(text, voice=row["voice"], rate=170 + 5 * k), 22050, 16000)
            path = root / "audio" / split / spk / f"{utt}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, 16000, format="FLAC")
            rec = Recording.from_file(str(path), recording_id=utt)
            recs.append(rec)
            custom = {k2: row[k2] for k2 in ("accent", "gender", "age_band", "lat", "lon", "zip")}
            sups.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0,
                                           duration=rec.duration, channel=0, text=text,
                                           speaker=spk, language="en", custom=custom))
            if split == "train":
                all_feats.append(compute_fbank(audio, 16000))
    counts = {}
    for split, (recs, sups) in by_split.items():
        rset, sset = RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)
        cuts = CutSet.from_manifests(recordings=rset, supervisions=sset)
        rset.to_file(root / "manifests" / f"{split}_recordings.jsonl.gz")
        sset.to_file(root / "manifests" / f"{split}_supervisions.jsonl.gz")
        cuts.to_file(root / "manifests" / f"{split}_cuts.jsonl.gz")
        counts[split] = len(sups)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "speakers.csv", index=False)
    cmvn = compute_cmvn(all_feats)
    cmvn.save(root / "cmvn.json")
    info = {"format": "fairstream-corpus", "version": 1, "preset": "tiny-test", "seed": 0,
            "config": {}, "complete": True, "fingerprint": "tiny", "counts": counts,
            "relative_audio_paths": False}
    (root / "corpus.json").write_text(json.dumps(info))
    return root


def tiny_corpus_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The tiny corpus, built on first use in this session."""
    if "corpus" not in _CACHE:
        _CACHE["corpus"] = build_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))
    return _CACHE["corpus"]


TINY_OVERRIDES = [
    "tokenizer.kind=char",
    "model.encoder.kwargs.hidden_dim=64",
    "model.encoder.kwargs.output_dim=64",
    "model.encoder.kwargs.num_layers=1",
    "model.encoder.kwargs.conv_channels=8",
    "model.encoder.kwargs.dropout=0.0",
    "model.predictor.embed_dim=32",
    "model.predictor.dropout=0.0",
    "model.joiner.joint_dim=64",
    "model.ctc_weight=0.2",
    "data.max_duration=20",
    "data.max_valid_utterances=4",
    "optim.lr=0.003",
    "optim.warmup_steps=5",
    "optim.schedule=constant",
    "schedule.max_epochs=100",
    "schedule.log_interval=1",
    "schedule.checkpoint_interval=10",
    "schedule.average_last_n=2",
    "spec_augment=null",
]


def tiny_config(corpus: Path, *extra: str):  # type: ignore[no-untyped-def]
    """A TrainConfig for a model small enough to train in seconds."""
    from fairstream.training.config import load_config

    return load_config(None, [f"data.corpus={corpus}", *TINY_OVERRIDES, *extra])


def tiny_trained_model(tmp_path_factory, steps: int = 2) -> Path:  # type: ignore[no-untyped-def]
    """Experiment directory of a tiny transducer trained ``steps`` steps (cached).

    Two steps leave the model close to its random start, where greedy search still emits
    plenty of (wrong) tokens: good for checking decoding plumbing, useless for accuracy.
    """
    if "exp" not in _CACHE:
        from fairstream.training.loop import train

        corpus = tiny_corpus_dir(tmp_path_factory)
        out = tmp_path_factory.mktemp("tiny_exp")
        train(tiny_config(corpus, f"schedule.max_steps={steps}"), out_dir=out, progress=False)
        _CACHE["exp"] = out
    return _CACHE["exp"]


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(x) for x in fh]


