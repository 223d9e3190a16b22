"""The audit of 100 M utterance rows on Dask: time and memory as the rows grow.

Data: a results table partitioned into Parquet files of ``--partition-rows`` rows each
(``utt_id``, ``speaker_id`` and int16 error counts ``sub del ins hits``), over
``--speakers`` speakers whose metadata (accent, gender, age band, coordinates, zip) is a
separate speaker table, with zip demographics beside it. Speakers' error rates carry
planted effects (two accents × 2, the West × 1.5) so the audit has something to find.
The files are written to local disk (``--data-dir``, default a temporary directory) and
deleted afterwards.

Each size in ``--rows`` runs ``fairstream audit --engine dask --workers N`` in a fresh
process (a ``LocalCluster`` of N single-threaded worker processes) with ``--n-boot``
speaker-bootstrap replicates and the methods attribute (accent, gender, age band), geo and
geodemo. Measured: the wall time of the whole command (``seconds``: start-up, the Dask
reduction, the audit on the per-speaker sums, the report), the reduction's own time, and the
peak resident memory of the whole process tree (client plus workers, sampled every 0.2 s;
``peak_rss_mb``) and of the client alone.

Usage: ``nice -n 10 .venv/bin/python benchmarks/audit_dask.py [--rows 10000000,100000000]``
Writes benchmarks/results/audit_dask.json (``runs``: rows, partitions, workers, seconds,
peak_rss_mb, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent
METHODS = "attribute:accent,attribute:gender,attribute:age_band,geo,geodemo"


def _speakers(n_speakers: int, out: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write speakers.parquet and zips.csv; return the speaker ids and error rates."""
    from fairstream.audit.synthetic import make_synthetic_audit

    syn = make_synthetic_audit(n_speakers=n_speakers, utts_per_speaker=1, n_zips=2000,
                               seed=seed)
    spk = syn.speakers
    spk.to_parquet(out / "speakers.parquet", index=False)
    syn.zip_demographics.to_csv(out / "zips.csv", index=False)
    rng = np.random.default_rng(seed + 1)
    factor = np.where(spk["accent"].isin(syn.planted["under_represented_accents"]), 2.0, 1.0)
    factor *= np.where(spk["lon"] < float(syn.planted["geo_west_of"]), 1.5, 1.0)  # type: ignore[arg-type]
    p = np.clip(0.08 * factor * rng.lognormal(0.0, 0.15, n_speakers), 0.0, 0.9)
    return spk["speaker_id"].to_numpy(dtype=object), p


