"""Audit at scale, and against fairlearn MetricFrame with bootstrap intervals.

Data: a synthetic results table of 1,000,000 utterances from 50,000 speakers (planted accent,
geographic and zip-demographic effects) with 192-dim speaker embeddings, written to Parquet
/ CSV / .npy like a user's files.

1. Full audit in a fresh process limited to 2 threads (reads the files, disaggregates by 3
   columns with 1,000 speaker-bootstrap replicates, geo tree, geodemographic search,
   k-means with silhouette-chosen k), then the report written (privacy protection, JSON,
   CSV, HTML with plots): the audit's and the report's wall time, their total, and peak RSS
   (ru_maxrss of that process).
2. fairlearn ``MetricFrame`` (Σ/Σ WER metric, one sensitive column, ``n_boot``) on a
   100,000-row subset with 20 replicates, against our disaggregation of the same subset
   with the same number of replicates, in the same run; then both extrapolated/measured at
   1,000,000 rows × 1,000 replicates (fairlearn linearly in rows × replicates, labelled as an
   extrapolation). fairlearn resamples rows; we resample speakers.
3. Point estimates: fairlearn ``MetricFrame`` (no bootstrap) on all 1,000,000 rows for each
   of the 3 columns against ours (max absolute difference).

Usage: ``nice -n 10 .venv/bin/python benchmarks/audit_scale.py [--speakers 50000 --utts 20]``
Writes benchmarks/results/audit_scale.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent
COLUMNS = ("accent", "gender", "age_band")


def _limit_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _full_audit(paths: dict[str, str], n_boot: int, queue: mp.Queue) -> None:
    _limit_threads(2)
    from fairstream.audit import AuditConfig, run_audit

    t0 = time.perf_counter()
    res = run_audit(
        paths["results"], speakers=paths["speakers"], zip_demographics=paths["zips"],
        embeddings=paths["emb"], embedding_ids=paths["emb_ids"],
        methods=",".join([f"attribute:{c}" for c in COLUMNS] + ["geo", "geodemo", "embedding"]),
        config=AuditConfig(n_boot=n_boot),
    )
    t_audit = time.perf_counter() - t0
    t1 = time.perf_counter()
    from fairstream.audit.report import write_report

    write_report(res, paths["out"])
    t_report = time.perf_counter() - t1
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    groups = [o.detail for o in res.outcomes.values() if o.method.kind == "attribute"]
    by = {g.by[0]: dict(zip(g.by_group["group"], g.by_group["wer"])) for g in groups}
    geo, emb = res.outcomes.get("geo"), res.outcomes.get("embedding")
    queue.put({
        "audit_s": t_audit, "report_s": t_report, "peak_rss_mb": rss_mb,
        "steps_s": res.provenance["timings_s"], "n_regions": len(geo.detail.regions) if geo else 0,
        "k": emb.detail.k if emb else None,
        "methods": json.loads(res.methods.to_json(orient="records")), "wer_by": by,
        "overall_wer": res.overall["wer"],
    })


def _ours_disaggregation(results: pd.DataFrame, speakers: pd.DataFrame, n_boot: int) -> float:
    from fairstream.audit.disaggregate import disaggregate
    from fairstream.audit.inputs import read_results, read_speakers
    from fairstream.audit.speaker_stats import speaker_stats
    from fairstream.metrics.bootstrap import SpeakerBootstrap

    t0 = time.perf_counter()
    stats = speaker_stats(read_results(results), read_speakers(speakers))
    boot = SpeakerBootstrap.draw(stats.n_speakers, n_boot, seed=0)
    disaggregate(stats, ["accent"], boot)
    return time.perf_counter() - t0


def _fairlearn(results: pd.DataFrame, speakers: pd.DataFrame, n_boot: int | None,
               column: str = "accent") -> tuple[float, pd.Series]:
    from fairlearn.metrics import MetricFrame

    utt = results.merge(speakers[["speaker_id", column]], on="speaker_id", how="left")
    words = (utt["hits"] + utt["sub"] + utt["del"]).to_numpy()
    errors = (utt["sub"] + utt["del"] + utt["ins"]).to_numpy()

    def wer(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.sum(y_pred) / np.sum(y_true))

    t0 = time.perf_counter()
    kw = {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": 0} if n_boot else {}
    mf = MetricFrame(metrics=wer, y_true=words, y_pred=errors, sensitive_features=utt[column], **kw)
    return time.perf_counter() - t0, mf.by_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speakers", type=int, default=50_000)
    ap.add_argument("--utts", type=int, default=20, help="utterances per speaker")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--fairlearn-rows", type=int, default=100_000)
    ap.add_argument("--fairlearn-boot", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "audit_scale.json")
    args = ap.parse_args()
    _limit_threads(2)
    load_start = os.getloadavg()[0]

    from fairstream.audit.synthetic import make_synthetic_audit

    t0 = time.perf_counter()
    d = make_synthetic_audit(n_speakers=args.speakers, utts_per_speaker=args.utts,
                             n_accents=8, embedding_dim=192, geo_factor=1.3, rural_factor=1.3,
                             n_zips=2000, seed=0)
    t_gen = time.perf_counter() - t0
    n_rows = len(d.results)
    tmp = Path(tempfile.mkdtemp(prefix="audit_scale_"))
    paths = {"results": str(tmp / "results.parquet"), "speakers": str(tmp / "speakers.csv"),
             "zips": str(tmp / "zips.csv"), "emb": str(tmp / "emb.npy"),
             "emb_ids": str(tmp / "emb_ids.txt"), "out": str(tmp / "report")}
    d.results.to_parquet(paths["results"])
    d.speakers.to_csv(paths["speakers"], index=False)
    d.zip_demographics.to_csv(paths["zips"], index=False)
    np.save(paths["emb"], d.embeddings)
    Path(paths["emb_ids"]).write_text("\n".join(d.embedding_ids) + "\n")

    # 1. full audit in a fresh process
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_full_audit, args=(paths, args.n_boot, q))
    proc.start()
    full = q.get()
    proc.join()

    # 2. equal data, equal replicates: a speaker-aligned subset of fairlearn_rows rows
    n_sub_spk = max(1, args.fairlearn_rows // args.utts)
    sub_ids = set(d.speakers["speaker_id"].iloc[:n_sub_spk])
    sub = d.results[d.results["speaker_id"].isin(sub_ids)].reset_index(drop=True)
    spk_sub = d.speakers[d.speakers["speaker_id"].isin(sub_ids)]
    t_fl_sub, _ = _fairlearn(sub, spk_sub, args.fairlearn_boot)
    t_ours_sub = _ours_disaggregation(sub, spk_sub, args.fairlearn_boot)
    t_ours_full_col = _ours_disaggregation(d.results, d.speakers, args.n_boot)
    scale = (n_rows / len(sub)) * (args.n_boot / args.fairlearn_boot)
    t_fl_extrap = t_fl_sub * scale

    # 3. point estimates on all rows
    agree = {}
    t_fl_points = 0.0
    for c in COLUMNS:
        t, fl = _fairlearn(d.results, d.speakers, None, c)
        t_fl_points += t
        ours = full["wer_by"][c]
        agree[c] = float(max(abs(float(fl[k]) - ours[str(k)]) for k in fl.index))

    out = {
        "data": {"utterances": n_rows, "speakers": args.speakers, "embedding_dim": 192,
                 "n_boot": args.n_boot, "generate_s": round(t_gen, 2)},
        "machine": {"cpus": os.cpu_count(), "threads": 2, "python": platform.python_version(),
                    "load_avg_1min_at_start": load_start,
                    "load_avg_1min_at_end": os.getloadavg()[0]},
        "full_audit": {**{k: full[k] for k in ("audit_s", "report_s")},
                       "total_s": full["audit_s"] + full["report_s"],
                       **{k: full[k] for k in ("peak_rss_mb", "steps_s", "n_regions", "k")}},
        "methods": full["methods"],
        "vs_fairlearn": {
            "subset_rows": len(sub), "subset_replicates": args.fairlearn_boot,
            "fairlearn_subset_s": t_fl_sub, "ours_subset_s": t_ours_sub,
            "speedup_equal_data": t_fl_sub / t_ours_sub,
            "fairlearn_per_replicate_per_100k_rows_s": t_fl_sub / args.fairlearn_boot
            * 100_000 / len(sub),
            "fairlearn_1M_x_1000_extrapolated_s": t_fl_extrap,
            "ours_1M_x_1000_measured_s": t_ours_full_col,
            "speedup_1M_x_1000": t_fl_extrap / t_ours_full_col,
            "note": "fairlearn resamples rows (utterances); ours resamples speakers. The 1M x "
                    "1000 fairlearn time is extrapolated linearly in rows x replicates.",
        },
        "point_estimates": {"max_abs_wer_difference": agree, "fairlearn_no_boot_1M_s": t_fl_points},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=2))

    fa = out["full_audit"]
    vs = out["vs_fairlearn"]
    print(f"data: {n_rows:,} utterances, {args.speakers:,} speakers, 192-dim embeddings, "
          f"{args.n_boot} speaker-bootstrap replicates, 2 threads")
    print(f"{'measure':<62} {'value':>14} {'target':>10}")
    rows = [
        ("full audit (3 columns + geo + geodemo + k-means), s", f"{fa['audit_s']:.1f}", "<= 60"),
        ("  of which " + ", ".join(f"{k} {v:.1f}" for k, v in fa["steps_s"].items()
                                  if k not in {"total", "report"}), "", ""),
        ("report writing (privacy, JSON, CSV, HTML + plots), s", f"{fa['report_s']:.1f}",
         "<= 2"),
        ("audit + report, s", f"{fa['total_s']:.1f}", "<= 10"),
        ("peak RSS of the audit process, MB", f"{fa['peak_rss_mb']:.0f}", "<= 4096"),
        ("geo regions / k-means k", f"{fa['n_regions']} / {fa['k']}", ""),
        (f"fairlearn MetricFrame {len(sub):,} rows x {args.fairlearn_boot} reps, s",
         f"{t_fl_sub:.2f}", ""),
        (f"ours (read+reduce+bootstrap) {len(sub):,} rows x {args.fairlearn_boot} reps, s",
         f"{t_ours_sub:.2f}", ""),
        ("speed ratio at equal data", f"{vs['speedup_equal_data']:.0f}x", ">= 10x"),
        ("fairlearn 1M rows x 1000 reps (EXTRAPOLATED), s", f"{t_fl_extrap:.0f}", ""),
        ("ours 1M rows x 1000 reps, one column (measured), s", f"{t_ours_full_col:.2f}", ""),
        ("speed ratio at 1M x 1000", f"{vs['speedup_1M_x_1000']:.0f}x", ">= 10x"),
        ("max |WER ours - WER fairlearn| (accent, gender, age_band)",
         f"{max(agree.values()):.1e}", "~0"),
    ]
    for name, v, tgt in rows:
        print(f"{name:<62} {v:>14} {tgt:>10}")
    print("method comparison:")
    for m in full["methods"]:
        print(f"  {m['method']:<22} bottom={str(m['bottom_cohort'])[:30]:<30} "
              f"gap={m['wer_gap_pct'] or float('nan'):.1f}% "
              f"share={m['bottom_share_speakers_pct'] or float('nan'):.1f}%")
    print(f"load average (1 min) {load_start:.2f} at the start, "
          f"{out['machine']['load_avg_1min_at_end']:.2f} at the end")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
