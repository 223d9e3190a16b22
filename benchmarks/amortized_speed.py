"""Does skipping show up on a clock? Encoder wall-clock and FLOPs of the gated Transformer at
forced gate rates, against the same Transformer without gates, on one thread.

The arbitrators of a trained model decide which frames skip; what skipping *saves* depends
only on how many do. So this benchmark fixes the share of gated-on frames directly: each
arbitrator's output layer is set so that a random ``rate`` share of frames turns each
sub-block on (independently per block and sub-block, from the frame's input), and measures,
in the same run, on the recipe's encoder size (``transformer_transducer.yaml``):

* ``flops``: FLOPs of the encoder's full pass (``torch.utils.flop_counter``, 2 × MACs) on the
  same input, and the share of the ungated model's;
* ``offline_ms``: wall-clock of the full pass over a batch (``--batch`` utterances of
  ``--seconds`` of audio each), median of ``--runs``;
* ``stream_ms``: wall-clock of streaming one utterance at batch 1 in chunks of
  ``--chunk-ms`` (160 ms: 2 encoder frames at subsampling 8), median of ``--runs``;

the models timed in turn within each run (interleaved), so that the machine changing speed
during the benchmark affects them alike;

each also as a ratio to the ungated model. At ``rate = 1`` the gated model runs every
sub-block, plus its arbitrators and the gather/scatter: its overhead. Features are random
(the encoder's cost does not depend on them). Writes ``benchmarks/results/amortized_speed.json``
and prints a table.

    .venv/bin/python benchmarks/amortized_speed.py [--rates 1,0.6,0.4,0.2,0] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairstream._io import atomic_write_text  # noqa: E402
from fairstream.models.encoders.transformer import TransformerEncoder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "amortized_speed.json"
RECIPE = ROOT / "src" / "fairstream" / "recipes" / "transformer_transducer.yaml"


def encoder_options() -> dict[str, Any]:
    """The recipe's encoder options."""
    import yaml

    return dict(yaml.safe_load(RECIPE.read_text())["model"]["encoder"]["kwargs"])


def _arbitrator_layers(enc: TransformerEncoder) -> list[tuple[torch.nn.Linear, torch.nn.Linear,
                                                                torch.nn.Module]]:
    out = []
    for block in enc._blocks():
        assert block.arbitrator is not None
        first, relu, last = block.arbitrator[0], block.arbitrator[1], block.arbitrator[2]
        assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
        out.append((first, last, relu))
    return out


def calibrate(enc: TransformerEncoder, x: torch.Tensor, lens: torch.Tensor, rate: float,
              seed: int = 0) -> float:
    """Arbitrators whose gates are on for ``rate`` of the frames of ``x``: each gate's logit
    is a random projection z of the frame (two hidden units, relu(z) − relu(−z) = z),
    thresholded at its ``1 - rate`` quantile on ``x``, layer by layer (a layer's thresholds
    change the next layer's inputs). Returns the measured on-rate."""
    g = torch.Generator().manual_seed(seed)
    layers = _arbitrator_layers(enc)
    with torch.no_grad():
        for first, last, _ in layers:
            d = first.weight.shape[1]
            first.weight.zero_()
            first.bias.zero_()
            last.weight.zero_()
            for gate in (0, 1):
                row = torch.randn(d, generator=g) / d ** 0.5
                first.weight[2 * gate] = row
                first.weight[2 * gate + 1] = -row
                last.weight[gate, 2 * gate], last.weight[gate, 2 * gate + 1] = 1.0, -1.0
            last.bias.fill_(1e6 if rate >= 1.0 else -1e6 if rate <= 0.0 else 0.0)
    if 0.0 < rate < 1.0:
        for _, last, _ in layers:
            store: list[torch.Tensor] = []
            hook = last.register_forward_hook(
                lambda _m, _i, out, store=store: store.append(out.detach()))
            enc.sparse_inference = False
            with torch.no_grad():
                enc(x, lens)
            enc.sparse_inference = True
            hook.remove()
            z = store[0].reshape(-1, 2) - last.bias.detach()
            with torch.no_grad():
                for gate in (0, 1):
                    last.bias[gate] = -float(torch.quantile(z[:, gate], 1.0 - rate))
    with torch.no_grad():
        out = enc(x, lens)
    return float((out.stats["att_rate"] + out.stats["ffn_rate"]) / 2)


