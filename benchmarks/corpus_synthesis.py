"""Corpus synthesis benchmark: utterances per second and real-time factors on this machine.

Measured, on one process unless stated:

* eSpeak NG alone (per-utterance private library load + synthesis at 22,050 Hz);
* the full per-utterance chain (eSpeak + resample to 16 kHz + noise + channel + level);
* FLAC encoding;
* an end-to-end build of a small corpus with ``--jobs`` worker processes (synthesis stage; its
  CPU column sums the workers' CPU time);
* 80-dim fbank extraction, offline (whole utterance) and online (chunks of ``--chunk-ms``).

Real-time factor (RTF) = compute seconds / audio seconds (lower is faster). Wall-clock and
CPU seconds are both reported: on a shared machine the wall clock includes waiting for a core.
The utterances are the first ``--utterances`` of the ``demo`` preset (seed 0), so they have the
demo's mix of voices, rates, noise types and channels.

Usage::

    .venv/bin/python benchmarks/corpus_synthesis.py [--utterances 300] [--jobs 2] [--chunk-ms 160]

Writes ``benchmarks/results/corpus_synthesis.json`` (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import soundfile as sf

from fairstream._io import atomic_write_text
from fairstream.data.espeak import ESPEAK_SAMPLE_RATE, EspeakSynthesizer
from fairstream.data.presets import get_preset
from fairstream.data.speakers import SpeakerConfig, sample_speakers
from fairstream.data.synthesis import build_corpus, plan_utterances, render_utterance
from fairstream.features.fbank import OnlineFbankExtractor, compute_fbank

RESULTS = Path(__file__).resolve().parent / "results" / "corpus_synthesis.json"
SR = 16000


# Any: a JSON result row of mixed types
def _row(
    name: str, n_utts: int, audio_s: float, compute_s: float, cpu_s: float | None = None
) -> dict[str, Any]:
    return {"stage": name, "utterances": n_utts, "audio_seconds": round(audio_s, 2),
            "compute_seconds": round(compute_s, 3),
            "utterances_per_second": round(n_utts / compute_s, 1),
            "rtf": round(compute_s / audio_s, 5), "x_real_time": round(audio_s / compute_s, 1),
            "cpu_seconds": None if cpu_s is None else round(cpu_s, 3),
            "cpu_rtf": None if cpu_s is None else round(cpu_s / audio_s, 5)}


class _Clock:
    """Wall and CPU time of this process (the machine may be shared: CPU time is the cost)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def split(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=300,
                        help="utterances for the per-stage timings")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes for the end-to-end build")
    parser.add_argument("--build-utterances", type=int, default=600,
                        help="size of the end-to-end build")
    parser.add_argument("--chunk-ms", type=int, default=160, help="online fbank chunk size")
    args = parser.parse_args()

    config = get_preset("demo")
    speakers = sample_speakers(config.speakers, seed=0)
    specs = plan_utterances(config, speakers, seed=0)[: args.utterances]
    synth = EspeakSynthesizer()
    rows: list[dict[str, Any]] = []  # Any: JSON result rows

    t = _Clock()
    raw = [synth.synthesize(s.text, voice=s.voice, rate=s.rate, pitch=s.pitch,
                            pitch_range=s.pitch_range, seed=s.synth_seed) for s in specs]
    raw_s = sum(len(x) for x in raw) / ESPEAK_SAMPLE_RATE
    rows.append(_row("espeak synthesis (22.05 kHz)", len(specs), raw_s, *t.split()))

    t = _Clock()
    audio = [render_utterance(s, synth, SR) for s in specs]
    audio_s = sum(len(x) for x in audio) / SR
    rows.append(_row("full chain: synth+resample+noise+channel", len(specs), audio_s, *t.split()))

    with tempfile.TemporaryDirectory() as tmp:
        t = _Clock()
        for i, x in enumerate(audio):
            sf.write(os.path.join(tmp, f"{i}.flac"), x, SR, format="FLAC", subtype="PCM_16")
        rows.append(_row("FLAC encode + write", len(audio), audio_s, *t.split()))

        # end-to-end build with worker processes (synthesis stage only, as the CLI reports it)
        per_spk = 10
        n_train = max(1, args.build_utterances // per_spk)
        build_speakers = replace(config.speakers, n_train=n_train, n_dev=1, n_test=1)
        build_cfg = replace(config, preset="bench", speakers=build_speakers,
                            utterances_per_speaker=(per_spk, 1, 1), cmvn_max_utterances=50)
        assert isinstance(build_cfg.speakers, SpeakerConfig)
        summary = build_corpus(build_cfg, Path(tmp) / "corpus", seed=0, jobs=args.jobs,
                               progress=False)
        hours = summary.hours
        rows.append(_row(f"build, synthesis stage, {args.jobs} jobs", summary.n_synthesized,
                         hours * 3600, summary.synthesis_seconds, summary.synthesis_cpu_seconds))

    t = _Clock()
    for x in audio:
        compute_fbank(x, sample_rate=SR)
    rows.append(_row("fbank offline", len(audio), audio_s, *t.split()))

    chunk = SR * args.chunk_ms // 1000
    t = _Clock()
    for x in audio:
        ex = OnlineFbankExtractor()
        for start in range(0, len(x), chunk):
            ex.accept(x[start:start + chunk])
        ex.finish()
    rows.append(_row(f"fbank online ({args.chunk_ms} ms chunks)", len(audio), audio_s, *t.split()))

    load_average = [round(v, 2) for v in os.getloadavg()]
    result = {
        "benchmark": "corpus_synthesis",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_at_start": load_average},
        "settings": vars(args),
        "mean_utterance_seconds": round(audio_s / len(audio), 3),
        "rows": rows,
    }
    atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")

    header = (f"{'stage':<46} {'utts':>6} {'audio s':>9} {'wall s':>8} {'utt/s':>8} {'RTF':>9} "
              f"{'x RT':>8} {'CPU s':>7} {'CPU RTF':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['stage']:<46} {r['utterances']:>6} {r['audio_seconds']:>9.1f} "
              f"{r['compute_seconds']:>8.2f} {r['utterances_per_second']:>8.1f} "
              f"{r['rtf']:>9.5f} {r['x_real_time']:>8.1f} "
              f"{'-' if r['cpu_seconds'] is None else format(r['cpu_seconds'], '7.2f'):>7} "
              f"{'-' if r['cpu_rtf'] is None else format(r['cpu_rtf'], '9.5f'):>9}")
    print(f"\nmean utterance {result['mean_utterance_seconds']} s; {os.cpu_count()} CPUs; "
          f"load average at start {load_average}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
