"""Privacy that survives differencing: the attack before and after protection, what it costs.

1. The 20 randomized audits of ``tests/test_audit_privacy_attack.py`` (tiny accent and gender
   groups, speakers without coordinates, zip codes, embeddings or metadata; every method),
   attacked with that test's linear-algebra attack twice: on the report as published, and on
   the same numbers written without protection (what reports published before it). Counts
   the audits in which a set below the minimum is derivable, and what the protection
   withheld (cells, geodemographic candidates, bottom cohorts of the methods table).
2. The fixed synthetic input of the pinned-numbers test: what is withheld there.
3. The time of the protection on the scale benchmark's data (50,000 speakers, 1,000,000
   utterances, every method, 200 bootstrap replicates).

Usage: ``nice -n 10 .venv/bin/python benchmarks/audit_privacy.py``
Writes benchmarks/results/audit_privacy.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"


def _attack_module() -> ModuleType:
    """The attack of tests/test_audit_privacy_attack.py (loaded, not copied)."""
    sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location("privacy_attack",
                                                  TESTS / "test_audit_privacy_attack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _leaks(attack: ModuleType, result: object, truth: dict[str, object], out: Path) -> int:
    """How many quantities (speakers; errors and words; utterances) of the report in ``out``
    determine a set below the minimum."""
    eq = attack._equations(result, truth, out)
    n_min = result.config.privacy.min_cohort_speakers  # type: ignore[attr-defined]
    n_all = result.stats.n_speakers  # type: ignore[attr-defined]
    return sum(attack._determined(sets, n_min, n_all) is not None for sets in eq.sets.values())


def randomized(n_audits: int) -> dict[str, object]:
    attack = _attack_module()
    rows = []
    for seed in range(n_audits):
        root = Path(tempfile.mkdtemp(prefix="audit_privacy_"))
        result, truth = attack._make_audit(seed, root)
        report = root / "report"
        after = _leaks(attack, result, truth, report)
        plain = root / "unprotected"
        n_cells = attack._write_unprotected(result, plain)
        before = _leaks(attack, result, truth, plain)
        privacy = json.loads((report / "report.json").read_text())["privacy"]
        withheld = [x["cell"] for x in privacy["secondary_suppressed"]]
        geodemo = result.outcomes.get("geodemo")
        rows.append({
            "seed": seed, "speakers": result.stats.n_speakers,
            "min_cohort": result.config.privacy.min_cohort_speakers,
            "published_cells": n_cells,
            "leaking_quantities_unprotected": before, "leaking_quantities_protected": after,
            "primary_withheld": len(privacy["primary_suppressed"]),
            "secondary_withheld": len(withheld),
            "candidates": len(geodemo.detail.candidate_members) if geodemo else 0,
            "candidates_withheld": sum(w.startswith("geodemographic_candidates") for w in withheld),
            "methods": len(result.outcomes),
            "bottoms_withheld": sum(w.endswith("(bottom cohort)") for w in withheld),
        })
        print(rows[-1])
    return {
        "audits": n_audits,
        "audits_leaking_unprotected": sum(r["leaking_quantities_unprotected"] > 0 for r in rows),
        "audits_leaking_protected": sum(r["leaking_quantities_protected"] > 0 for r in rows),
        "secondary_withheld": sum(r["secondary_withheld"] for r in rows),
        "published_cells": sum(r["published_cells"] for r in rows),
        "candidates_withheld": sum(r["candidates_withheld"] for r in rows),
        "candidates": sum(r["candidates"] for r in rows),
        "bottoms_withheld": sum(r["bottoms_withheld"] for r in rows),
        "bottoms": sum(r["methods"] for r in rows),
        "rows": rows,
    }


def fixed() -> dict[str, object]:
    sys.path.insert(0, str(TESTS))
    from _audit_fixture import ALL_METHODS, write_fixed_input

    from fairstream.audit import AuditConfig, run_audit

    root = write_fixed_input(Path(tempfile.mkdtemp(prefix="audit_privacy_fixed_")))
    out = root / "report"
    run_audit(root / "results.csv", embeddings=root / "emb.npy",
              embedding_ids=root / "emb_ids.txt", corpus_dir=root, methods=ALL_METHODS,
              out_dir=out, config=AuditConfig(n_boot=200))
    privacy = json.loads((out / "report.json").read_text())["privacy"]
    return {"primary_withheld": len(privacy["primary_suppressed"]),
            "secondary_withheld": len(privacy["secondary_suppressed"])}


def scale(n_speakers: int) -> dict[str, object]:
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.audit.privacy import protect
    from fairstream.audit.publish import assemble
    from fairstream.audit.synthetic import make_synthetic_audit

    d = make_synthetic_audit(n_speakers=n_speakers, utts_per_speaker=20, n_accents=8,
                             embedding_dim=192, geo_factor=1.3, rural_factor=1.3, n_zips=2000,
                             seed=0)
    result = run_audit(d.results, speakers=d.speakers, zip_demographics=d.zip_demographics,
                       embeddings=(d.embedding_ids, d.embeddings),
                       methods="attribute:accent,attribute:gender,attribute:age_band,geo,"
                               "geodemo,embedding", config=AuditConfig(n_boot=200))
    pub, cells = assemble(result)
    t0 = time.perf_counter()
    out = protect(pub, cells, result.config.privacy)
    return {"speakers": n_speakers, "utterances": len(d.results), "published_cells": len(cells),
            "protect_s": round(time.perf_counter() - t0, 3),
            "secondary_withheld": len(out.data["privacy"]["secondary_suppressed"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audits", type=int, default=20)
    ap.add_argument("--scale-speakers", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "audit_privacy.json")
    args = ap.parse_args()
    out = {"randomized": randomized(args.audits), "fixed_input": fixed(),
           "scale": scale(args.scale_speakers)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=2))
    r = out["randomized"]
    print(f"randomized audits leaking a set below the minimum: {r['audits_leaking_unprotected']}"
          f"/{r['audits']} unprotected, {r['audits_leaking_protected']}/{r['audits']} "
          f"protected; withheld {r['secondary_withheld']} of {r['published_cells']} published "
          f"cells ({r['candidates_withheld']}/{r['candidates']} geodemographic candidates, "
          f"{r['bottoms_withheld']}/{r['bottoms']} bottom cohorts)")
    print(f"fixed input: {out['fixed_input']}")
    print(f"scale: {out['scale']}")


if __name__ == "__main__":
    main()
