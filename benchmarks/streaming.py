"""Streaming benchmark: real-time factor and per-chunk compute latency on one thread.

Runs :class:`fairstream.decoding.streaming.StreamingRecognizer` (online fbank + CMVN + the
encoder's ``stream`` + chunked greedy search) over synthetic audio fed in chunks of
``--chunk-ms`` and times every ``accept`` call. Reported:

* real-time factor (RTF) = compute time / audio duration, whole pipeline;
* per-chunk compute latency p50 / p95 / max (the time to turn one chunk of audio into an
  updated partial result);
* a breakdown: fbank alone, encoder ``stream`` alone, greedy search alone (CPU-time RTF each);
* algorithmic latency: the chunk plus what the features and the encoder wait for beyond it
  (15 ms of analysis window past the 10 ms shift; the LSTM encoder has no lookahead).

Without ``--checkpoint`` the default model configuration is built with random weights
(vocabulary ``--vocab-size``). A random joiner emits the symbol limit (3) on every frame,
far more than a trained model, so the blank logit's bias is shifted until greedy search
emits ``--tokens-per-frame`` tokens per encoder frame (0.5 = 12.5 tokens/s, a character
model on fast speech); the uncalibrated worst case (3 tokens per frame) is reported too.
With ``--checkpoint`` the trained model, its tokenizer and CMVN are used as they are, and
``--corpus DIR`` replaces the synthetic signal by real speech: the corpus's test utterances
played back to back (``--seconds`` of them) as one stream.

``--beam K`` (optionally with ``--lm lm.json``) also times the recognizer with beam search
(and shallow fusion) on the same audio, next to greedy search: the cost of the recipe's
decoding.

Wall-clock time on a shared machine includes waiting for the CPU, so the CPU time of the
process (one thread) is reported next to it; both are in the JSON.

Usage::

    .venv/bin/python benchmarks/streaming.py [--seconds 30] [--chunk-ms 160] [--checkpoint CK]
        [--corpus DIR] [--beam 8 --lm lm.json --lm-weight 0.5 --token-bonus 1.5]

Writes ``benchmarks/results/streaming.json`` (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairstream._io import atomic_write_text
from fairstream.decoding.greedy import greedy_search_chunk
from fairstream.decoding.streaming import StreamingRecognizer
from fairstream.features.fbank import OnlineFbankExtractor, compute_cmvn, compute_fbank
from fairstream.models.factory import ModelConfig, build_model
from fairstream.models.transducer import Transducer

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.json"
SR = 16000


class _IdTokenizer:
    """Decodes ids as space-separated numbers (random-weight runs have no tokenizer)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def decode(self, ids: list[int]) -> str:
        return " ".join(str(i) for i in ids)


def synthetic_speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Gliding harmonic tones with syllable-rate envelope and background noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def corpus_speech(corpus: Path, seconds: float) -> list[np.ndarray]:
    """The corpus's first test utterances (in id order) adding up to about ``seconds``."""
    from fairstream.data.corpus import load_corpus

    pieces, total = [], 0
    for cut in sorted(load_corpus(corpus).cuts("test"), key=lambda c: c.id):
        audio = cut.load_audio()[0].astype(np.float32)
        pieces.append(audio)
        total += audio.size
        if total >= seconds * SR:
            break
    return pieces


def _tokens_per_frame(model: Transducer, feats: np.ndarray) -> float:
    x = torch.from_numpy(feats).unsqueeze(0)
    with torch.no_grad():
        enc, enc_lens = model.encode(x, torch.tensor([x.shape[1]]))
        state = greedy_search_chunk(model, enc, enc_lens)
    return len(state.tokens[0]) / int(enc_lens[0])


def calibrate_blank_bias(model: Transducer, feats: np.ndarray, target: float) -> float:
    """Shift the joiner's blank bias so that greedy search emits ``target`` tokens per frame."""
    bias = model.joiner.out.bias
    base = float(bias.detach()[model.blank_id])
    lo, hi = -20.0, 40.0  # offsets: lo emits more than target, hi fewer
    with torch.no_grad():
        for _ in range(14):
            mid = (lo + hi) / 2
            bias[model.blank_id] = base + mid
            if _tokens_per_frame(model, feats) > target:
                lo = mid
            else:
                hi = mid
        bias[model.blank_id] = base + hi
    return hi


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_pipeline(
    rec: StreamingRecognizer, segments: list[np.ndarray], step: int
) -> tuple[list[float], list[float], float, float, int]:
    """Feed each segment as its own stream in chunks of ``step`` samples, timing every
    ``accept``: (per-chunk wall s, per-chunk CPU s, total wall s, total CPU s, tokens)."""
    lat, lat_cpu = [], []
    n_tokens = 0
    t0, p0 = time.perf_counter(), time.process_time()
    for segment in segments:
        rec.reset()
        for start in range(0, segment.size, step):
            c0, q0 = time.perf_counter(), time.process_time()
            rec.accept(segment[start : start + step])
            lat.append(time.perf_counter() - c0)
            lat_cpu.append(time.process_time() - q0)
        n_tokens += len(rec.finish().tokens)
    return (lat, lat_cpu, time.perf_counter() - t0, time.process_time() - p0, n_tokens)


