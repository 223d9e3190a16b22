"""Trained encoders streamed in PyTorch and in their ONNX export: RTF side by side.

For every trained run of the encoder comparison (``benchmarks/encoders.py``: the averaged
checkpoint in the run's ``run_dir``, read from ``--results``) the model is exported to ONNX
(``fairstream export``: the LSTM in sherpa-onnx's layout, ContextNet and ConvRNN-T in the
generic one, CMVN folded in, fp32) and two streaming greedy recognizers are timed on the same
audio, in the same process, on one thread:

* ``rtf_1thread_pytorch``: :class:`fairstream.decoding.streaming.StreamingRecognizer` (online
  fbank, CMVN, the encoder's ``stream``, greedy search with up to 3 tokens per frame), the
  measurement of ``encoders.py``'s ``rtf_1thread``;
* ``rtf_1thread_onnxruntime``: :class:`fairstream.export.OnnxStreamingRecognizer` (the same
  online fbank, the exported encoder step, decoder and joiner in onnxruntime, the same greedy
  rule through the export's frame repeat).

Both are fed ``--chunk-ms`` chunks of the first ``--rtf-seconds`` of test speech (the
utterances ``encoders.py`` times), each utterance its own stream. After one warm-up pass of
each, ``--rtf-runs`` timed passes alternate between the two runtimes, so that a change in the
machine's load hits both; each RTF is the median pass. ``speedup`` = PyTorch RTF / onnxruntime
RTF of that pair.

``transcripts_equal``: the share of the first ``--agreement-utterances`` test utterances
(in id order) on which the two recognizers return the same text; ``wer_pytorch`` and
``wer_onnxruntime`` are their WERs there (fractions). An export is a faithful copy only if
the share is 1 (fp32 differences of ~1e-6 can flip a near-tie, rarely).

Encoders the export refuses (the Conformer, ConvRNN-T with utterance SE) get a row with
``onnx_refused`` naming the reason and null RTFs.

Usage::

    .venv/bin/python benchmarks/encoders_onnx.py --corpus demo_out/corpus \\
        [--encoders lstm,convrnnt,...] [--seeds 0,1] [--size demo] \\
        [--results benchmarks/results/encoders.json]

Writes ``benchmarks/results/encoders_onnx.json`` (atomically; rows of other encoders, seeds
or sizes already in it are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders import (  # noqa: E402  (the sibling benchmark scripts)
    ENCODERS,
    SIZES,
    Run,
    _csv,
    _first_test_cuts,
    _locked,
    _machine,
    load_results,
    save_results,
)
from encoders import RESULTS as ENCODER_RESULTS  # noqa: E402
from streaming import SR  # noqa: E402

from fairstream._threads import torch_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "encoders_onnx.json"


class _Runtime:
    """One recognizer behind a common face: ``transcribe(audio, step) -> text``."""

    def __init__(self, name: str, reset: Callable[[], None],
                 accept: Callable[[Any], object], finish: Callable[[], str]) -> None:
        self.name, self._reset, self._accept, self._finish = name, reset, accept, finish

    def transcribe(self, audio: Any, step: int) -> str:  # Any: a float32 numpy array
        self._reset()
        for start in range(0, audio.size, step):
            self._accept(audio[start:start + step])
        return self._finish()


def _pass_seconds(rt: _Runtime, segments: Sequence[Any], step: int) -> float:
    t0 = time.perf_counter()
    for segment in segments:
        rt.transcribe(segment, step)
    return time.perf_counter() - t0


def time_pair(a: _Runtime, b: _Runtime, segments: Sequence[Any], step: int, runs: int
              ) -> tuple[list[float], list[float]]:
    """Wall seconds of ``runs`` passes of each over ``segments``, alternating a, b, a, b
    after one warm-up pass of each."""
    _pass_seconds(a, segments, step)
    _pass_seconds(b, segments, step)
    ta, tb = [], []
    for _ in range(runs):
        ta.append(_pass_seconds(a, segments, step))
        tb.append(_pass_seconds(b, segments, step))
    return ta, tb


def _wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    from fairstream.metrics.wer import ErrorCounts, score_pairs

    counts = score_pairs(list(refs), list(hyps), normalized=True)
    return ErrorCounts(sum(c.substitutions for c in counts), sum(c.deletions for c in counts),
                       sum(c.insertions for c in counts), sum(c.hits for c in counts)).wer


def measure_one(corpus_dir: Path, run_dir: Path, encoder: str, size: str, seed: int,
                chunk_ms: int, rtf_seconds: float, runs: int, agreement_utts: int,
                echo: Callable[[str], None] = print) -> Run:
    """The row of one trained run, whose averaged checkpoint is in ``run_dir`` (see the
    module docstring).

    Raises:
        SystemExit: the run has no averaged checkpoint (named).
    """
    from fairstream.data.corpus import load_corpus
    from fairstream.data.text import normalize
    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.errors import InputDataError
    from fairstream.export import OnnxStreamingRecognizer, export_transducer
    from fairstream.inference import cut_audio, load_transducer

    checkpoint = run_dir / "averaged.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no trained {encoder} ({size}, seed {seed}) here")
    loaded = load_transducer(checkpoint)
    model = loaded.model.eval()
    corpus = load_corpus(corpus_dir)
    cuts = _first_test_cuts(corpus, rtf_seconds)
    segments = [cut_audio(c, SR) for c in cuts]
    audio_s = sum(x.size for x in segments) / SR
    step = SR * chunk_ms // 1000
    row: Run = {"encoder": encoder, "size": size, "seed": seed,
                "checkpoint": str(checkpoint), "chunk_ms": chunk_ms, "rtf_audio_s": audio_s}
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        try:
            export_transducer(model, loaded.tokenizer, loaded.cmvn, tmp, chunk_ms=chunk_ms)
        except InputDataError as exc:
            echo(f"  export refused: {exc}")
            return {**row, "onnx_refused": str(exc), "rtf_1thread_pytorch": None,
                    "rtf_1thread_onnxruntime": None, "speedup": None,
                    "transcripts_equal": None, "wer_pytorch": None, "wer_onnxruntime": None,
                    "agreement_utterances": 0}
        rec = StreamingRecognizer(model, loaded.tokenizer, loaded.cmvn, chunk_ms=chunk_ms)
        ort = OnnxStreamingRecognizer(tmp, num_threads=1)
        pytorch = _Runtime("pytorch", rec.reset, rec.accept, lambda: rec.finish().text)
        onnx = _Runtime("onnxruntime", ort.reset, ort.accept, ort.finish)
        echo(f"  timing {audio_s:.1f} s of test speech, {runs} alternating runs")
        t_pt, t_ort = time_pair(pytorch, onnx, segments, step, runs)
        test = sorted(corpus.cuts("test"), key=lambda c: c.id)[:agreement_utts]
        echo(f"  transcripts of {len(test)} test utterances in both runtimes")
        refs, hyp_pt, hyp_ort = [], [], []
        for cut in test:
            audio = cut_audio(cut, SR)
            refs.append(normalize(cut.supervisions[0].text))
            hyp_pt.append(normalize(pytorch.transcribe(audio, step)))
            hyp_ort.append(normalize(onnx.transcribe(audio, step)))
    rtf_pt = statistics.median(t_pt) / audio_s
    rtf_ort = statistics.median(t_ort) / audio_s
    return {**row, "onnx_refused": None,
            "rtf_1thread_pytorch": rtf_pt, "rtf_1thread_onnxruntime": rtf_ort,
            "rtf_1thread_pytorch_runs": [t / audio_s for t in t_pt],
            "rtf_1thread_onnxruntime_runs": [t / audio_s for t in t_ort],
            "speedup": rtf_pt / rtf_ort,
            "transcripts_equal": sum(a == b for a, b in zip(hyp_pt, hyp_ort)) / max(len(test), 1),
            "wer_pytorch": _wer(refs, hyp_pt), "wer_onnxruntime": _wer(refs, hyp_ort),
            "agreement_utterances": len(test)}


def _key(r: Run) -> tuple[str, str, int]:
    return (r["encoder"], r["size"], int(r["seed"]))


def merge_rows(path: Path, rows: Sequence[Run], protocol: dict[str, object]) -> list[Run]:
    """``rows`` replacing the same (encoder, size, seed) rows of ``path``; written atomically
    under the results file's lock."""
    with _locked(path):
        data = load_results(path)
        new = {_key(r) for r in rows}
        kept = [r for r in data["runs"] if _key(r) not in new]
        data.update({"benchmark": "encoders_onnx", "protocol": protocol,
                     "machine": _machine(), "runs": kept + list(rows)})
        save_results(path, data)
        return list(data["runs"])


