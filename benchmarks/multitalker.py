"""Separator-transducer-segmenter against the multi-turn RNN-T, on mixed two-speaker sessions.

Three systems, each trained ``--steps`` optimizer steps from the same single-talker checkpoint
(``--init``, by default the demo's model) on the same sessions in the same order (the seed),
at ``--seeds``:

* ``sts``: 2 channels, the end-of-turn latency penalty ``--eot-weight``;
* ``sts_no_latency_penalty``: 2 channels, no penalty;
* ``mt_rnnt``: 1 channel, every turn serialized (the MT-RNN-T baseline), same penalty as
  ``sts``, same encoder, predictor and joiner (the separator is its only difference in size).

Each is decoded greedily on the test sessions (streaming, 160 ms chunks: the same result as
offline) and scored (:mod:`fairstream.multitalker.decode`): ``cpwer``, ``orc_wer``,
``turn_count_acc``, ``eot_latency_ms_p50`` / ``_p90``, each WER and accuracy with a
session-bootstrap 95 % interval; ``orc_wer`` and ``turn_count_acc`` also on the sessions with
overlap alone; ``rtf_1thread``: streaming decode time over audio time on one thread. Paired
session-bootstrap differences of ``sts`` against ``mt_rnnt`` (same seed, same sessions) are
under ``comparisons``.

Writes ``benchmarks/results/multitalker.json`` (``systems``: one object per system and seed
plus the seed means; ``comparisons``) and prints a table. Mixing, training and decoding
resume.

    .venv/bin/python benchmarks/multitalker.py --corpus demo_out/corpus \\
        --init demo_out/exp/averaged.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairstream._io import atomic_write_text  # noqa: E402
from fairstream._threads import torch_threads  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "multitalker.json"
RECIPE = ROOT / "src" / "fairstream" / "recipes" / "lstm_transducer.yaml"
SYSTEMS = {  # name -> (channels, latency penalty on)
    "sts": (2, True),
    "sts_no_latency_penalty": (2, False),
    "mt_rnnt": (1, True),
}
log = logging.getLogger("benchmarks.multitalker")
Record = dict[str, Any]  # Any: JSON data


def session_interval(rows: Sequence[Record], num: str, den: str | None, n_boot: int,
                     seed: int = 0) -> list[float]:
    """95 % interval of Σnum / Σden (or the mean of ``num`` without ``den``) over sessions
    resampled with replacement."""
    x = np.asarray([float(r[num]) for r in rows])
    y = np.asarray([float(r[den]) for r in rows]) if den else np.ones(len(rows))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), size=(n_boot, len(rows)))
    reps = x[idx].sum(axis=1) / np.maximum(y[idx].sum(axis=1), 1e-12)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return [float(lo), float(hi)]


def paired(rows_a: Sequence[Record], rows_b: Sequence[Record], num: str, den: str | None,
           n_boot: int) -> tuple[float, list[float]]:
    """Difference a − b of Σnum/Σden on the same sessions, paired bootstrap interval."""
    b_by = {r["session_id"]: r for r in rows_b}
    both = [(r, b_by[r["session_id"]]) for r in rows_a if r["session_id"] in b_by]
    xa = np.asarray([float(a[num]) for a, _ in both])
    xb = np.asarray([float(b[num]) for _, b in both])
    y = np.asarray([float(a[den]) for a, _ in both]) if den else np.ones(len(both))
    diff = float(xa.sum() / y.sum() - xb.sum() / y.sum())
    idx = np.random.default_rng(0).integers(0, len(both), size=(n_boot, len(both)))
    reps = (xa[idx].sum(1) - xb[idx].sum(1)) / np.maximum(y[idx].sum(1), 1e-12)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return diff, [float(lo), float(hi)]


def run_system(a: argparse.Namespace, mix: Path, name: str, seed: int) -> Record:
    from fairstream.metrics.multitalker import read_seglst, write_seglst
    from fairstream.multitalker.decode import decode_sessions, score_sessions
    from fairstream.multitalker.train import load_multitalker, load_sessions, train_multitalker
    from fairstream.training.config import load_config

    channels, penalty = SYSTEMS[name]
    out = a.workdir / f"{name}-seed{seed}"
    cache = out / "scores.json"
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    config = load_config(RECIPE, [f"seed={seed}", f"schedule.max_steps={a.steps}",
                                  f"optim.decay_steps={a.steps}", f"optim.lr={a.lr}",
                                  "optim.warmup_steps=50", "schedule.budget_minutes=null",
                                  "schedule.max_epochs=1000000",
                                  f"data.max_duration={a.max_duration}"])
    result = train_multitalker(config, mix, out, init=a.init, channels=channels,
                               eot_weight=a.eot_weight if penalty else 0.0,
                               progress=a.progress)
    loaded = load_multitalker(result.averaged_checkpoint)
    sessions = load_sessions(mix, "test")
    t0 = time.perf_counter()
    hyp = decode_sessions(loaded, sessions, streaming=True, chunk_ms=160,
                          progress=a.progress)
    rtf = (time.perf_counter() - t0) / sum(s.duration for s in sessions)
    write_seglst(hyp, out / "test.seglst.json")
    ref = read_seglst(mix / "test.seglst.json")
    scores = score_sessions(ref, hyp)
    rows = scores["per_session"]
    overlap = {r["session_id"] for r in _sessions_csv(mix) if float(r["overlap_ratio"]) > 0}
    for r in rows:
        r["turn_ok"] = int(r["ref_turns"] == r["hyp_turns"])
    ov = [r for r in rows if r["session_id"] in overlap]
    record: Record = {
        "system": name, "seed": seed, "channels": channels,
        "eot_weight": a.eot_weight if penalty else 0.0, "steps": result.steps,
        "train_s": result.elapsed_s,
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "cpwer": scores["cpwer"],
        "cpwer_ci": session_interval(rows, "cp_errors", "ref_words", a.bootstrap),
        "orc_wer": scores["orc_wer"],
        "orc_wer_ci": session_interval(rows, "orc_errors", "ref_words", a.bootstrap),
        "turn_count_acc": scores["turn_count_acc"],
        "turn_count_acc_ci": session_interval(rows, "turn_ok", None, a.bootstrap),
        "orc_wer_overlapped": (sum(r["orc_errors"] for r in ov)
                               / max(sum(r["ref_words"] for r in ov), 1)) if ov else None,
        "turn_count_acc_overlapped": (sum(r["turn_ok"] for r in ov) / len(ov)) if ov else None,
        "overlapped_sessions": len(ov),
        "eot_latency_ms_p50": scores["eot_latency_ms_p50"],
        "eot_latency_ms_p90": scores["eot_latency_ms_p90"],
        "eot_turns_timed": scores["eot_turns_timed"],
        "rtf_1thread": rtf, "sessions": scores["sessions"], "per_session": rows,
        "run_dir": str(out),
    }
    atomic_write_text(cache, json.dumps(record, indent=1) + "\n")
    return record


def plot(doc: Record, path: Path) -> Path:
    """Three panels per system and seed: ORC-WER (all and overlapped sessions), turn-counting
    accuracy (same), and the ``<eot>`` latency p50 / p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fairstream._io import atomic_path

    runs = [r for r in doc["systems"] if r["seed"] != "mean"]
    names = list(dict.fromkeys(r["system"] for r in runs))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in ((axes[0], "orc_wer", "ORC-WER % (test)"),
                           (axes[1], "turn_count_acc", "turn-counting accuracy %")):
        for k, (suffix, marker, what) in enumerate((("", "o", "all sessions"),
                                                    ("_overlapped", "s", "overlapped"))):
            for i, name in enumerate(names):
                rs = [r for r in runs if r["system"] == name]
                for j, r in enumerate(rs):
                    v, ci = r.get(key + suffix), r.get(key + suffix + "_ci")
                    if v is None:
                        continue
                    x = i + 0.2 * k + 0.08 * j - 0.14
                    yerr = ([[100 * (v - ci[0])], [100 * (ci[1] - v)]] if ci else None)
                    ax.errorbar([x], [100 * v], yerr=yerr, marker=marker, capsize=3,
                                color=f"C{k}", label=what if i == 0 and j == 0 else None)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for i, name in enumerate(names):
        for j, r in enumerate(r for r in runs if r["system"] == name):
            for k, q in enumerate(("p50", "p90")):
                v = r.get(f"eot_latency_ms_{q}")
                if v is not None:
                    ax.scatter([i + 0.2 * k + 0.08 * j - 0.14], [v], color=f"C{k + 2}",
                               label=q if i == 0 and j == 0 else None)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("<eot> emission − true turn end (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("multi-talker systems, each seed (95 % session-bootstrap intervals)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:+.0f}"