# Any: a JSON record of numbers and nested dicts
def measure_stream(
    rec: StreamingRecognizer, segments: list[np.ndarray], runs: int
) -> dict[str, Any]:
    """RTF (wall and CPU, median of ``runs`` after one warm-up) and per-chunk latency of the
    whole streaming pipeline over ``segments`` (16 kHz audio, each its own stream)."""
    step = SR * rec.chunk_ms // 1000
    duration = sum(s.size for s in segments) / SR
    run_pipeline(rec, segments, step)  # warm-up
    lat_all: list[float] = []
    lat_cpu_all: list[float] = []
    walls, cpus = [], []
    n_tok = 0
    for _ in range(runs):
        lat, lat_cpu, wall, cpu, n_tok = run_pipeline(rec, segments, step)
        lat_all.extend(lat)
        lat_cpu_all.extend(lat_cpu)
        walls.append(wall)
        cpus.append(cpu)
    return {
        "rtf": statistics.median(walls) / duration,
        "rtf_cpu": statistics.median(cpus) / duration,
        "chunk_latency_ms": {
            "p50": 1000 * _pct(lat_all, 50),
            "p95": 1000 * _pct(lat_all, 95),
            "max": 1000 * max(lat_all),
        },
        "chunk_cpu_ms": {
            "p50": 1000 * _pct(lat_cpu_all, 50),
            "p95": 1000 * _pct(lat_cpu_all, 95),
        },
        "tokens": n_tok,
    }


