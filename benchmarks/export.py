"""PyTorch streaming greedy vs. the ONNX export in onnxruntime (our loop) and sherpa-onnx.

Decodes the corpus's test split (or its first ``--limit`` utterances in id order) with:

* ``pytorch`` fp32: :class:`~fairstream.decoding.streaming.StreamingRecognizer`, greedy
  search with ``--max-symbols`` tokens per encoder frame (the reference);
* ``onnxruntime`` fp32 and int8: :class:`~fairstream.export.OnnxStreamingRecognizer` on the
  export and on its dynamically quantized copy;
* ``sherpa-onnx`` fp32 and int8: ``sherpa_onnx.OnlineRecognizer`` (greedy search) on the same
  files, with our feature settings.

All on one thread, the same audio, fed in chunks of ``--chunk-ms``. RTF is decoding time
(features included, audio loading not) over audio duration; WER is a fraction (Σerrors /
Σreference words on normalized text); agreement is the share of utterances whose
transcript equals the PyTorch one. Writes ``benchmarks/results/export.json``:
``{"runtimes": [{"runtime", "precision", "rtf_1thread", "wer", "agreement"}, ...]}``.
``--runtimes`` runs only some rows (the PyTorch reference always runs, agreement needs it)
and merges them into an existing results file, keeping its other rows.

Usage:
    python benchmarks/export.py --checkpoint demo_out/exp/averaged.pt \\
        --corpus demo_out/corpus --limit 400
    python benchmarks/export.py ... --runtimes sherpa-onnx/fp32,sherpa-onnx/int8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fairstream._io import atomic_write_text
from fairstream.data.corpus import load_corpus
from fairstream.data.text import normalize
from fairstream.decoding.streaming import StreamingRecognizer
from fairstream.export import (
    OnnxStreamingRecognizer,
    export_transducer,
    quantize_int8,
    read_export_info,
    sherpa_recognizer,
    sherpa_transcribe,
)
from fairstream.inference import cut_audio, load_transducer
from fairstream.metrics.wer import ErrorCounts, score_pairs

RESULTS = Path(__file__).parent / "results" / "export.json"
ROWS = ("pytorch/fp32", "onnxruntime/fp32", "onnxruntime/int8", "sherpa-onnx/fp32",
        "sherpa-onnx/int8")


def _selected(value: str | None) -> list[str]:
    """Rows named by ``--runtimes`` (``runtime/precision``, comma-separated), the PyTorch
    reference first; all rows without it."""
    if value is None:
        return list(ROWS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ROWS]
    if bad:
        raise SystemExit(f"--runtimes: unknown {', '.join(bad)} (choose from {', '.join(ROWS)})")
    return [r for r in ROWS if r == ROWS[0] or r in names]


def _merge(path: Path, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` replacing the same runtime/precision rows of the results in ``path``, in
    :data:`ROWS` order; the file's other rows are kept."""
    old = json.loads(path.read_text())["runtimes"] if path.is_file() else []
    by_name = {f"{r['runtime']}/{r['precision']}": r for r in old + rows}
    return sorted(by_name.values(), key=lambda r: ROWS.index(f"{r['runtime']}/{r['precision']}"))


def _run(name: str, audios: list[np.ndarray], fn: Callable[[np.ndarray], str]
         ) -> tuple[list[str], float]:
    """Transcripts (normalized) and total decoding seconds of ``fn`` over ``audios``."""
    texts = []
    start = time.perf_counter()
    for audio in audios:
        texts.append(normalize(fn(audio)))
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s", flush=True)
    return texts, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances by id")
    parser.add_argument("--chunk-ms", type=int, default=160)
    parser.add_argument("--max-symbols", type=int, default=3,
                        help="PyTorch greedy tokens per encoder frame")
    parser.add_argument("--frame-repeat", type=int, default=None,
                        help="export's frame repeat (default 3, our greedy's symbol limit)")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="keep the export here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--runtimes", default=None,
                        help="comma-separated rows to run, e.g. sherpa-onnx/fp32,sherpa-onnx/int8 "
                             f"(of {', '.join(ROWS)}; pytorch/fp32 always runs); the rows are "
                             "merged into --out")
    args = parser.parse_args()
    selected = _selected(args.runtimes)

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    loaded = load_transducer(args.checkpoint)
    cuts = sorted(load_corpus(args.corpus).cuts(args.split), key=lambda c: c.id)
    cuts = cuts[: args.limit] if args.limit else cuts
    refs = [normalize(c.supervisions[0].text) for c in cuts]
    rec = StreamingRecognizer(loaded.model, loaded.tokenizer, loaded.cmvn,
                              chunk_ms=args.chunk_ms, max_symbols_per_frame=args.max_symbols)
    rate = rec.fbank_config.sample_rate
    audios = [cut_audio(c, rate) for c in cuts]
    duration = sum(len(a) for a in audios) / rate
    step = rate * args.chunk_ms // 1000
    print(f"{len(cuts)} utterances, {duration:.0f} s of audio", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.export_dir or Path(tmp)
        export_transducer(loaded.model, loaded.tokenizer, loaded.cmvn, out,
                          chunk_ms=args.chunk_ms, frame_repeat=args.frame_repeat)
        if any(r.endswith("/int8") for r in selected):
            quantize_int8(out)
        info = read_export_info(out / "encoder.onnx")
        print(f"export: chunk {info.chunk_frames} frames, subsampling {info.subsampling}, "
              f"frame repeat {info.frame_repeat}", flush=True)

        def pytorch(audio: np.ndarray) -> str:
            rec.reset()
            for i in range(0, len(audio), step):
                rec.accept(audio[i:i + step])
            return rec.finish().text

        runs: list[tuple[str, str, Callable[[np.ndarray], str]]] = [
            ("pytorch", "fp32", pytorch)]
        for precision, int8 in (("fp32", False), ("int8", True)):
            if f"onnxruntime/{precision}" in selected:
                ours = OnnxStreamingRecognizer(out, int8=int8, num_threads=1)
                runs.append(("onnxruntime", precision,
                             lambda a, r=ours: r.transcribe(a, step=step)))
        for precision, int8 in (("fp32", False), ("int8", True)):
            if f"sherpa-onnx/{precision}" in selected:
                sherpa = sherpa_recognizer(out, int8=int8, num_threads=1)
                runs.append(("sherpa-onnx", precision,
                             lambda a, r=sherpa: sherpa_transcribe(r, info, a)))

        rows: list[dict[str, object]] = []
        reference: list[str] = []
        for runtime, precision, fn in runs:
            hyps, seconds = _run(f"{runtime} {precision}", audios, fn)
            if not reference:
                reference = hyps
            counts = score_pairs(refs, hyps, normalized=True)
            total = ErrorCounts(sum(c.substitutions for c in counts),
                                sum(c.deletions for c in counts),
                                sum(c.insertions for c in counts), sum(c.hits for c in counts))
            rows.append({
                "runtime": runtime, "precision": precision,
                "rtf_1thread": round(seconds / duration, 4),
                "wer": round(total.wer, 5),
                "agreement": round(float(np.mean([h == r for h, r in zip(hyps, reference)])),
                                   4),
            })
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.runtimes is not None:
        rows = _merge(args.out, rows)
    atomic_write_text(args.out, json.dumps({"runtimes": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
