"""SV fairness benchmark: baseline, group-balanced sampling, inverse-frequency weights and ARW.

Every method trains the same extractor with the same steps, data seed and schedule
(``fairstream sv train``; the methods differ only in ``--balance sampling``,
``--balance weights`` or ``--arw``), for every seed. Then, on hard trials:

1. **Selection of the trial condition** (never on the reported trials): trials are built the
   same way on the selection split (default ``test``, 96 speakers disjoint from the audit
   split); its utterances are embedded with the *first seed's baseline* as short, noisy
   segments for every crop length × SNR of the grid, and the condition whose baseline EER is
   closest to ``--target-eer`` (10 %) is kept.
2. **Reported trials** from the evaluation split (default ``audit``, 400 speakers): targets,
   same-gender, same-accent and random impostors; every system embeds the same segments
   (same crops, noise and seed).
3. Per run: EER, minDCF, gender gap, accent spread, the planted under-represented accents'
   EER against the rest, speaker-bootstrap intervals; per non-baseline run: the paired change
   against the baseline of the same seed (same trials, same resampled speakers).

Training is resumable: a run whose ``final.pt`` exists is skipped. ``--jobs N`` runs N
trainings at once as ``nice`` subprocesses (``--threads`` torch threads each); ``--jobs 0``
trains in this process, one run after the other.

Usage (the docs' table)::

    nice -n 5 .venv/bin/python benchmarks/sv_fairness.py --corpus demo_out/corpus \\
        --runs runs/sv_fairness --seeds 0,1,2 --steps 400 --jobs 2

Writes benchmarks/results/sv_fairness.json (``methods``: one row per method and seed) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent
METHODS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "balanced_sampling": ("--balance", "sampling"),
    "inverse_weights": ("--balance", "weights"),
    "arw": ("--arw",),
}
#: the ARW paper's relative changes (Jin et al., Interspeech 2022, VoxCeleb)
PAPER = {"eer": -0.076, "gender_gap": -0.17, "accent_std": -0.10}


def run_dir(runs: Path, method: str, seed: int) -> Path:
    return runs / f"{method}_s{seed}"


def train_command(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    cmd = ["sv", "train", "--corpus", str(args.corpus), "--out",
           str(run_dir(args.runs, method, seed)), "--set", f"seed={seed}",
           "--max-steps", str(args.steps), "--threads", str(args.threads), "--no-progress",
           *METHODS[method]]
    if args.feature_cache:
        cmd += ["--feature-cache", str(args.feature_cache)]
    for s in args.set:
        if method == "arw" or not s.startswith("arw."):  # arw.* would turn ARW on
            cmd += ["--set", s]
    return cmd


def train_all(args: argparse.Namespace) -> None:
    """Train every (method, seed) whose final.pt is missing; ``args.jobs`` at once."""
    todo = [(m, s) for s in args.seeds for m in args.methods
            if not (run_dir(args.runs, m, s) / "final.pt").exists()]
    if not todo:
        return
    if args.jobs == 0:
        from click.testing import CliRunner

        from fairstream.cli import main

        for m, s in todo:
            r = CliRunner().invoke(main, train_command(args, m, s))
            if r.exit_code != 0:
                raise SystemExit(f"training {m} seed {s} failed:\n{r.output}")
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    running: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            m, s = todo.pop(0)
            log = (args.runs / f"train_{m}_s{s}.log").open("wb")
            cmd = ["nice", "-n", "5", sys.executable, "-m", "fairstream",
                   *train_command(args, m, s)]
            print(f"training {m} seed {s}", flush=True)
            running.append((m, s, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for item in list(running):
            m, s, proc = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    raise SystemExit(f"training {m} seed {s} failed; see "
                                     f"{args.runs / f'train_{m}_s{s}.log'}")


def train_seconds(out: Path) -> float | None:
    """Training wall-clock seconds (the loop's ``elapsed_s``) from ``metrics.jsonl``."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return None
    elapsed = [json.loads(x).get("elapsed_s") for x in path.read_text().splitlines() if x]
    known = [e for e in elapsed if e is not None]
    return float(known[-1]) if known else None


def utterances(corpus: Any, split: str, planted: Sequence[str]) -> pd.DataFrame:
    from fairstream.sv.utterances import utterance_table

    table = utterance_table(corpus.cuts(split), corpus.root, corpus.speakers, split=split)
    table["planted"] = np.where(table["accent"].isin(list(planted)), "under-represented",
                                "rest")
    return table


def embed(checkpoint: Path, corpus: Any, split: str, table: pd.DataFrame,
          degradation: Any) -> np.ndarray:
    """(U, E) embeddings of ``table``'s utterances under ``degradation``; cached beside the
    checkpoint (reused while newer than it and for the same utterances)."""
    from fairstream.sv.embed import embed_cuts
    from fairstream.sv.train import load_extractor

    d = degradation
    cache = checkpoint.parent / f"emb_{split}_crop{d.crop_seconds}_snr{d.snr_db}_s{d.seed}.npz"
    paths = table["path"].astype(str).to_numpy(dtype=str)
    if cache.exists() and cache.stat().st_mtime >= checkpoint.stat().st_mtime:
        try:
            with np.load(cache) as z:
                if np.array_equal(z["paths"], paths):
                    return np.asarray(z["embeddings"], dtype=np.float32)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: embed again
    df = embed_cuts(load_extractor(checkpoint), corpus.cuts(split), table, degradation=d)
    emb = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, paths=paths, embeddings=emb)
    tmp.replace(cache)
    return emb