def _atomic_write_json(path: Path, data: Mapping[str, object]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length per run")
    parser.add_argument("--chunk-ms", type=int, default=160)
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3, help="timed runs (after one warm-up)")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results file (default: benchmarks/results/streaming.json)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="with --checkpoint: stream this corpus's test utterances")
    parser.add_argument("--beam", type=int, default=None, help="also time beam search")
    parser.add_argument("--lm", type=Path, default=None, help="token n-gram LM for --beam")
    parser.add_argument("--lm-weight", type=float, default=None,
                        help="default: the search default (fairstream.decoding.SearchConfig)")
    parser.add_argument("--token-bonus", type=float, default=None,
                        help="default: the search default (1.5 with an LM, else 0)")
    parser.add_argument(
        "--tokens-per-frame",
        type=float,
        default=0.5,
        help="emission rate the random-weight model is calibrated to",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    segments = [synthetic_speechlike(args.seconds)]  # each segment is one stream
    audio_desc = "synthetic"
    if args.corpus is not None:
        if args.checkpoint is None:
            parser.error("--corpus needs --checkpoint")
        segments = corpus_speech(args.corpus, args.seconds)
        audio_desc = f"{len(segments)} test utterances (one stream each) of {args.corpus}"
    audio = np.concatenate(segments)
    if args.beam is None and args.lm is not None:
        parser.error("--lm needs --beam")
    if args.checkpoint is not None:
        from fairstream.inference import load_transducer

        loaded = load_transducer(args.checkpoint)
        model, tokenizer, cmvn = loaded.model, loaded.tokenizer, loaded.cmvn
        model_desc = f"checkpoint {args.checkpoint}"
        config = None
    else:
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=args.vocab_size)
        model = build_model(cfg)
        tokenizer = _IdTokenizer(args.vocab_size)
        cmvn = compute_cmvn([compute_fbank(audio)])
        model_desc = "default ModelConfig, random weights"
        config = cfg.to_dict()
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=args.chunk_ms)
    step = SR * args.chunk_ms // 1000

    # Any: a JSON record of numbers and nested dicts, read back by key below
    def measure(rec: StreamingRecognizer = rec) -> dict[str, Any]:
        return measure_stream(rec, segments, args.runs)

    duration = audio.size / SR
    feats_all = cmvn.apply(compute_fbank(audio))
    worst = None
    blank_offset = 0.0
    if args.checkpoint is None:
        worst = measure()
        worst["tokens_per_encoder_frame"] = _tokens_per_frame(model, feats_all)
        blank_offset = calibrate_blank_bias(model, feats_all, args.tokens_per_frame)
    main_run = measure()
    beam_run = None
    if args.beam is not None:
        from fairstream.decoding.beam import BeamSearch
        from fairstream.decoding.search import SearchConfig
        from fairstream.lm import NgramLM

        lm = NgramLM.load(args.lm) if args.lm is not None else None
        given = {"lm_weight": args.lm_weight, "token_bonus": args.token_bonus}
        settings = SearchConfig(method="beam", beam=args.beam,
                                **{k: v for k, v in given.items() if v is not None})
        search = BeamSearch(settings, lm)
        beam_rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=args.chunk_ms,
                                       search=search)
        beam_run = measure(beam_rec)
        beam_run["search"] = {"beam": search.beam,
                              "max_symbols_per_frame": search.max_symbols_per_frame,
                              "lm": str(args.lm) if args.lm else None,
                              "lm_weight": search.lm_weight, "token_bonus": search.token_bonus}

    # breakdown, each part alone (fastest of --runs passes: the least disturbed by other jobs)
    chunk_frames = rec.chunk_frames
    t_fbank = t_enc = t_dec = float("inf")
    enc_frames = 0
    for _ in range(args.runs):
        ext = OnlineFbankExtractor()
        t0 = time.process_time()
        feats_chunks = [ext.accept(audio[s : s + step]) for s in range(0, audio.size, step)]
        feats_chunks.append(ext.finish())
        t_fbank = min(t_fbank, time.process_time() - t0)
        feats = cmvn.apply(np.concatenate(feats_chunks))
        enc_state: object = None  # the encoder's own state type, opaque here
        enc_chunks = []
        with torch.inference_mode():
            t0 = time.process_time()
            for s in range(0, feats.shape[0], chunk_frames):
                x = torch.from_numpy(feats[s : s + chunk_frames]).unsqueeze(0)
                y, y_lens, enc_state = model.stream(x, torch.tensor([x.shape[1]]), enc_state)
                enc_chunks.append((y, y_lens))
            t_enc = min(t_enc, time.process_time() - t0)
            dec_state = None
            t0 = time.process_time()
            for y, y_lens in enc_chunks:
                dec_state = greedy_search_chunk(model, y, y_lens, dec_state)
            t_dec = min(t_dec, time.process_time() - t0)
        enc_frames = sum(int(yl[0]) for _, yl in enc_chunks)

    n_tokens = main_run["tokens"]
    lookahead_ms = 1000 * model.encoder.right_context * 0.01 * model.subsampling
    result = {
        "benchmark": "streaming",
        "model": model_desc,
        "config": config,
        "parameters": n_params,
        "threads": 1,
        "audio": audio_desc,
        "audio_seconds": duration,
        "chunk_ms": args.chunk_ms,
        "runs": args.runs,
        "blank_bias_offset": blank_offset,
        "rtf": main_run["rtf"],
        "rtf_cpu": main_run["rtf_cpu"],
        "chunk_latency_ms": main_run["chunk_latency_ms"],
        "chunk_cpu_ms": main_run["chunk_cpu_ms"],
        "worst_case_random_weights": worst,
        "beam_search": beam_run,
        "breakdown_rtf_cpu": {
            "fbank": t_fbank / duration,
            "encoder_stream": t_enc / duration,
            "greedy_search": t_dec / duration,
        },
        "tokens_per_encoder_frame": n_tokens / max(enc_frames, 1),
        "algorithmic_latency_ms": {
            "chunk": args.chunk_ms,
            "fbank_window_beyond_shift": 15.0,
            "encoder_lookahead": lookahead_ms,
            "total": args.chunk_ms + 15.0 + lookahead_ms,
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1min_at_end": os.getloadavg()[0],
        },
    }
    _atomic_write_json(args.out, result)

    lat = result["chunk_latency_ms"]
    cpu = result["chunk_cpu_ms"]
    bd = result["breakdown_rtf_cpu"]
    algo = result["algorithmic_latency_ms"]
    rows = [
        ("model", f"{model_desc}, {n_params / 1e6:.2f} M parameters"),
        ("audio / chunk", f"{duration:.1f} s {audio_desc} / {args.chunk_ms} ms, 1 thread"),
        ("tokens per encoder frame", f"{result['tokens_per_encoder_frame']:.2f}"),
        ("real-time factor, wall / CPU", f"{result['rtf']:.4f} / {result['rtf_cpu']:.4f}"),
        (
            "chunk latency wall p50 / p95 / max",
            f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['max']:.2f} ms",
        ),
        ("chunk latency CPU p50 / p95", f"{cpu['p50']:.2f} / {cpu['p95']:.2f} ms"),
        (
            "CPU RTF fbank / encoder / greedy",
            f"{bd['fbank']:.4f} / {bd['encoder_stream']:.4f} / {bd['greedy_search']:.4f}",
        ),
        (
            "algorithmic latency",
            f"{algo['total']:.0f} ms = {args.chunk_ms} chunk + 15 window "
            f"+ {lookahead_ms:.0f} lookahead",
        ),
    ]
    if worst is not None:
        rows.append(
            (
                "worst case (3 tokens/frame) RTF wall / CPU",
                f"{worst['rtf']:.4f} / {worst['rtf_cpu']:.4f}",
            )
        )
    if beam_run is not None:
        b = beam_run
        what = f"beam {args.beam}" + (" + LM" if args.lm else "")
        rows.append((f"{what}: RTF wall / CPU",
                     f"{b['rtf']:.4f} / {b['rtf_cpu']:.4f} ({b['tokens']} tokens)"))
        bl = b["chunk_latency_ms"]
        rows.append((f"{what}: chunk latency wall p50 / p95 / max",
                     f"{bl['p50']:.2f} / {bl['p95']:.2f} / {bl['max']:.2f} ms"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