def flops(enc: TransformerEncoder, x: torch.Tensor, lens: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc(x, lens)
    return int(counter.get_total_flops())


def time_offline(enc: TransformerEncoder, x: torch.Tensor, lens: torch.Tensor) -> float:
    """Seconds of one full pass."""
    with torch.no_grad():
        t0 = time.perf_counter()
        enc(x, lens)
        return time.perf_counter() - t0


def time_stream(enc: TransformerEncoder, x: torch.Tensor, chunk: int) -> float:
    """Seconds of streaming ``x`` (batch 1) in chunks of ``chunk`` frames, once."""
    with torch.no_grad():
        state = None
        t0 = time.perf_counter()
        for s in range(0, x.shape[1], chunk):
            part = x[:, s:s + chunk]
            _, _, state = enc.stream(part, torch.tensor([part.shape[1]]), state)
        return time.perf_counter() - t0


def interleaved_ms(models: list[TransformerEncoder], x: torch.Tensor, lens: torch.Tensor,
                   chunk: int, runs: int) -> list[tuple[float, float]]:
    """(offline, streaming) median milliseconds of each model, the models timed in turn
    within every run (after one warm-up run), so a change of machine speed during the
    benchmark hits every model alike."""
    offline: list[list[float]] = [[] for _ in models]
    stream: list[list[float]] = [[] for _ in models]
    for r in range(runs + 1):
        for i, enc in enumerate(models):
            a, b = time_offline(enc, x, lens), time_stream(enc, x[:1], chunk)
            if r:
                offline[i].append(a)
                stream[i].append(b)
    return [(1000 * statistics.median(o), 1000 * statistics.median(s))
            for o, s in zip(offline, stream, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1,0.6,0.4,0.2,0")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--chunk-ms", type=int, default=160)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    opts = encoder_options()
    frames = int(args.seconds * 100)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, frames, 80, generator=g)
    lens = torch.full((args.batch,), frames)
    chunk = args.chunk_ms // 10
    torch.manual_seed(0)
    dense = TransformerEncoder(80, **{**opts, "gated": False}).eval()
    rates = [float(r) for r in args.rates.split(",")]
    gated, measured = [], []
    for rate in rates:
        torch.manual_seed(0)
        enc = TransformerEncoder(80, **{**opts, "gated": True}).eval()
        measured.append(calibrate(enc, x, lens, rate))
        gated.append(enc)
    times = interleaved_ms([dense, *gated], x, lens, chunk, args.runs)
    base = {"flops": flops(dense, x, lens), "offline_ms": times[0][0],
            "stream_ms": times[0][1]}
    rows: list[dict[str, Any]] = [{"model": "ungated", "rate": None, **base,
                                   "flops_ratio": 1.0, "offline_ratio": 1.0,
                                   "stream_ratio": 1.0}]
    for rate, got, enc, (off_ms, st_ms) in zip(rates, measured, gated, times[1:],
                                               strict=True):
        row = {"model": "gated", "rate": rate, "measured_rate": round(got, 4),
               "flops": flops(enc, x, lens), "offline_ms": off_ms, "stream_ms": st_ms}
        for key, ratio in (("flops", "flops_ratio"), ("offline_ms", "offline_ratio"),
                           ("stream_ms", "stream_ratio")):
            row[ratio] = round(row[key] / base[key], 4)
        rows.append(row)
    data = {"encoder": opts, "batch": args.batch, "seconds": args.seconds,
            "chunk_ms": args.chunk_ms, "runs": args.runs, "threads": 1,
            "machine": platform.processor() or platform.machine(), "rows": rows,
            "command": "benchmarks/amortized_speed.py " + " ".join(argv or sys.argv[1:])}
    atomic_write_text(Path(args.out), json.dumps(data, indent=1))
    print("| model | gate-on share | FLOPs (share) | offline batch (ms, share) | "
          "streaming batch 1 (ms, share) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        share = "—" if r["rate"] is None else f"{r['measured_rate']:.2f}"
        print(f"| {r['model']} | {share} | {r['flops'] / 1e9:.2f} G ({r['flops_ratio']:.2f}) | "
              f"{r['offline_ms']:.0f} ({r['offline_ratio']:.2f}) | "
              f"{r['stream_ms']:.0f} ({r['stream_ratio']:.2f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
