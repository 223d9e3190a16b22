"""Training data pipeline throughput: batches/s with and without the feature cache.

One epoch of :func:`fairstream.training.data.make_dataloader` (char tokenizer, CMVN,
SpecAugment on, ``--max-duration`` seconds per batch) is timed in four settings:

* ``on_the_fly``: decode audio and compute fbank in the main process (``num_workers=0``);
* ``on_the_fly_1_worker``: the same in one DataLoader worker process (``num_workers=1``);
* ``cache_build``: :func:`precompute_features` once (one process);
* ``cached``: fbank read from the cache (``num_workers=0``).

Data: the train split of ``--corpus DIR`` (a fairstream corpus), or, without it, ``--synthetic N``
FLAC files of 2-5 s of tones and noise in a temporary directory. ``--limit N`` keeps the first
N train cuts of the corpus.

Usage::

    nice -n 10 .venv/bin/python benchmarks/data_pipeline.py [--corpus DIR] [--synthetic 300]

Wall-clock time and the main process's CPU time are both reported: on a shared machine the CPU
time shows what the pipeline costs independent of other load (for ``num_workers=1`` the work
happens in the worker, so the main process's CPU time is not the cost).

Writes ``benchmarks/results/data_pipeline.json`` (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from fairstream._io import atomic_write_text
from fairstream.features import Cmvn, OnlineFbankExtractor, compute_cmvn, compute_fbank
from fairstream.tokenizer import Tokenizer
from fairstream.training.data import (
    Batch,
    SpecAugmentConfig,
    load_cut_features,
    make_dataloader,
    precompute_features,
)

WORDS = ["set", "a", "timer", "for", "twenty", "five", "minutes", "play", "some", "music", "by",
         "the", "beatles", "what", "is", "the", "weather", "in", "boston", "turn", "on", "the",
         "kitchen", "lights", "call", "maria"]


def synthetic_cuts(root: Path, n: int, seed: int = 0) -> CutSet:
    rng = np.random.default_rng(seed)
    recs, sups = [], []
    for i in range(n):
        dur = float(rng.uniform(2.0, 5.0))
        t = np.arange(int(dur * 16000)) / 16000
        x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 3000, 3)) / 6
        x = (x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        path = root / f"u{i:05d}.flac"
        sf.write(str(path), x, 16000)
        rec = Recording.from_file(path, recording_id=path.stem)
        recs.append(rec)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
        sups.append(SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0,
                                       duration=rec.duration, text=text, speaker=f"s{i % 20}"))
    return CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups)).to_eager()


def run_epoch(loader: Iterable[Batch]) -> dict[str, float]:
    start, cpu0 = time.perf_counter(), time.process_time()
    batches = utts = frames = 0
    for batch in loader:
        batches += 1
        utts += batch.size
        frames += int(batch.feature_lens.sum())
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {"seconds": secs, "cpu_seconds_main_process": cpu, "batches": batches,
            "utterances": utts, "batches_per_s": batches / secs, "utterances_per_s": utts / secs,
            "audio_s_per_s": frames * 0.01 / secs}


def feature_rtf(seconds: float = 60.0, chunk_ms: int = 160) -> dict[str, float]:
    """Real-time factor of offline fbank and of the online extractor fed ``chunk_ms`` chunks."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * 16000)).astype(np.float32)
    compute_fbank(x[:16000])  # warm-up
    t0 = time.perf_counter()
    compute_fbank(x)
    offline = time.perf_counter() - t0
    ext = OnlineFbankExtractor()
    step = 16 * chunk_ms
    t0 = time.perf_counter()
    for i in range(0, x.size, step):
        ext.accept(x[i:i + step])
    ext.finish()
    online = time.perf_counter() - t0
    return {"audio_seconds": seconds, "offline_rtf": offline / seconds,
            "online_rtf": online / seconds, "online_chunk_ms": chunk_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--synthetic", type=int, default=300)
    ap.add_argument("--limit", type=int, default=None,
                    help="use the first N train cuts of --corpus")
    ap.add_argument("--max-duration", type=float, default=200.0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "data_pipeline.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="fairstream-bench-"))
    try:
        if args.corpus is not None:
            from fairstream.data.corpus import load_corpus

            corpus = load_corpus(args.corpus)
            cuts = corpus.cuts("train").to_eager()
            if args.limit is not None:
                cuts = cuts.subset(first=args.limit)
            mean, std = corpus.cmvn
            cmvn = Cmvn(mean=mean, std=std)
            source = f"corpus {args.corpus} (train{f', first {args.limit}' if args.limit else ''})"
        else:
            cuts = synthetic_cuts(tmp, args.synthetic)
            cmvn = compute_cmvn(load_cut_features(c) for c in cuts.subset(first=50))
            source = f"synthetic ({args.synthetic} FLAC files, 2-5 s)"
        hours = sum(c.duration for c in cuts) / 3600
        tok = Tokenizer.train([c.supervisions[0].text for c in cuts], tmp / "tok",
                              model_type="char")
        # Any: keyword arguments of several types for make_dataloader
        common: dict[str, Any] = {"tokenizer": tok, "cmvn": cmvn,
                                  "max_duration": args.max_duration, "shuffle": True,
                                  "spec_augment": SpecAugmentConfig(), "seed": 0}
        results: dict[str, dict[str, float]] = {}
        features = feature_rtf()
        results["on_the_fly"] = run_epoch(make_dataloader(cuts, **common))
        results["on_the_fly_1_worker"] = run_epoch(make_dataloader(cuts, num_workers=1, **common))
        t0, cpu0 = time.perf_counter(), time.process_time()
        precompute_features(cuts, tmp / "cache")
        build = time.perf_counter() - t0
        results["cache_build"] = {"seconds": build,
                                  "cpu_seconds_main_process": time.process_time() - cpu0,
                                  "utterances_per_s": len(cuts) / build,
                                  "audio_s_per_s": hours * 3600 / build}
        results["cached"] = run_epoch(make_dataloader(cuts, feature_cache=tmp / "cache", **common))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = {"source": source, "utterances": len(cuts), "hours": hours,
              "max_duration": args.max_duration,
              "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "load_average_1min": os.getloadavg()[0], "features": features, "results": results}
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")

    print(f"data: {source}, {len(cuts)} utterances, {hours:.2f} h, "
          f"max_duration {args.max_duration} s")
    print(f"fbank RTF (1 thread, {features['audio_seconds']:.0f} s of audio): offline "
          f"{features['offline_rtf']:.4f}, online with {features['online_chunk_ms']} ms chunks "
          f"{features['online_rtf']:.4f}; load average {report['load_average_1min']:.1f}")
    print(f"{'setting':<22}{'seconds':>9}{'cpu s':>8}{'batches/s':>11}{'utts/s':>9}"
          f"{'audio s/s':>11}")
    for name, r in results.items():
        print(f"{name:<22}{r['seconds']:>9.2f}{r['cpu_seconds_main_process']:>8.2f}"
              f"{r.get('batches_per_s', float('nan')):>11.2f}"
              f"{r['utterances_per_s']:>9.1f}{r['audio_s_per_s']:>11.0f}")


if __name__ == "__main__":
    main()
