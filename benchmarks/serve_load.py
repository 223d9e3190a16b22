"""Load test of ``fairstream serve``: N concurrent real-time streams on loopback.

Starts the server as a subprocess on 127.0.0.1 (a free port, endpointing off, torch on one
thread) and, for each level N, opens N WebSocket clients at once; each streams one real test
utterance of ``--corpus`` (utterances taken in id order, reused round-robin) in 100 ms
messages at real-time pace, then ``Done``. Reported per level:

* ``p50_ms`` / ``p95_ms``: latency from a chunk's arrival to its partial result, measured at
  the client: from sending the message that completes model chunk k (chunk k needs
  ``((k + 1) * chunk_frames - 1) * 160 + 400`` samples: the 25 ms analysis window of its last
  feature frame) to receiving result k;
* ``rtf``: the server's CPU time (``process_cpu_seconds_total`` from ``/metrics``) over the
  audio seconds it processed during the level;
* ``errors``: streams that failed to connect, closed with a code other than 1000 or returned
  no final result.

Bounded: at most ``--max-streams`` clients, each level stops after the longest utterance
plus ``--timeout`` seconds, and the server is stopped at the end. Traffic goes to 127.0.0.1
only.

Usage::

    .venv/bin/python benchmarks/serve_load.py --checkpoint demo_out/exp/averaged.pt \
        --corpus demo_out/corpus --levels 1 10 50 100

Writes ``benchmarks/results/serve_load.json`` (``levels``: ``streams``, ``p50_ms``,
``p95_ms``, ``rtf``, ``errors``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from fairstream._io import atomic_write_text
from fairstream.serve.client import StreamOutcome, stream_audio

SR = 16000
RESULTS = Path(__file__).parent / "results" / "serve_load.json"


def test_utterances(corpus: Path, count: int) -> list[np.ndarray]:
    from fairstream.data.corpus import load_corpus

    cuts = sorted(load_corpus(corpus).cuts("test"), key=lambda c: c.id)[:count]
    return [c.load_audio()[0].astype(np.float32) for c in cuts]


def chunk_latencies(outcome: StreamOutcome, chunk_frames: int) -> list[float]:
    """Seconds from sending the audio that completes each chunk to receiving its result."""
    out = []
    partials = [m for m in outcome.messages if not m["is_eof"]]
    for k, message in enumerate(partials):
        needed = ((k + 1) * chunk_frames - 1) * 160 + 400
        sent = next((t for n, t in outcome.sent_at if n >= needed), None)
        if sent is not None:
            out.append(message["received"] - sent)
    return out


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"the server's /metrics has no {name}")


async def run_level(url: str, utterances: list[np.ndarray], n: int,
                    timeout: float) -> list[StreamOutcome | BaseException]:
    clients = [stream_audio(url, utterances[i % len(utterances)], message_s=0.1)
               for i in range(n)]
    longest = max(len(utterances[i % len(utterances)]) for i in range(n)) / SR
    tasks = [asyncio.ensure_future(c) for c in clients]
    done, pending = await asyncio.wait(tasks, timeout=longest + timeout)
    for t in pending:
        t.cancel()
    return [t.exception() or t.result() if t in done else TimeoutError("level timed out")
            for t in tasks]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True,
                        help="corpus whose test utterances the clients stream")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--chunk-ms", type=int, default=160)
    parser.add_argument("--max-streams", type=int, default=200,
                        help="upper bound on any level (the test stays bounded)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a level may run beyond its longest utterance")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if max(args.levels) > args.max_streams:
        parser.error(f"levels above --max-streams {args.max_streams}")
    utterances = test_utterances(args.corpus, min(max(args.levels), 50))
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "fairstream", "serve", "--checkpoint", str(args.checkpoint),
         "--port", str(port), "--chunk-ms", str(args.chunk_ms), "--no-endpoint",
         "--max-streams", str(args.max_streams), "--threads", "1"], env=env)
    levels: list[dict[str, Any]] = []  # Any: JSON values
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                metric(port, "fairstream_active_streams")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        chunk_frames = args.chunk_ms // 10
        for n in args.levels:
            cpu0 = metric(port, "process_cpu_seconds_total")
            audio0 = metric(port, "fairstream_audio_seconds_total")
            outcomes = asyncio.run(run_level(f"ws://127.0.0.1:{port}", utterances, n,
                                             args.timeout))
            cpu = metric(port, "process_cpu_seconds_total") - cpu0
            audio = metric(port, "fairstream_audio_seconds_total") - audio0
            lat: list[float] = []
            errors = 0
            for o in outcomes:
                if (isinstance(o, BaseException) or o.close_code != 1000
                        or not o.messages or not o.messages[-1]["is_eof"]):
                    errors += 1
                else:
                    lat.extend(chunk_latencies(o, chunk_frames))
            row = {
                "streams": n,
                "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1) if lat else None,
                "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1) if lat else None,
                "rtf": round(cpu / audio, 4) if audio else None,
                "errors": errors,
            }
            levels.append(row)
            print(f"{n:5d} streams  p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms  "
                  f"rtf {row['rtf']}  errors {errors}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"levels": levels}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
