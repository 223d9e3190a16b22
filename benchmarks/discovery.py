"""Discovery benchmark: does each audit method find the cohorts a recognizer serves worst?

For every corpus seed a fresh set of unseen speakers is synthesized (the ``demo-clean``
preset's audit split: ``--speakers`` speakers x ``--utterances`` utterances, the normal accent
shares; train/dev/test are cut to one utterance of one speaker per accent, since only the audit
split is used). The recognizer under audit (``--checkpoint``, by default the demo's model,
trained on a corpus where the planted accents are rare) decodes it, and the audit runs
every discovery method on the result:

* ``attribute:accent`` — the oracle: cohorts by the attribute that was planted;
* ``geo`` — the geographic clustering tree over the speakers' home locations;
* ``geodemo`` — the search over zip-demographic partitions;
* ``embedding:speaker`` — k-means on the speaker-verification model's embeddings
  (``--sv-checkpoint``);
* ``embedding:encoder`` — k-means on the recognizer's own encoder states (per-speaker mean
  of each utterance's mean frame, :mod:`fairstream.inference.embeddings`).

Each search of ``--search`` is audited on its own: ``greedy`` (no LM: the acoustic model's
own errors, where the planted training imbalance acts) and ``recipe`` (the recipe's beam search
fused with its token LM, as the demo ships; the LM hides part of the acoustic disparity).

Per search, method and seed: the bottom cohort, its WER gap (relative, %) with the
selection-corrected interval and p-value (the method's search over its candidates accounted
for, see docs/audit.md), and its recovery of the planted speakers (precision, recall) and
agreement with accent (adjusted Rand index of the method's cohorts).

Usage::

    .venv/bin/python benchmarks/discovery.py --checkpoint demo_out/exp/averaged.pt \\
        --sv-checkpoint demo_out/sv/final.pt --seeds 1,2,3

Writes ``benchmarks/results/discovery.json`` (``rows``: ``method``, ``seed``, ``bottom_cohort``,
``gap_pct``, ``gap_ci`` (selection-corrected, %), ``p_corrected``, ``precision``, ``recall``,
``ari_accent``; plus ``search``, ``n_speakers_bottom``, ``p_naive``, ``gap_ci_naive``) after
every seed (atomically), so ``--resume`` continues a killed run; corpora, results and audit
reports stay in ``--workdir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
METHODS = ("attribute:accent", "geo", "geodemo", "embedding:speaker", "embedding:encoder")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The module docstring (python -m pydoc benchmarks/discovery.py) explains "
               "every column.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "demo_out/exp/averaged.pt",
                   help="the recognizer under audit (default: the demo's)")
    p.add_argument("--sv-checkpoint", type=Path, default=ROOT / "demo_out/sv/final.pt",
                   help="speaker-embedding model for embedding:speaker (default: the demo's)")
    p.add_argument("--seeds", default="1,2,3",
                   help="corpus seeds (comma-separated; avoid the recognizer's own corpus seed)")
    p.add_argument("--speakers", type=int, default=400, help="audited speakers per seed")
    p.add_argument("--utterances", type=int, default=4, help="utterances per speaker")
    p.add_argument("--search", default="greedy,recipe",
                   help="the recognizer's searches, each audited (comma-separated): greedy (no "
                        "LM, the acoustic model's own errors) and/or recipe (its recipe's beam "
                        "search + LM, as the demo)")
    p.add_argument("--pooling", choices=("mean", "mean+std"), default="mean+std",
                   help="frame pooling of the encoder embeddings")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    p.add_argument("--jobs", type=int, default=2, help="synthesis processes")
    p.add_argument("--workdir", type=Path, default=ROOT / "runs/discovery")
    p.add_argument("--out", type=Path, default=HERE / "results/discovery.json")
    p.add_argument("--resume", action="store_true", help="keep seeds already in --out")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _corpus_config(speakers: int, utterances: int) -> Any:  # Any: a CorpusConfig
    from fairstream.data.presets import SplitSpec, get_preset

    base = get_preset("demo-clean")
    n_acc = len(base.speakers.accents)
    return dataclasses.replace(
        base, preset="demo-clean-discovery",
        speakers=dataclasses.replace(base.speakers, n_train=n_acc, n_dev=n_acc, n_test=n_acc),
        utterances_per_speaker=(1, 1, 1),
        extra_splits=(SplitSpec("audit", speakers=speakers, utterances_per_speaker=utterances),))


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rows(methods: Any, name: str, seed: int, search: str
          ) -> list[dict[str, Any]]:  # Any: JSON rows
    out = []
    for r in methods.to_dict(orient="records"):
        out.append({
            "method": name if name.startswith("embedding") else r["method"], "seed": seed,
            "search": search,
            "bottom_cohort": r["bottom_cohort"],
            "n_speakers_bottom": int(r["n_speakers_bottom"]),
            "gap_pct": _num(r["wer_gap_pct"]),
            "gap_ci": [_num(r["wer_gap_ci_low"]), _num(r["wer_gap_ci_high"])],
            "p_corrected": _num(r["p_value"]),
            "gap_ci_naive": [_num(r.get("wer_gap_ci_low_naive")),
                             _num(r.get("wer_gap_ci_high_naive"))],
            "p_naive": _num(r.get("p_value_naive")),
            "precision": _num(r["precision"]), "recall": _num(r["recall"]),
            "ari_accent": _num(r["ari_accent"]),
        })
    return out


def _plain(speakers: Any) -> Any:  # Any: pandas frame in, bool series out
    return speakers["variant"].astype(str).str.fullmatch(r"[fm]\d")


def _profile(result: Any, corpus: Any) -> dict[str, dict[str, Any]]:  # Any: audit, corpus
    """Who each method's bottom cohort is, in the corpus's own speaker metadata (the recording
    conditions and voices the corpus drew per speaker): SNR, telephone, female and plain-variant
    shares and the most over-represented noise type, bottom against the rest."""
    spk = corpus.speakers.set_index("speaker_id").reindex(result.stats.table.index.astype(str))
    out: dict[str, dict[str, Any]] = {}  # Any: JSON
    for name, outcome in result.outcomes.items():
        mask = outcome.bottom.mask
        if not mask.any():
            continue
        bottom, rest = spk[mask], spk[~mask]
        share_b = bottom["noise_type"].value_counts(normalize=True)
        share_r = rest["noise_type"].value_counts(normalize=True).reindex(share_b.index)
        lift = (share_b / share_r.fillna(1e-9)).sort_values(ascending=False)
        out[name] = {
            "snr_db_mean": round(float(bottom["snr_db"].mean()), 2),
            "snr_db_mean_rest": round(float(rest["snr_db"].mean()), 2),
            "telephone_share": round(float(bottom["telephone"].astype(bool).mean()), 3),
            "telephone_share_rest": round(float(rest["telephone"].astype(bool).mean()), 3),
            "female_share": round(float((bottom["gender"] == "female").mean()), 3),
            "female_share_rest": round(float((rest["gender"] == "female").mean()), 3),
            # eSpeak's plain variants (f1-f5, m1-m8) against its character voices
            "plain_variant_share": round(float(_plain(bottom).mean()), 3),
            "plain_variant_share_rest": round(float(_plain(rest).mean()), 3),
            "top_noise_type": str(lift.index[0]),
            "top_noise_share": round(float(share_b[lift.index[0]]), 3),
            "top_noise_share_rest": round(float(share_r[lift.index[0]]), 3),
        }
    return out


def run_seed(args: argparse.Namespace, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build, decode, embed and audit one corpus seed; its rows and timings."""
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.data.corpus import load_corpus
    from fairstream.data.synthesis import build_corpus
    from fairstream.inference import (
        SearchConfig,
        decode_cuts,
        load_transducer,
        recipe_lm,
        recipe_search,
    )
    from fairstream.inference.embeddings import encoder_embeddings
    from fairstream.results import read_results, write_results
    from fairstream.sv.embed import embed_split

    progress = not args.no_progress
    work = args.workdir / f"seed{seed}"
    times: dict[str, float] = {}
    t = time.perf_counter()
    cdir = work / "corpus"
    build_corpus(_corpus_config(args.speakers, args.utterances), cdir, seed=seed,
                 jobs=args.jobs, resume=cdir.exists(), progress=progress)
    corpus = load_corpus(cdir)
    times["corpus_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    tables = {}
    for search_name in args.searches:
        results = work / f"results_{search_name}.parquet"
        if not results.exists():
            loaded = load_transducer(args.checkpoint)
            search = (SearchConfig() if search_name == "greedy"
                      else recipe_search(loaded.config, loaded.path))
            lm = recipe_lm(search, loaded.path)  # the recipe's LM, stored beside the checkpoint
            df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, corpus.cuts("audit"),
                             search=search, lm=lm, speakers=corpus.speakers, split="audit",
                             progress=progress)
            write_results(df, results, {"checkpoint": str(args.checkpoint),
                                        "decode": dataclasses.asdict(search)})
        tables[search_name], _ = read_results(results)
    times["decode_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    sv_emb = embed_split(args.sv_checkpoint, corpus, "audit", work / "sv_embeddings.parquet",
                         progress=progress)
    enc_ids, enc = encoder_embeddings(args.checkpoint, cdir, "audit", pooling=args.pooling,
                                      progress=progress)
    times["embed_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    cfg = AuditConfig(n_boot=args.n_boot, seed=seed)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"seed": seed}  # Any: JSON
    for search_name, table in tables.items():
        base = run_audit(table, corpus_dir=cdir, embeddings=sv_emb,
                         out_dir=work / f"audit_{search_name}",
                         methods="attribute:accent,geo,geodemo,embedding", config=cfg)
        found = base.methods
        new = _rows(found[found["method"] != "embedding"], "", seed, search_name)
        new += _rows(found[found["method"] == "embedding"], "embedding:speaker", seed,
                     search_name)
        enc_audit = run_audit(table, corpus_dir=cdir, embeddings=(enc_ids, enc),
                              out_dir=work / f"audit_{search_name}_encoder",
                              methods="embedding", config=cfg)
        new += _rows(enc_audit.methods, "embedding:encoder", seed, search_name)
        profile = _profile(base, corpus)
        profile["embedding:speaker"] = profile.pop("embedding", {})
        profile["embedding:encoder"] = _profile(enc_audit, corpus).get("embedding", {})
        for row in new:
            row["bottom_profile"] = profile.get(row["method"]) or None
        rows += new
        info.update(audited_speakers=int(base.overall["n_speakers"]),
                    audited_words=int(base.overall["ref_words"]))
        info[f"wer_{search_name}"] = float(base.overall["wer"])
    times["audit_s"] = round(time.perf_counter() - t, 1)
    return rows, {**info, **times}


def _table(rows: list[dict[str, Any]]) -> str:  # Any: JSON rows
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    def num(v: float | None, d: int = 2) -> str:
        return "—" if v is None else f"{v:.{d}f}"

    lines = ["| search | method | seed | bottom cohort | speakers | gap % [corrected 95 % CI] | "
             "p corrected | precision | recall | ARI accent |", "|---" * 10 + "|"]
    for r in rows:
        lo, hi = r["gap_ci"]
        lines.append(
            f"| {r['search']} | {r['method']} | {r['seed']} | {r['bottom_cohort'][:40]} | "
            f"{r['n_speakers_bottom']} | {pct(r['gap_pct'])} [{pct(lo)}, {pct(hi)}] | "
            f"{num(r['p_corrected'], 3)} | {num(r['precision'])} | {num(r['recall'])} | "
            f"{num(r['ari_accent'])} |")
    return "\n".join(lines)


def _summary(rows: list[dict[str, Any]]) -> str:  # Any: JSON rows
    import numpy as np

    lines = ["| search | method | seeds | significant (p < 0.05) | mean precision | "
             "mean recall | mean ARI accent |", "|---" * 7 + "|"]
    searches = sorted({r.get("search", "recipe") for r in rows})
    for search, m in ((s, m) for s in searches for m in METHODS):
        mine = [r for r in rows if r["method"] == m and r.get("search", "recipe") == search]
        if not mine:
            continue

        def mean(key: str, rs: list[dict[str, Any]] = mine) -> str:  # Any: JSON rows
            v = [r[key] for r in rs if r[key] is not None]
            return f"{np.mean(v):.2f}" if v else "—"

        sig = sum(1 for r in mine if r["p_corrected"] is not None and r["p_corrected"] < 0.05)
        lines.append(f"| {search} | {m} | {len(mine)} | {sig} / {len(mine)} | "
                     f"{mean('precision')} | "
                     f"{mean('recall')} | {mean('ari_accent')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from fairstream._io import atomic_write_text

    torch.set_num_threads(1)
    for path in (args.checkpoint, args.sv_checkpoint):
        if not path.is_file():
            sys.exit(f"checkpoint not found: {path} (run `make demo` first, or pass it)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.searches = [s.strip() for s in args.search.split(",") if s.strip()]
    bad = [s for s in args.searches if s not in ("greedy", "recipe")]
    if bad or not args.searches:
        sys.exit(f"--search: unknown search(es) {bad}; use greedy and/or recipe")
    data: dict[str, Any] = {"rows": [], "seeds": [], "config": {}}  # Any: JSON
    if args.resume and args.out.exists():
        data = json.loads(args.out.read_text())
    done = {s["seed"] for s in data.get("seeds", [])
            if all(f"wer_{x}" in s for x in args.searches)}
    data["config"] = {"checkpoint": str(args.checkpoint), "sv_checkpoint": str(args.sv_checkpoint),
                      "speakers": args.speakers, "utterances": args.utterances,
                      "searches": args.searches, "pooling": args.pooling, "n_boot": args.n_boot,
                      "methods": list(METHODS), "machine": platform.platform(),
                      "command": " ".join(["python benchmarks/discovery.py", *(argv or
                                                                               sys.argv[1:])])}
    for seed in seeds:
        if seed in done:
            print(f"seed {seed}: in {args.out}, skipped")
            continue
        print(f"== seed {seed}")
        rows, info = run_seed(args, seed)
        data["rows"] = [r for r in data["rows"] if r["seed"] != seed] + rows
        data["seeds"] = [s for s in data["seeds"] if s["seed"] != seed] + [info]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(data, indent=2, allow_nan=False))
        print(_table(rows))
    print()
    print(_table(data["rows"]))
    print()
    print(_summary(data["rows"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
