"""Calibration of the audit's inference: family-wise error with no effect, power with one.

Every audit method reports the worst of the cohorts its search considered, and the methods
table gives a p-value for that choice, corrected for the search (max-statistic speaker
bootstrap over the method's candidates, fairstream.audit.selection). This script measures
whether the correction holds, by simulating many small audits:

* **null**: nobody is served worse. A method's family-wise error rate (FWER) is the share of
  audits in which it declares its bottom cohort significant (p <= alpha). Target: <= 0.06
  at alpha = 0.05 for every method. The same share for the conditional p-value
  (``p_value_naive``, as if the cohort had been named in advance) is reported beside it.
* **planted**: one cohort has a true WER ``effect`` times the others' (1.2, 1.5, 2.0) and
  ``cohort_speakers`` speakers. Power = share of audits in which the method declares its
  bottom cohort significant *and* that cohort is the planted one (at least half of its
  speakers are planted and it holds at least half of the planted speakers).

Simulated audit (one per seed): ``--speakers`` speakers with ``--utts`` utterances of about
10 words; speaker WER = 0.15 x lognormal(0, 0.3), times ``effect`` for the planted cohort;
errors per utterance are binomial. The planted cohort is one accent (of 5), lives in the west
of the map (longitude < -110, the others east of it), in the zip codes of urbanicity "rural"
(the others in urban and suburban ones) and has its own centre in a 16-dim embedding space;
under the null the same structure carries no effect. Methods run on every audit:
``attribute:accent``, ``attribute:accent+gender``, ``geo``, ``geodemo`` (6 zip attributes:
about 70 candidate cohorts) and ``embedding`` (k-means, k chosen by silhouette over 2-6),
with ``run_audit``'s defaults otherwise (1,000 bootstrap replicates, minimum cohort 10).

Usage::

    nice -n 10 .venv/bin/python benchmarks/audit_calibration.py             # full run
    nice -n 10 .venv/bin/python benchmarks/audit_calibration.py --sims 200 --power-sims 20
    nice -n 10 .venv/bin/python benchmarks/audit_calibration.py --methods geo   # one method

Writes benchmarks/results/audit_calibration.json: ``methods`` (method, null_fwer,
null_fwer_naive, null_fwer_ci, n_sim) and ``power`` (method, effect, cohort_speakers, power,
power_naive, n_sim), plus the settings; prints both tables. With ``--methods`` (a subset),
the rows of those methods replace theirs in an existing results file, the other methods'
rows are kept, and ``settings`` lists every run with the methods it ran.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
METHODS = ("attribute:accent", "attribute:accent+gender", "geo", "geodemo", "embedding")
N_ACCENTS = 5


@dataclass(frozen=True)
class Setting:
    """One simulated audit."""

    seed: int
    effect: float = 1.0
    cohort_speakers: int = 30
    n_speakers: int = 200
    utts: int = 5
    n_boot: int = 1000
    alpha: float = 0.05
    methods: tuple[str, ...] = METHODS


@dataclass(frozen=True)
class Simulated:
    """The inputs of one simulated audit and its planted speakers."""

    results: pd.DataFrame
    speakers: pd.DataFrame
    zips: pd.DataFrame
    embeddings: tuple[np.ndarray, np.ndarray]
    planted: np.ndarray


def simulate(s: Setting) -> Simulated:
    """A small audit input with one planted cohort (no effect when ``s.effect == 1``)."""
    rng = np.random.default_rng([s.seed, 0xCA11B])
    n, k = s.n_speakers, s.cohort_speakers
    if not 0 < k < n:
        raise ValueError(f"cohort_speakers must be in (0, {n}), got {k}")
    planted = np.zeros(n, dtype=bool)
    planted[rng.choice(n, size=k, replace=False)] = True
    ids = np.array([f"spk{i:04d}" for i in range(n)], dtype=object)
    accent = np.where(planted, 0, rng.integers(1, N_ACCENTS, n))
    lon = np.where(planted, rng.uniform(-124.0, -110.0, n), rng.uniform(-110.0, -67.0, n))
    n_zip, n_rural = 30, 6
    zip_codes = np.array([f"{20000 + 11 * i:05d}" for i in range(n_zip)])
    zip_idx = np.where(planted, rng.integers(0, n_rural, n), rng.integers(n_rural, n_zip, n))
    urban = np.array(["rural"] * n_rural
                     + ["urban", "suburban"] * ((n_zip - n_rural) // 2))
    zips = pd.DataFrame({
        "zip": zip_codes,
        "urbanicity": urban,
        "majority_income_band": np.array(["low", "middle", "high"])[rng.integers(0, 3, n_zip)],
        "majority_education": np.array(["school", "college", "degree"])[
            rng.integers(0, 3, n_zip)],
        "census_region": np.array(["northeast", "midwest", "south", "west"])[
            rng.integers(0, 4, n_zip)],
        "median_household_income": rng.normal(60000, 15000, n_zip).round(-2),
        "median_age": rng.normal(38, 5, n_zip).round(1),
    })
    speakers = pd.DataFrame({
        "speaker_id": ids,
        "accent": [f"accent_{a}" for a in accent],
        "gender": np.array(["female", "male"])[rng.integers(0, 2, n)],
        "lat": rng.uniform(25.0, 49.0, n),
        "lon": lon,
        "zip": zip_codes[zip_idx],
    })
    p_spk = np.clip(0.15 * np.where(planted, s.effect, 1.0) * rng.lognormal(0.0, 0.3, n),
                    0.0, 0.9)
    spk = np.repeat(np.arange(n), s.utts)
    words = np.maximum(1, rng.poisson(10, len(spk)))
    p = p_spk[spk]
    sub = rng.binomial(words, 0.6 * p)
    dele = rng.binomial(words - sub, np.clip(0.3 * p / np.maximum(1 - 0.6 * p, 1e-6), 0, 1))
    results = pd.DataFrame({
        "utt_id": [f"u{i:06d}" for i in range(len(spk))], "speaker_id": ids[spk],
        "n_ref_words": words, "sub": sub, "del": dele,
        "ins": rng.poisson(0.1 * p * words), "hits": words - sub - dele,
    })
    centres = rng.normal(0.0, 1.0, (N_ACCENTS, 16))
    emb = centres[accent] + rng.normal(0.0, 0.6, (n, 16))
    return Simulated(results, speakers, zips, (ids, emb.astype(np.float32)), planted)


def run_one(s: Setting) -> list[dict[str, object]]:
    """Audit one simulated input with every method; one record per method."""
    from fairstream.audit import AuditConfig, EmbeddingConfig, run_audit

    d = simulate(s)
    res = run_audit(d.results, speakers=d.speakers, zip_demographics=d.zips,
                    embeddings=d.embeddings, methods=",".join(s.methods),
                    config=AuditConfig(n_boot=s.n_boot, seed=s.seed,
                                       embedding=EmbeddingConfig(k_range=(2, 6), seed=s.seed)))
    rows = []
    for name, outcome in res.outcomes.items():
        mask = outcome.bottom.mask
        hit = int((mask & d.planted).sum())
        found = mask.any() and hit >= 0.5 * mask.sum() and hit >= 0.5 * d.planted.sum()
        t = outcome.test
        p, p_naive = float(t["p_value"]), float(t["p_value_naive"])  # type: ignore[arg-type]
        rows.append({"method": name, "seed": s.seed, "effect": s.effect,
                     "cohort_speakers": s.cohort_speakers,
                     "significant": bool(p <= s.alpha),
                     "significant_naive": bool(p_naive <= s.alpha),
                     "found": bool(found), "n_candidates": t["n_candidates"]})
    return rows


def _wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson interval of a binomial share."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def _run_all(settings: Sequence[Setting], workers: int) -> list[dict[str, object]]:
    if workers <= 1:
        return [r for s in settings for r in run_one(s)]
    with mp.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
        return [r for rows in pool.imap_unordered(run_one, settings, chunksize=8) for r in rows]


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def summarize(null: Iterable[dict[str, object]], planted: Iterable[dict[str, object]],
              methods_run: Sequence[str] = METHODS) -> dict[str, list[dict[str, object]]]:
    """The ``methods`` (null FWER) and ``power`` tables of the results file."""
    nd = pd.DataFrame(list(null))
    methods = []
    for m in methods_run:
        g = nd[nd["method"] == m] if len(nd) else nd
        n, k = len(g), int(g["significant"].sum()) if len(g) else 0
        methods.append({
            "method": m, "null_fwer": k / n if n else math.nan,
            "null_fwer_naive": float(g["significant_naive"].mean()) if n else math.nan,
            "null_fwer_ci": _wilson(k, n), "n_sim": n,
            "median_candidates": float(g["n_candidates"].median()) if n else math.nan,
        })
    pdf = pd.DataFrame(list(planted))
    power = []
    if len(pdf):
        for (m, eff, size), g in pdf.groupby(["method", "effect", "cohort_speakers"], sort=False):
            power.append({
                "method": m, "effect": float(eff), "cohort_speakers": int(size),
                "power": float((g["significant"] & g["found"]).mean()),
                "power_naive": float((g["significant_naive"] & g["found"]).mean()),
                "n_sim": len(g),
            })
        power.sort(key=lambda r: (METHODS.index(str(r["method"])), r["cohort_speakers"],
                                  r["effect"]))
    return {"methods": methods, "power": power}


def merge(previous: dict[str, list[dict[str, object]]], new: dict[str, list[dict[str, object]]],
          methods_run: Sequence[str]) -> dict[str, list[dict[str, object]]]:
    """``new`` for the methods run, ``previous`` (an earlier results file) for the others.

    Rows of both tables are kept in :data:`METHODS` order; ``settings`` keeps every run,
    each naming its methods.
    """
    out: dict[str, list[dict[str, object]]] = {}
    for table in ("methods", "power"):
        rows = [r for r in previous.get(table, []) if r["method"] not in methods_run]
        rows += new[table]
        rows.sort(key=lambda r: (METHODS.index(str(r["method"])), r.get("cohort_speakers", 0),
                                 r.get("effect", 0)))
        out[table] = rows
    out["settings"] = list(previous.get("settings", [])) + new["settings"]
    return out


def _methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated names of :data:`METHODS`."""
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown or [text]}; choose from {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in names)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=2000,
                    help="simulated audits with no effect (FWER)")
    ap.add_argument("--power-sims", type=int, default=200,
                    help="simulated audits per (effect, cohort size) cell")
    ap.add_argument("--effects", type=float, nargs="+", default=[1.2, 1.5, 2.0],
                    help="true WER ratios of the planted cohort")
    ap.add_argument("--cohort-speakers", type=int, nargs="+", default=[20, 40],
                    help="sizes of the planted cohort (speakers)")
    ap.add_argument("--speakers", type=int, default=200, help="speakers per simulated audit")
    ap.add_argument("--utts", type=int, default=5, help="utterances per speaker")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per audit")
    ap.add_argument("--alpha", type=float, default=0.05,
                    help="level at which a bottom cohort counts as declared (p <= alpha)")
    ap.add_argument("--seed", type=int, default=0, help="first simulation seed")
    ap.add_argument("--methods", type=_methods, default=METHODS,
                    help="comma-separated subset of the methods to run; the other methods' "
                         "rows of an existing --out file are kept (default: all)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes (1: no multiprocessing)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "audit_calibration.json",
                    help="results file (JSON)")
    args = ap.parse_args(argv)
    _one_thread()

    common = {"n_speakers": args.speakers, "utts": args.utts, "n_boot": args.n_boot,
              "alpha": args.alpha, "methods": args.methods}
    null_settings = [Setting(seed=args.seed + i, **common) for i in range(args.sims)]
    cells = [(e, c) for c in args.cohort_speakers for e in args.effects]
    planted_settings = [
        Setting(seed=args.seed + 1_000_000 * (j + 1) + i, effect=e, cohort_speakers=c, **common)
        for j, (e, c) in enumerate(cells) for i in range(args.power_sims)]
    t0 = time.perf_counter()
    null = _run_all(null_settings, args.workers)
    t_null = time.perf_counter() - t0
    planted = _run_all(planted_settings, args.workers)
    t_all = time.perf_counter() - t0
    out = summarize(null, planted, args.methods)
    null_cohort = asdict(Setting(seed=0, **common))
    null_cohort["methods"] = list(args.methods)
    out["settings"] = [{**vars(args), "out": str(args.out), "methods": list(args.methods),
                        "null_cohort": null_cohort,
                        "seconds_null": round(t_null, 1), "seconds_total": round(t_all, 1)}]
    written = out
    if args.methods != METHODS and args.out.exists():
        written = merge(json.loads(args.out.read_text()), out, args.methods)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from fairstream._io import atomic_write_text

    atomic_write_text(args.out, json.dumps(written, indent=2))

    print(f"null: {args.sims} audits, {args.speakers} speakers x {args.utts} utterances, "
          f"{args.n_boot} replicates, alpha = {args.alpha}")
    print(f"{'method':<26} {'candidates':>10} {'FWER':>7} {'95 % CI':>17} {'FWER naive':>11}")
    for r in out["methods"]:
        lo, hi = cast(list[float], r["null_fwer_ci"])
        print(f"{r['method']:<26} {r['median_candidates']:>10.0f} {r['null_fwer']:>7.3f} "
              f"{f'[{lo:.3f}, {hi:.3f}]':>17} {r['null_fwer_naive']:>11.3f}")
    print(f"power: {args.power_sims} audits per cell (significant and the planted cohort found)")
    print(f"{'method':<26} {'speakers':>8} " + " ".join(f"{f'x{e:g}':>13}"
                                                        for e in args.effects))
    for m in args.methods:
        for c in args.cohort_speakers:
            cell = {r["effect"]: r for r in out["power"]
                    if r["method"] == m and r["cohort_speakers"] == c}
            vals = " ".join(f"{cell[e]['power']:>5.2f} ({cell[e]['power_naive']:.2f})"
                            if e in cell else f"{'—':>13}" for e in args.effects)
            print(f"{m:<26} {c:>8} {vals}")
    print("(in brackets: with the conditional p-value)")
    merged = "" if written is out else " (other methods' rows kept)"
    print(f"{t_all:.0f} s ({t_null:.0f} s null); wrote {args.out}{merged}")


if __name__ == "__main__":
    main()