def format_table(rows: Sequence[Run]) -> str:
    lines = ["| encoder | size | seed | RTF PyTorch | RTF onnxruntime | speedup | same text "
             "| WER PyTorch | WER onnxruntime |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("onnx_refused"):
            lines.append(f"| {r['encoder']} | {r['size']} | {r['seed']} | — | refused | — | — "
                         "| — | — |")
            continue
        lines.append(
            f"| {r['encoder']} | {r['size']} | {r['seed']} | {r['rtf_1thread_pytorch']:.4f} "
            f"| {r['rtf_1thread_onnxruntime']:.4f} | {r['speedup']:.2f}x "
            f"| {100 * r['transcripts_equal']:.1f} % ({r['agreement_utterances']}) "
            f"| {100 * r['wer_pytorch']:.2f} % | {100 * r['wer_onnxruntime']:.2f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     epilog="See the module docstring: " + __file__)
    parser.add_argument("--corpus", type=Path, required=True,
                        help="the corpus the runs were trained on (make demo: demo_out/corpus)")
    parser.add_argument("--encoders", type=_csv(str),
                        default=["lstm", "convrnnt", "contextnet", "conformer"],
                        help=f"comma-separated, from: {', '.join(ENCODERS)}")
    parser.add_argument("--seeds", type=_csv(int), default=[0, 1])
    parser.add_argument("--size", choices=SIZES, default="demo")
    parser.add_argument("--results", type=Path, default=ENCODER_RESULTS,
                        help="encoders.py's results file: where each run's checkpoint is "
                        "(its run_dir; default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="default: %(default)s")
    parser.add_argument("--chunk-ms", type=int, default=160)
    parser.add_argument("--rtf-seconds", type=float, default=30.0,
                        help="test speech timed (encoders.py's rtf_1thread uses the same)")
    parser.add_argument("--rtf-runs", type=int, default=5,
                        help="timed passes per runtime, alternating (after a warm-up)")
    parser.add_argument("--agreement-utterances", type=int, default=200,
                        help="test utterances transcribed by both runtimes")
    args = parser.parse_args(argv)
    unknown = [e for e in args.encoders if e not in ENCODERS]
    if unknown:
        parser.error(f"unknown encoder {', '.join(unknown)}; known: {', '.join(ENCODERS)}")
    if args.rtf_runs < 1 or args.agreement_utterances < 0:
        parser.error("--rtf-runs must be >= 1 and --agreement-utterances >= 0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    protocol: dict[str, object] = {
        "rtf": f"1 thread, streaming greedy, {args.chunk_ms} ms chunks, first "
               f"{args.rtf_seconds} s of test speech, median of {args.rtf_runs} passes per "
               "runtime, alternating PyTorch / onnxruntime after one warm-up pass each",
        "export": "fairstream export, fp32, CMVN folded in, frame repeat 3",
        "agreement": f"first {args.agreement_utterances} test utterances in id order",
        "load_average_before": list(os.getloadavg()),
    }
    trained = {(r["encoder"], r["size"], int(r["seed"])): Path(r["run_dir"])
               for r in load_results(args.results)["runs"] if r.get("run_dir")}
    pairs = [(e, s) for e in args.encoders for s in args.seeds]
    missing = [f"{e} seed {s}" for e, s in pairs if (e, args.size, s) not in trained]
    if missing:
        print(f"skipped (no {args.size} run in {args.results}): {', '.join(missing)}",
              flush=True)
    pairs = [(e, s) for e, s in pairs if (e, args.size, s) in trained]
    if not pairs:
        raise SystemExit(f"nothing to measure: no run of {', '.join(args.encoders)} at seeds "
                         f"{', '.join(map(str, args.seeds))} ({args.size}) in {args.results}")
    rows = []
    for i, (enc, seed) in enumerate(pairs, 1):
        print(f"[{i}/{len(pairs)}] {enc} ({args.size}, seed {seed})", flush=True)
        rows.append(measure_one(args.corpus, trained[(enc, args.size, seed)], enc, args.size,
                                seed, args.chunk_ms, args.rtf_seconds, args.rtf_runs,
                                args.agreement_utterances))
    protocol["load_average_after"] = list(os.getloadavg())
    merge_rows(args.out, rows, protocol)
    print(format_table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