def _sessions_csv(mix: Path) -> list[Record]:
    import csv

    with open(mix / "sessions.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("split") == "test"]


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="corpus to mix sessions from")
    p.add_argument("--init", type=Path, required=True,
                   help="single-talker transducer checkpoint every system starts from")
    p.add_argument("--mix", type=Path, default=Path("runs/multitalker/mix"))
    p.add_argument("--sessions", default="train=2000,dev=60,test=200",
                   help="sessions per split to mix")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-duration", type=float, default=120.0)
    p.add_argument("--eot-weight", type=float, default=1.0)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--workdir", type=Path, default=Path("runs/multitalker"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    from fairstream.data.mixing import MixConfig, mix_corpus

    if not (a.mix / "mix.json").is_file():
        counts = tuple((k, int(v)) for k, v in (x.split("=") for x in a.sessions.split(",")))
        mix_corpus(a.corpus, a.mix, MixConfig(sessions=counts), progress=a.progress)
    records = []
    with torch_threads(1):
        for seed in (int(s) for s in a.seeds.split(",")):
            for name in a.systems.split(","):
                records.append(run_system(a, a.mix, name, seed))
    overlap = {r["session_id"] for r in _sessions_csv(a.mix) if float(r["overlap_ratio"]) > 0}
    for r in records:  # overlapped-only scores with intervals (also for cached runs)
        ov = [x for x in r["per_session"] if x["session_id"] in overlap]
        if ov:
            r["orc_wer_overlapped_ci"] = session_interval(ov, "orc_errors", "ref_words",
                                                          a.bootstrap)
            r["turn_count_acc_overlapped_ci"] = session_interval(ov, "turn_ok", None,
                                                                 a.bootstrap)
    systems: list[Record] = [{k: v for k, v in r.items() if k != "per_session"}
                             for r in records]
    for name in a.systems.split(","):
        rs = [r for r in systems if r["system"] == name]
        systems.append({"system": name, "seed": "mean", **{
            k: float(np.mean([r[k] for r in rs])) for k in
            ("cpwer", "orc_wer", "turn_count_acc", "orc_wer_overlapped",
             "turn_count_acc_overlapped", "eot_latency_ms_p50", "eot_latency_ms_p90",
             "rtf_1thread") if all(r.get(k) is not None for r in rs)}})
    comparisons = []
    for seed in sorted({r["seed"] for r in records}):
        by = {r["system"]: r for r in records if r["seed"] == seed}
        for sys_a, sys_b in (("sts", "mt_rnnt"), ("sts", "sts_no_latency_penalty")):
            if sys_a not in by or sys_b not in by:
                continue
            for metric, num, den, subset in (
                    ("orc_wer", "orc_errors", "ref_words", None),
                    ("cpwer", "cp_errors", "ref_words", None),
                    ("turn_count_acc", "turn_ok", None, None),
                    ("orc_wer_overlapped", "orc_errors", "ref_words", overlap),
                    ("turn_count_acc_overlapped", "turn_ok", None, overlap)):
                ra, rb = (
                    [x for x in by[s]["per_session"] if subset is None
                     or x["session_id"] in subset] for s in (sys_a, sys_b))
                d, ci = paired(ra, rb, num, den, a.bootstrap)
                comparisons.append({"seed": seed, "a": sys_a, "b": sys_b,
                                    "metric": metric, "diff": d, "diff_ci": ci,
                                    "sessions": len(ra)})
    doc = {"benchmark": "multitalker", "systems": systems, "comparisons": comparisons,
           "protocol": {"init": str(a.init), "steps": a.steps, "lr": a.lr,
                        "max_duration_s": a.max_duration, "seeds": a.seeds,
                        "eot_weight": a.eot_weight, "mix": str(a.mix),
                        "bootstrap": "sessions, 1000 replicates"}}
    atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
    png = plot(doc, a.out.with_suffix(".png"))
    print("| system | seed | cpWER % | ORC-WER % | turn counting % | <eot> p50 / p90 ms | RTF |")
    print("|---|---|---|---|---|---|---|")
    for r in systems:
        if r["seed"] == "mean":
            continue
        print(f"| {r['system']} | {r['seed']} | {100 * r['cpwer']:.2f} | "
              f"{100 * r['orc_wer']:.2f} | {100 * r['turn_count_acc']:.1f} | "
              f"{_ms(r['eot_latency_ms_p50'])} / {_ms(r['eot_latency_ms_p90'])} | "
              f"{r['rtf_1thread']:.3f} |")
    print("| comparison | seed | metric | difference | 95 % interval | sessions |")
    print("|---|---|---|---|---|---|")
    for c in comparisons:
        print(f"| {c['a']} − {c['b']} | {c['seed']} | {c['metric']} | {100 * c['diff']:+.2f} "
              f"| [{100 * c['diff_ci'][0]:+.2f}, {100 * c['diff_ci'][1]:+.2f}] | "
              f"{c['sessions']} |")
    print(f"wrote {a.out} and {png}")


if __name__ == "__main__":
    main()
