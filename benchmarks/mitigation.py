"""Mitigation benchmark: EWC against plain fine-tuning, L2-SP and oversampling, before/after.

Protocol (``make demo`` outputs are the inputs):

* the cohort is the audit's bottom cohort with the strongest selection-corrected evidence
  (``demo_out/audit/cohorts.json``: found on the **audit** split's 400 speakers), mapped onto
  the training speakers by its definition;
* every method trains the same ``--steps`` optimizer steps from the demo's checkpoint, with
  the same batch, learning rate and schedule, at every seed of ``--seeds`` (the seed fixes the
  data order, augmentation and dropout);
* settings are chosen on the **dev** split (seed 0), by the lowest mean of the cohort's dev
  WER and the other dev speakers' WER after fine-tuning: first the peak learning rate
  (``--lrs``, with ``finetune``; then used by every method), then λ of ``ewc`` and ``l2sp``
  (``--lambdas``); test is never looked at for a choice;
* every figure is measured on the **test** split (speakers disjoint from the audited ones and
  from training), greedy search, before and after, with paired speaker-bootstrap intervals
  (:func:`fairstream.mitigation.compare_results`).

Writes ``benchmarks/results/mitigation.json``: ``methods`` (one object per method and seed:
``method``, ``seed``, ``cohort``, ``bottom_wer_before``, ``bottom_wer_after``, ``bottom_diff``,
``bottom_diff_ci``, ``overall_before``, ``overall_after``, ``overall_diff_ci``,
``variance_before``, ``variance_after`` (variance of WER across the method's cohorts, here the
accents), ``gap_before``, ``gap_after`` (the bottom-vs-rest gap in %), ``forgetting_max``; WERs
and differences are fractions), ``selection`` (the dev runs that chose λ) and ``settings``.
Runs already in the file are kept and skipped (``--resume`` is the default); each run's
checkpoints, results and comparison stay in ``--workdir/<method>-seed<k>``.

    python benchmarks/mitigation.py                       # the demo's model, 2 seeds
    python benchmarks/mitigation.py --methods ewc,finetune --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fairstream._io import atomic_write_text  # noqa: E402
from fairstream.mitigation.run import (  # noqa: E402
    METHODS,
    MitigationConfig,
    mitigate,
    summary_row,
)

RESULTS = ROOT / "benchmarks" / "results" / "mitigation.json"
PENALIZED = ("ewc", "l2sp")


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"methods": [], "selection": [], "settings": {}}


def save(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False))


def dev_score(summary: dict[str, Any]) -> float:
    """The λ criterion: mean of the cohort's dev WER and the rest's dev WER (after)."""
    bottom = summary["bottom_after"]
    rest = bottom / (1.0 + summary["gap_pct_after"] / 100.0)  # gap = WER_b / WER_rest - 1
    return 0.5 * (bottom + rest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="demo_out/exp/averaged.pt")
    ap.add_argument("--corpus", default="demo_out/corpus")
    ap.add_argument("--cohorts", default="demo_out/audit/cohorts.json")
    ap.add_argument("--cohort", default=None, help="METHOD=LABEL (default: the strongest)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lrs", default="5e-5,1.5e-4,5e-4",
                    help="peak learning rates tried on dev with finetune; the chosen one is used "
                         "by every method")
    ap.add_argument("--lambdas", default="0.01,0.1,1,10,100,1000",
                    help="λ values tried on dev for ewc and l2sp")
    ap.add_argument("--oversample", type=int, default=4)
    ap.add_argument("--fisher-batches", type=int, default=30)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--workdir", default="runs/mitigation")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    out = Path(args.out)
    data = load(out)
    work = Path(args.workdir)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    lambdas = [float(x) for x in args.lambdas.split(",")]
    data["settings"] = {"checkpoint": args.checkpoint, "corpus": args.corpus,
                        "cohorts": args.cohorts, "steps": args.steps,
                        "lambdas": lambdas, "oversample": args.oversample,
                        "fisher_batches": args.fisher_batches, "bootstrap": args.bootstrap,
                        "eval_split": "test", "selection_split": "dev", "search": "greedy"}

    def run(method: str, seed: int, lam: float, split: str, name: str, lr: float
            ) -> dict[str, Any]:
        cfg = MitigationConfig(method=method, steps=args.steps, lr=lr, lam=lam,
                               fisher_batches=args.fisher_batches, oversample=args.oversample,
                               seed=seed)
        t0 = time.time()
        r = mitigate(args.checkpoint, args.corpus, args.cohorts, work / name, cfg,
                     cohort=args.cohort, eval_split=split, n_boot=args.bootstrap,
                     progress=args.progress, echo=lambda m: print("  " + m, flush=True))
        row = {"method": method, "seed": seed, "lam": lam if method in PENALIZED else None,
               "lr": lr, "steps": args.steps, **summary_row(r),
               "wall_s": round(time.time() - t0, 1)}
        row["_summary"] = r.comparison.summary
        return row

    def select(method: str, lam: float, lr: float) -> dict[str, Any]:
        """The dev run of (method, λ, lr), run now unless the file has it."""
        for s in data["selection"]:
            if (s["method"] == method and s.get("lam") == (lam if method in PENALIZED else None)
                    and s.get("lr") == lr and s["steps"] == args.steps):
                return s
        print(f"[dev] {method} lr={lr:g}" + (f" λ={lam:g}" if method in PENALIZED else ""),
              flush=True)
        row = run(method, 0, lam, "dev", f"dev-{method}-lr{lr:g}"
                  + (f"-lam{lam:g}" if method in PENALIZED else ""), lr)
        row["dev_score"] = dev_score(row.pop("_summary"))
        data["selection"].append(row)
        save(out, data)
        return row

    lrs = [float(x) for x in args.lrs.split(",")]
    best_lr = min((select("finetune", 0.0, lr) for lr in lrs), key=lambda s: s["dev_score"])
    lr = best_lr["lr"]
    print(f"[dev] learning rate {lr:g} (finetune dev score {best_lr['dev_score']:.4f})")
    chosen: dict[str, float] = {}
    for method in (m for m in methods if m in PENALIZED):
        best = min((select(method, lam, lr) for lam in lambdas),
                   key=lambda s: s["dev_score"])
        chosen[method] = best["lam"]
        print(f"[dev] {method}: λ = {best['lam']:g} (dev score {best['dev_score']:.4f})")
    data["settings"]["lambda_chosen"] = chosen
    data["settings"]["lr_chosen"] = lr
    save(out, data)

    for seed in seeds:
        for method in methods:
            lam = chosen.get(method, 0.0)
            if any(r["method"] == method and r["seed"] == seed and r["steps"] == args.steps
                   and r.get("lam") == (lam if method in PENALIZED else None)
                   and r.get("lr") == lr for r in data["methods"]):
                continue
            print(f"[test] {method} seed {seed}", flush=True)
            name = (f"{method}-lam{lam:g}-seed{seed}" if method in PENALIZED
                    else f"{method}-seed{seed}")
            row = run(method, seed, lam, "test", name, lr)
            row.pop("_summary")
            data["methods"] = [r for r in data["methods"]
                               if not (r["method"] == method and r["seed"] == seed)] + [row]
            save(out, data)
    print(format_selection(data["selection"]))
    print(format_table(data["methods"]))
    if data["methods"]:
        print(f"plot: {plot_methods(data['methods'], out.with_suffix('.png'))}")
    return 0


def plot_methods(rows: list[dict[str, Any]], path: Path) -> Path:
    """Per method and seed: the cohort's WER change, the overall change (paired 95 %
    intervals) and the largest increase on another cohort (forgetting), in WER points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fairstream._io import atomic_path

    rows = sorted(rows, key=lambda r: (METHODS.index(r["method"]), r["seed"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        for key, dy, colour, name in (("bottom", 0.15, "#2b6cb0", "mitigated cohort"),
                                      ("overall", -0.15, "#718096", "overall")):
            x = 100 * r[f"{key}_diff"]
            lo, hi = (100 * v for v in r[f"{key}_diff_ci"])
            ax.errorbar(x, y + dy, xerr=[[x - lo], [hi - x]], fmt="o", color=colour,
                        capsize=3, label=name if y == ys[0] else None)
        ax.plot(100 * r["forgetting_max"], y, "x", color="#c53030",
                label="forgetting (max over other cohorts)" if y == ys[0] else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['method']} s{r['seed']}" for r in rows])
    ax.set_xlabel("WER change, after − before (points; negative is better)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
              frameon=False)
    ax.set_title("Mitigation on the test speakers (paired 95 % intervals)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def format_selection(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the dev runs that chose the learning rate and λ."""
    lines = ["| method | lr | λ | cohort dev WER before → after | overall dev diff | dev score |",
             "|---|---:|---:|---|---:|---:|"]
    for r in rows:
        lam = "" if r.get("lam") is None else f"{r['lam']:g}"
        lines.append(f"| {r['method']} | {r['lr']:g} | {lam} | {r['bottom_wer_before']:.2%} → "
                     f"{r['bottom_wer_after']:.2%} | {_pts(r['overall_diff'])} | "
                     f"{r['dev_score']:.4f} |")
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the test runs."""
    lines = ["| method | seed | λ | bottom WER before → after | diff [95 % CI] | overall diff "
             "[95 % CI] | variance before → after | gap % before → after | forgetting max |",
             "|---|---:|---:|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        lo, hi = r["bottom_diff_ci"]
        olo, ohi = r["overall_diff_ci"]
        lam = "" if r.get("lam") is None else f"{r['lam']:g}"
        lines.append(
            f"| {r['method']} | {r['seed']} | {lam} | {r['bottom_wer_before']:.2%} → "
            f"{r['bottom_wer_after']:.2%} | {_pts(r['bottom_diff'])} [{_pts(lo)}, {_pts(hi)}] "
            f"| {_pts(r['overall_diff'])} [{_pts(olo)}, {_pts(ohi)}] | "
            f"{r['variance_before']:.2e} → {r['variance_after']:.2e} | "
            f"{r['gap_before']:.1f} → {r['gap_after']:.1f} | {_pts(r['forgetting_max'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