def _write_logs(rows: int, per_file: int, ids: np.ndarray, p: np.ndarray, out: Path,
                seed: int) -> int:
    """Partitioned Parquet logs; returns the number of files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    spk_ids = pa.array(ids, pa.string())
    n_files = 0
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        rng = np.random.default_rng([seed, start])
        spk = rng.integers(0, len(ids), n)
        words = rng.integers(3, 25, n)
        pu = p[spk]
        sub = rng.binomial(words, 0.6 * pu)
        dele = rng.binomial(words - sub, np.clip(0.3 * pu / (1 - 0.6 * pu), 0, 1))
        ins = rng.poisson(0.1 * pu * words)
        utt = pc.binary_join_element_wise(
            "u", pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + n)), pa.string()), 10,
                              "0"), "")
        table = pa.table({
            "utt_id": utt, "speaker_id": spk_ids.take(pa.array(spk)),
            "sub": sub.astype(np.int16), "del": dele.astype(np.int16),
            "ins": ins.astype(np.int16), "hits": (words - sub - dele).astype(np.int16),
        })
        pq.write_table(table, out / f"part-{n_files:05d}.parquet")
        n_files += 1
    return n_files


class _TreeMemory:
    """Peak RSS of a process and its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_root = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = self.proc.memory_info().rss
                tree = root
                for c in self.proc.children(recursive=True):
                    try:
                        tree += c.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_root = max(self.peak_root, root)
                self.peak_tree = max(self.peak_tree, tree)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _audit(logs: Path, data: Path, out: Path, workers: int, n_boot: int) -> dict[str, object]:
    cmd = [sys.executable, "-m", "fairstream", "audit", "--results", str(logs / "*.parquet"),
           "--engine", "dask", "--workers", str(workers), "--speakers",
           str(data / "speakers.parquet"), "--zip-demographics", str(data / "zips.csv"),
           "--methods", METHODS, "--n-boot", str(n_boot), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(workers), "OPENBLAS_NUM_THREADS": str(workers)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    mem = _TreeMemory(proc.pid)
    output, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    mem.stop()
    if proc.returncode != 0:
        raise SystemExit(f"audit failed ({proc.returncode}):\n{output}")
    report = json.loads((out / "report.json").read_text())
    prov = report["provenance"]
    methods = [{k: m.get(k) for k in ("method", "bottom_cohort", "wer_gap_pct", "p_value")}
               for m in report["methods"]]
    return {
        "seconds": round(seconds, 2),
        "reduce_s": prov["engine"]["seconds"],
        "audit_s": prov["timings_s"]["total"],
        "peak_rss_mb": round(mem.peak_tree / 2**20, 1),
        "peak_rss_client_mb": round(mem.peak_root / 2**20, 1),
        "speakers_audited": prov["n_speakers"],
        "audit_steps_s": prov["timings_s"],
        "methods": methods,
        "stdout_tail": output.strip().splitlines()[-8:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10000000,100000000",
                    help="comma-separated row counts, each audited in its own run")
    ap.add_argument("--speakers", type=int, default=1_000_000)
    ap.add_argument("--partition-rows", type=int, default=1_000_000,
                    help="rows per Parquet file (one Dask partition each)")
    ap.add_argument("--workers", type=int, default=2, help="local Dask workers")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="where to write the data (default: a temporary directory)")
    ap.add_argument("--keep-data", action="store_true", help="do not delete the data")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "audit_dask.json")
    args = ap.parse_args()
    sizes = [int(float(r)) for r in args.rows.split(",")]

    root = Path(tempfile.mkdtemp(prefix="fairstream-dask-", dir=args.data_dir))
    runs = []
    try:
        t = time.perf_counter()
        ids, p = _speakers(args.speakers, root, args.seed)
        speakers_s = time.perf_counter() - t
        print(f"speaker table: {args.speakers:,} speakers in {speakers_s:.1f} s", flush=True)
        for rows in sizes:
            logs = root / f"logs-{rows}"
            t = time.perf_counter()
            files = _write_logs(rows, args.partition_rows, ids, p, logs, args.seed)
            gen_s = time.perf_counter() - t
            size_mb = sum(f.stat().st_size for f in logs.iterdir()) / 2**20
            print(f"{rows:,} rows: {files} files, {size_mb:.0f} MB written in {gen_s:.1f} s",
                  flush=True)
            res = _audit(logs, root, root / f"audit-{rows}", args.workers, args.n_boot)
            runs.append({"rows": rows, "partitions": files, "workers": args.workers,
                         "seconds": res.pop("seconds"), "peak_rss_mb": res.pop("peak_rss_mb"),
                         "speakers": args.speakers, "n_boot": args.n_boot,
                         "data_mb": round(size_mb, 1), "generate_s": round(gen_s, 2), **res})
            print(f"  audit: {runs[-1]['seconds']:.1f} s (reduction {res['reduce_s']:.1f} s, "
                  f"audit of the sums {res['audit_s']:.1f} s), peak memory "
                  f"{runs[-1]['peak_rss_mb']:.0f} MB (client {res['peak_rss_client_mb']:.0f} MB)",
                  flush=True)
            shutil.rmtree(logs, ignore_errors=True)
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'rows':>12} {'files':>6} {'workers':>7} {'seconds':>8} {'reduce s':>9} "
          f"{'audit s':>8} {'peak MB':>8}")
    for r in runs:
        print(f"{r['rows']:>12,} {r['partitions']:>6} {r['workers']:>7} {r['seconds']:>8.1f} "
              f"{r['reduce_s']:>9.1f} {r['audit_s']:>8.1f} {r['peak_rss_mb']:>8.0f}")
    out = {
        "benchmark": "audit_dask",
        "command": "python benchmarks/audit_dask.py " + " ".join(sys.argv[1:]),
        "targets": {"seconds_max": 300, "peak_rss_mb_max": 4096},
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1min_at_end": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
