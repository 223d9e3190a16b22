"""RNN-T loss benchmark: forward + backward time and extra peak memory on CPU.

Implementations, each measured in its own fresh subprocess:

* ``fairstream``: :func:`fairstream.losses.rnnt_loss` (chunked log-softmax, gradient formed once);
* ``plain_dp``: plain PyTorch autograd — full ``log_softmax``, gather, ``logcumsumexp`` over U in
  a loop over T, gradient by autograd;
* ``warprnnt_numba``: ``warprnnt_numba.RNNTLossNumba`` on CPU (each run takes seconds).

Time: median wall-clock time of forward + ``backward()``, over ``--runs`` runs after one warm-up
run, and the median CPU time of the process over the same runs (all threads, user + system;
less sensitive than wall time to other jobs on a shared machine, but it also counts threads
spinning while they wait). warprnnt-numba is slow, so it gets ``--warp-runs`` timed runs
(default 1) after its warm-up run; that first, cold run (any one-time set-up, such as numba
compilation, included) is reported separately as ``first_run_s``. ``--warp-runs 0`` times only
the cold run, as earlier versions of this script did. (warprnnt-numba 0.4.1 compiles numba
kernels for CUDA only; its CPU loss is a Python loop over the lattice, so cold and warm runs
take about the same time.)

Extra peak memory: in the fresh subprocess the inputs are created and one warm-up forward +
backward runs; then the kernel's peak-RSS counter is reset (``/proc/self/clear_refs`` ← 5),
the current resident set size is the baseline, one more forward + backward runs and the peak
RSS (``VmHWM``) minus the baseline is the extra peak. The gradient that lands in
``logits.grad`` is counted (it is part of what a loss must produce); the logits themselves are
in the baseline. Python's tracemalloc does not see torch's allocator, and large torch buffers
are returned to the OS when freed, so RSS follows the allocator closely. warprnnt-numba is
measured the same way on its first warm run (which is also its first timed run); its cold run's
peak (``ru_maxrss``, compilation included) is reported as ``cold_extra_peak_bytes``.

The extra row ``fairstream, THP_MEM_ALLOC_ENABLE=1`` runs ours with PyTorch's switch that
backs large CPU tensors with transparent huge pages (fewer page faults when the gradient buffer
is first written); everything else runs with the default environment.

Usage::

    nice -n 5 .venv/bin/python benchmarks/rnnt_loss.py [--runs 7] [--warp-runs 1] [--skip-warp]

Writes ``benchmarks/results/rnnt_loss.json`` (atomically) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairstream._io import atomic_write_text

if TYPE_CHECKING:
    from torch import Tensor

    LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

B, T, U, V = 16, 100, 40, 500
THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "rnnt_loss.json"
IMPLEMENTATIONS = ("fairstream", "fairstream_thp", "plain_dp", "warprnnt_numba")
LABELS = {
    "fairstream": "fairstream rnnt_loss",
    "fairstream_thp": "fairstream rnnt_loss, THP_MEM_ALLOC_ENABLE=1",
    "plain_dp": "plain autograd DP (log_softmax + logcumsumexp over U, loop over T)",
    "warprnnt_numba": "warprnnt-numba 0.4.1 (CPU)",
}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise SystemExit(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _plain_dp(logits: Tensor, targets: Tensor, logit_lens: Tensor, target_lens: Tensor,
              blank: int = 0) -> Tensor:
    """Reference RNN-T loss (mean over utterances) in plain autograd PyTorch."""
    import torch

    batch, max_t, max_u1, _ = logits.shape
    log_probs = logits.log_softmax(-1)
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    idx = targets.unsqueeze(1).expand(batch, max_t, max_u1 - 1).unsqueeze(-1)
    label_lp = log_probs[:, :, :-1].gather(3, idx).squeeze(-1)  # (B, T, U)
    cum = torch.cat([label_lp.new_zeros(batch, max_t, 1), label_lp.cumsum(-1)], dim=-1)
    arrive = torch.full((batch, max_u1), float("-inf"), dtype=logits.dtype)
    arrive[:, 0] = 0.0
    rows: list[Tensor] = []
    for t in range(max_t):
        if t > 0:
            arrive = rows[-1] + blank_lp[:, t - 1]
        rows.append(torch.logcumsumexp(arrive - cum[:, t], dim=-1) + cum[:, t])
    alpha = torch.stack(rows, dim=1)
    b = torch.arange(batch)
    log_like = alpha[b, logit_lens - 1, target_lens] + blank_lp[b, logit_lens - 1, target_lens]
    return -log_like.mean()


def _worker(name: str, runs: int, warp_runs: int) -> dict[str, Any]:  # Any: JSON result
    """Measure one implementation in this (fresh) process."""
    import torch

    torch.set_num_threads(THREADS)
    loss_fn: LossFn
    if name in ("fairstream", "fairstream_thp"):
        from fairstream.losses import rnnt_loss

        def loss_fn(x: Tensor, y: Tensor, tl: Tensor, ul: Tensor) -> Tensor:
            return rnnt_loss(x, y, tl, ul, reduction="mean")
    elif name == "plain_dp":
        loss_fn = _plain_dp
    elif name == "warprnnt_numba":
        from warprnnt_numba import RNNTLossNumba

        warp = RNNTLossNumba(blank=0, reduction="mean")

        def loss_fn(x: Tensor, y: Tensor, tl: Tensor, ul: Tensor) -> Tensor:
            loss: Tensor = warp(x, y.int(), tl.int(), ul.int()).reshape(())
            return loss
    else:
        raise SystemExit(f"unknown implementation {name!r}")

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, U + 1, V, generator=gen).requires_grad_(True)
    targets = torch.randint(1, V, (B, U), generator=gen)
    logit_lens = torch.full((B,), T, dtype=torch.int64)
    target_lens = torch.full((B,), U, dtype=torch.int64)

    cpu_times: list[float] = []

    def one_run() -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_fn(logits, targets, logit_lens, target_lens)
        loss.backward()
        cpu_times.append(time.process_time() - cpu_start)
        return time.perf_counter() - start, float(loss.detach())

    def grad_abs_sum() -> float:
        # read only after the memory reading: .abs() makes a logits-sized temporary
        assert logits.grad is not None
        value = float(logits.grad.abs().sum())
        logits.grad = None
        return value

    cold_extra_peak: int | None = None
    if name == "warprnnt_numba":
        baseline = _status_bytes("VmRSS")
        first, loss_value = one_run()
        cold_extra_peak = _peak_rss_bytes() - baseline
        grad_sum_abs = grad_abs_sum()
        extra_peak, times = cold_extra_peak, [first]
        memory_method = "ru_maxrss over a single cold run"
        if warp_runs > 0:
            cpu_times.clear()
            times = []
            if _reset_peak_rss():
                baseline = _status_bytes("VmRSS")
                times.append(one_run()[0])
                extra_peak = _status_bytes("VmHWM") - baseline
                memory_method = "VmHWM after clear_refs, first warm run"
            logits.grad = None
            while len(times) < warp_runs:
                times.append(one_run()[0])
                logits.grad = None
    else:
        first, loss_value = one_run()
        grad_sum_abs = grad_abs_sum()
        if _reset_peak_rss():
            baseline = _status_bytes("VmRSS")
            one_run()
            extra_peak = _status_bytes("VmHWM") - baseline
            memory_method = "VmHWM after clear_refs, second run"
        else:  # no clear_refs on this kernel
            baseline, extra_peak, memory_method = 0, -1, "unavailable"
        logits.grad = None
        times = []
        cpu_times.clear()
        for _ in range(runs):
            times.append(one_run()[0])
            logits.grad = None
    return {
        "name": name,
        "label": LABELS[name],
        "median_s": statistics.median(times),
        "median_cpu_s": statistics.median(cpu_times),
        "times_s": times,
        "first_run_s": first,
        "extra_peak_bytes": extra_peak,
        "baseline_rss_bytes": baseline,
        "memory_method": memory_method,
        "cold_extra_peak_bytes": cold_extra_peak,
        "loss": loss_value,
        "grad_abs_sum": grad_sum_abs,
    }


def _run_worker(name: str, runs: int, warp_runs: int) -> dict[str, Any]:  # Any: JSON result
    env = dict(os.environ, NUMBA_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if name == "fairstream_thp":
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--runs", str(runs),
         "--warp-runs", str(warp_runs)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs (median reported)")
    parser.add_argument("--warp-runs", type=int, default=1,
                        help="timed warm runs of warprnnt-numba after its cold first run "
                        "(0: time the cold run only)")
    parser.add_argument("--skip-warp", action="store_true", help="leave out warprnnt-numba")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.runs, args.warp_runs)))
        return

    load_at_start = os.getloadavg()[0]
    names = [n for n in IMPLEMENTATIONS if not (args.skip_warp and n == "warprnnt_numba")]
    logits_bytes = B * T * (U + 1) * V * 4
    results = [_run_worker(name, args.runs, args.warp_runs) for name in names]
    ours = results[0]
    for r in results:
        r["extra_peak_x_logits"] = r["extra_peak_bytes"] / logits_bytes
        r["loss_abs_diff_vs_fairstream"] = abs(r["loss"] - ours["loss"])
        r["grad_abs_sum_rel_diff_vs_fairstream"] = abs(
            r["grad_abs_sum"] / ours["grad_abs_sum"] - 1.0
        )

    mib = 2.0**20
    header = ("| implementation | median fwd+bwd (wall) | first run (cold) | CPU time "
              "| extra peak memory | loss |")
    print(f"RNN-T loss, B={B} T={T} U={U} V={V} float32, logits {logits_bytes / mib:.1f} MiB, "
          f"{THREADS} threads")  # fmt: skip
    print(header)
    print("|---|---|---|---|---|---|")
    for r in results:
        runs = len(r["times_s"])
        print(
            f"| {r['label']} | {r['median_s']:.3f} s ({runs} run{'s' * (runs > 1)}) "
            f"| {r['first_run_s']:.3f} s "
            f"| {r['median_cpu_s']:.3f} s "
            f"| {r['extra_peak_bytes'] / mib:.0f} MiB ({r['extra_peak_x_logits']:.2f}× logits) "
            f"| {r['loss']:.4f} |"
        )
    import torch

    payload = {
        "benchmark": "rnnt_loss",
        "shape": {"B": B, "T": T, "U": U, "V": V, "dtype": "float32"},
        "logits_bytes": logits_bytes,
        "threads": THREADS,
        "timed_runs": args.runs,
        "warp_timed_runs": args.warp_runs,
        "load_average_1min_at_start": load_at_start,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "method": {
            "time": "median wall-clock of forward+backward after one warm-up run "
            + ("(warprnnt-numba: its warm runs; first_run_s is its cold run, one-time "
               "set-up included)" if args.warp_runs > 0
               else "(warprnnt-numba: a single cold run, one-time set-up included)"),
            "memory": "fresh subprocess per implementation; after a warm-up run the peak RSS "
            "is reset (/proc/self/clear_refs 5) and VmHWM minus VmRSS before one more "
            "forward+backward is the extra peak (warprnnt-numba: ru_maxrss over its single "
            "cold run minus VmRSS after creating the inputs, when it has no warm runs); "
            "includes the gradient stored in logits.grad",
        },
        "results": results,
    }
    atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