def select_condition(args: argparse.Namespace, corpus: Any, spec: Any,
                     planted: Sequence[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The (crop, SNR) of the grid whose baseline EER on the selection split is nearest the
    target (first seed's baseline)."""
    from fairstream.data.trials import build_trials
    from fairstream.sv.embed import Degradation
    from fairstream.sv.evaluate import SvEvalConfig, evaluate_sv

    table = utterances(corpus, args.select_split, planted)
    trials = build_trials(table, spec)
    ckpt = run_dir(args.runs, "baseline", args.seeds[0]) / "final.pt"
    grid = []
    for crop in args.crops:
        for snr in args.snrs:
            deg = Degradation(crop, snr, seed=0)
            emb = embed(ckpt, corpus, args.select_split, table, deg)
            ev = evaluate_sv(trials, table, emb, config=SvEvalConfig(group_by=(), n_boot=0))
            grid.append({"crop_seconds": crop, "snr_db": snr, "baseline_eer": ev.overall.eer})
            print(f"selection ({args.select_split}): {deg.describe()}: baseline EER "
                  f"{100 * ev.overall.eer:.2f}%", flush=True)
    best = min(grid, key=lambda g: abs(g["baseline_eer"] - args.target_eer))
    return Degradation(best["crop_seconds"], best["snr_db"], seed=0), grid


def _pair(iv: Any) -> list[float] | None:
    if iv is None or not math.isfinite(iv.low):
        return None
    return [float(iv.low), float(iv.high)]


def _row(method: str, seed: int, ev: Any, args: argparse.Namespace) -> dict[str, Any]:
    ci = ev.overall_ci
    gender, accent, planted = (ev.groups.get(c) for c in ("gender", "accent", "planted"))
    pci = ev.group_ci.get("planted")
    row: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "eer": ev.overall.eer,
        "eer_ci": _pair(ci.eer) if ci else None,
        "min_dcf_001": ev.overall.dcf(0.01),
        "gender_gap": gender.difference if gender else None,
        "accent_std": accent.std if accent else None,
        "paired_eer_diff_vs_baseline": None,
        "paired_eer_diff_ci": None,
        "gender_gap_diff_ci": None,
        "accent_std_diff_ci": None,
        # extra fields
        "min_dcf_005": ev.overall.dcf(0.05),
        "gender_gap_ci": _pair(getattr(ev.group_ci.get("gender"), "difference", None)),
        "accent_std_ci": _pair(getattr(ev.group_ci.get("accent"), "std", None)),
        "accent_max_minus_min": accent.difference if accent else None,
        "eer_by_gender": {k: v.eer for k, v in gender.by_group.items()} if gender else None,
        "eer_by_accent": {k: v.eer for k, v in accent.by_group.items()} if accent else None,
        "planted_eer": None, "planted_eer_ci": None, "rest_eer": None, "rest_eer_ci": None,
        "steps": args.steps,
        "train_seconds": train_seconds(run_dir(args.runs, method, seed)),
    }
    if planted is not None and pci is not None:
        for key, name in (("planted", "under-represented"), ("rest", "rest")):
            if name in planted.by_group:
                row[f"{key}_eer"] = planted.by_group[name].eer
                row[f"{key}_eer_ci"] = _pair(pci.group_eer.get(name))
    return row


def _paired(row: dict[str, Any], cmp: Any) -> None:
    row["paired_eer_diff_vs_baseline"] = cmp.overall.eer.estimate
    row["paired_eer_diff_ci"] = _pair(cmp.overall.eer)
    for col, key in (("gender", "gender_gap"), ("accent", "accent_std")):
        d = cmp.by_column.get(col)
        iv = (d.difference if col == "gender" else d.std) if d else None
        row[f"{key}_diff_ci"] = _pair(iv)
        row[f"paired_{key}_diff_vs_baseline"] = iv.estimate if iv else None
    acc = cmp.by_column.get("accent")
    row["accent_max_minus_min_diff_ci"] = _pair(acc.difference) if acc else None
    pl = cmp.by_column.get("planted")
    row["planted_gap_diff_ci"] = _pair(pl.difference) if pl else None
    if cmp.min_dcf:
        row["paired_min_dcf_001_diff_vs_baseline"] = cmp.min_dcf[0].estimate
        row["paired_min_dcf_001_diff_ci"] = _pair(cmp.min_dcf[0])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: means over seeds and the mean relative change against the baseline."""
    base = {r["seed"]: r for r in rows if r["method"] == "baseline"}
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for key in ("eer", "min_dcf_001", "gender_gap", "accent_std", "planted_eer",
                    "rest_eer"):
            vals = [r[key] for r in mine if r[key] is not None]
            entry[f"mean_{key}"] = float(np.mean(vals)) if vals else None
            rel = [(r[key] - base[r["seed"]][key]) / base[r["seed"]][key] for r in mine
                   if r["seed"] in base and r[key] is not None and base[r["seed"]][key]]
            entry[f"mean_relative_change_{key}"] = float(np.mean(rel)) if rel else None
        out[method] = entry
    return out


def table_text(rows: list[dict[str, Any]]) -> str:
    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.2f}"

    def ci(iv: list[float] | None) -> str:
        return "" if iv is None else f" [{100 * iv[0]:+.2f}, {100 * iv[1]:+.2f}]"

    lines = ["| method | seed | EER % | ΔEER pts [paired CI] | minDCF 0.01 | gender gap pts "
             "| Δ [CI] | accent std pts | Δ [CI] | planted / rest EER % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d_eer = ("" if r["paired_eer_diff_vs_baseline"] is None
                 else f"{100 * r['paired_eer_diff_vs_baseline']:+.2f}{ci(r['paired_eer_diff_ci'])}")
        d_g = ("" if r.get("paired_gender_gap_diff_vs_baseline") is None
               else f"{100 * r['paired_gender_gap_diff_vs_baseline']:+.2f}"
               f"{ci(r['gender_gap_diff_ci'])}")
        d_a = ("" if r.get("paired_accent_std_diff_vs_baseline") is None
               else f"{100 * r['paired_accent_std_diff_vs_baseline']:+.2f}"
               f"{ci(r['accent_std_diff_ci'])}")
        lines.append(
            f"| {r['method']} | {r['seed']} | {pct(r['eer'])} | {d_eer} | "
            f"{r['min_dcf_001']:.3f} | {pct(r['gender_gap'])} | {d_g} | {pct(r['accent_std'])} "
            f"| {d_a} | {pct(r['planted_eer'])} / {pct(r['rest_eer'])} |")
    return "\n".join(lines) + "\n"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--corpus", type=Path, default=Path("demo_out/corpus"))
    p.add_argument("--runs", type=Path, default=Path("runs/sv_fairness"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "sv_fairness.json")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=400, help="training steps (all methods)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (0: in-process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--feature-cache", type=Path, default=None,
                   help="fbank cache of the training split (default RUNS/features)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `sv train --set` for every run (repeatable; arw.* ones only "
                        "for the ARW runs)")
    p.add_argument("--select-split", default="test")
    p.add_argument("--eval-split", default="audit")
    p.add_argument("--crops", type=_floats, default=[1.0, 1.5, 2.0], help="seconds, grid")
    p.add_argument("--snrs", type=_floats, default=[0.0, 5.0, 10.0], help="dB, grid")
    p.add_argument("--target-eer", type=float, default=0.10)
    p.add_argument("--targets", type=int, default=6, help="target trials per speaker")
    p.add_argument("--same-gender", type=int, default=20)
    p.add_argument("--same-accent", type=int, default=20)
    p.add_argument("--random", type=int, default=10)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--min-group-speakers", type=int, default=5)
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or "baseline" not in args.methods:
        p.error(f"methods must include baseline and be among {list(METHODS)}, got {unknown}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.corpus = args.corpus.resolve()
    args.runs = args.runs.resolve()
    if args.feature_cache is None:
        args.feature_cache = args.runs / "features"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from fairstream.data.corpus import load_corpus
    from fairstream.data.trials import TrialSpec, build_trials, write_trials
    from fairstream.sv.compare import compare_systems
    from fairstream.sv.evaluate import SvEvalConfig, evaluate_sv

    t0 = time.perf_counter()
    train_all(args)
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    planted = list(corpus.info.get("planted", {}).get("under_represented_accents", []))
    spec = TrialSpec(targets=args.targets, same_gender=args.same_gender,
                     same_accent=args.same_accent, random=args.random, seed=0)
    degradation, grid = select_condition(args, corpus, spec, planted)
    print(f"chosen condition: {degradation.describe()}", flush=True)

    table = utterances(corpus, args.eval_split, planted)
    trials = build_trials(table, spec)
    write_trials(trials, args.runs / f"trials_{args.eval_split}.txt")
    groups = ("gender", "accent") + (("planted",) if planted else ())
    config = SvEvalConfig(group_by=groups, n_boot=args.n_boot,
                          min_group_speakers=args.min_group_speakers)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        emb = {m: embed(run_dir(args.runs, m, seed) / "final.pt", corpus, args.eval_split,
                        table, degradation) for m in args.methods}
        base = evaluate_sv(trials, table, emb["baseline"], config=config)
        rows.append(_row("baseline", seed, base, args))
        for m in args.methods:
            if m == "baseline":
                continue
            cmp = compare_systems(trials, {"baseline": (table, emb["baseline"]),
                                           m: (table, emb[m])}, config=config)
            row = _row(m, seed, cmp.b, args)
            _paired(row, cmp)
            rows.append(row)
            print(f"{m} seed {seed}: EER {100 * row['eer']:.2f}% "
                  f"(baseline {100 * base.overall.eer:.2f}%)", flush=True)
    n_t = sum(t.label for t in trials)
    result = {
        "benchmark": "sv_fairness",
        "description": "baseline vs group-balanced sampling vs inverse-frequency weights vs ARW "
                       "on short, noisy trials of the evaluation split; EERs and gaps are "
                       "fractions; *_ci are 95 % speaker-bootstrap intervals, *_diff_ci paired "
                       "(this method − the baseline of the same seed, same trials, same "
                       "resampled speakers)",
        "setup": {
            "corpus": str(args.corpus), "preset": corpus.info.get("preset"),
            "eval_split": args.eval_split, "select_split": args.select_split,
            "eval_speakers": int(table["speaker_id"].nunique()),
            "trials": len(trials), "target_trials": n_t, "nontarget_trials": len(trials) - n_t,
            "trial_spec": {"targets": spec.targets, "same_gender": spec.same_gender,
                           "same_accent": spec.same_accent, "random": spec.random},
            "condition": {"crop_seconds": degradation.crop_seconds,
                          "snr_db": degradation.snr_db, "noise": "white/pink/brown",
                          "seed": degradation.seed},
            "selection": {"rule": f"grid point whose baseline (seed {args.seeds[0]}) EER on the "
                                  f"{args.select_split} split is nearest {args.target_eer}",
                          "grid": grid},
            "planted_accents": planted, "balance_by": "accent (true attribute)",
            "steps": args.steps, "seeds": args.seeds, "n_boot": args.n_boot,
            "extra_train_overrides": args.set,
            "paper_relative_changes": PAPER,
            "platform": platform.platform(), "torch": torch.__version__,
        },
        "methods": rows,
        "summary": summarize(rows),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, default=float) + "\n")
    print(table_text(rows), end="")
    print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
