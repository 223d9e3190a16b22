"""Speaker verification: embedding-extraction real-time factor and scoring a million trials.

1. Extraction RTF on 1 CPU thread: audio file → fbank → CMVN → ECAPA-TDNN embedding for the
   first ``--utts`` utterances of a corpus split (default ``data/demo`` test), with the given
   checkpoint or a freshly initialized extractor of the default size (the cost is the same).
   RTF = processing seconds / audio seconds, split into features and network.
2. Scoring 1,000,000 trials (target: <= 5 s): 20,000 random 192-dim utterance embeddings,
   1,000,000 trials (10% targets) resolved against the table, cosine scores, EER and minDCF at
   two priors — end to end from the trial list in memory. Also with AS-norm (cohort of 1,000).
3. Speaker bootstrap of the EER: 1,000 replicates on a demo-sized list (20,000 trials, 100
   speakers), overall and by a two-group column.

Usage: ``nice -n 10 .venv/bin/python benchmarks/sv.py [--corpus data/demo --checkpoint CKPT]``
Writes benchmarks/results/sv.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent


def extraction_rtf(corpus: Path, checkpoint: Path | None, n_utts: int) -> dict[str, float]:
    from fairstream.data.corpus import load_corpus
    from fairstream.features.fbank import Cmvn
    from fairstream.models.speaker import EcapaTdnn, SpeakerModelConfig
    from fairstream.sv.embed import embed_features
    from fairstream.sv.train import LoadedExtractor, SvTrainConfig, load_extractor
    from fairstream.training.data import load_cut_features

    torch.set_num_threads(1)
    c = load_corpus(corpus)
    cuts = list(c.cuts("test"))[:n_utts]
    if checkpoint is not None:
        ext = load_extractor(checkpoint)
    else:
        mean, std = c.cmvn
        ext = LoadedExtractor(EcapaTdnn(SpeakerModelConfig()).eval(), Cmvn(mean, std),
                              SvTrainConfig(), Path("-"))
    audio_s = sum(float(x.duration) for x in cuts)
    t0 = time.perf_counter()
    feats = [load_cut_features(x) for x in cuts]
    t1 = time.perf_counter()
    embed_features(ext, feats)
    t2 = time.perf_counter()
    return {
        "utterances": len(cuts),
        "audio_s": audio_s,
        "features_s": t1 - t0,
        "network_s": t2 - t1,
        "rtf_features": (t1 - t0) / audio_s,
        "rtf_network": (t2 - t1) / audio_s,
        "rtf_total": (t2 - t0) / audio_s,
        "parameters": sum(p.numel() for p in ext.model.parameters()),
    }


def score_million(n_trials: int = 1_000_000, n_utts: int = 20_000) -> dict[str, float]:
    from fairstream.data.trials import Trial
    from fairstream.metrics.verification import verification_metrics
    from fairstream.sv.scoring import index_trials, score_trials

    rng = np.random.default_rng(0)
    spk = rng.integers(0, 1000, n_utts)
    centers = rng.standard_normal((1000, 192)).astype(np.float32)
    emb = centers[spk] + 1.5 * rng.standard_normal((n_utts, 192)).astype(np.float32)
    keys = [f"id{spk[i]:05d}/utt{i:06d}.wav" for i in range(n_utts)]
    by_spk: dict[int, list[int]] = {}
    for i, s in enumerate(spk):
        by_spk.setdefault(int(s), []).append(i)
    n_t = n_trials // 10
    a = rng.integers(0, n_utts, n_trials)
    b = rng.integers(0, n_utts, n_trials)
    for k in range(n_t):  # targets: another utterance of the same speaker
        pool = by_spk[int(spk[a[k]])]
        b[k] = pool[int(rng.integers(len(pool)))]
    labels = (spk[a] == spk[b]).astype(int)
    trials = [Trial(int(labels[k]), keys[a[k]], keys[b[k]]) for k in range(n_trials)]
    t0 = time.perf_counter()
    index = index_trials(trials, keys)
    t1 = time.perf_counter()
    scores = score_trials(emb, index)
    t2 = time.perf_counter()
    m = verification_metrics(scores, index.labels)
    t3 = time.perf_counter()
    cohort = rng.standard_normal((1000, 192)).astype(np.float32)
    t4 = time.perf_counter()
    normed = score_trials(emb, index, cohort=cohort)
    verification_metrics(normed, index.labels)
    t5 = time.perf_counter()
    return {
        "trials": n_trials,
        "utterances": n_utts,
        "index_s": t1 - t0,
        "cosine_s": t2 - t1,
        "eer_mindcf_s": t3 - t2,
        "total_s": t3 - t0,
        "asnorm_total_s": (t1 - t0) + (t5 - t4),
        "eer": m.eer,
    }


def bootstrap_speed(n_boot: int = 1000) -> dict[str, float]:
    from fairstream.metrics.verification import bootstrap_eer, trial_groups

    rng = np.random.default_rng(1)
    n, n_spk = 20_000, 100
    sa = rng.integers(0, n_spk, n)
    sb = np.where(rng.random(n) < 0.2, sa, rng.integers(0, n_spk, n))
    y = (sa == sb).astype(int)
    s = rng.normal(2.0 * y, 1.0)
    g = trial_groups([x % 2 for x in sa], [x % 2 for x in sb])
    t0 = time.perf_counter()
    bootstrap_eer(s, y, sa, sb, groups=g, n_boot=n_boot)
    seconds = time.perf_counter() - t0
    return {"trials": n, "speakers": n_spk, "replicates": n_boot, "groups": 2, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=HERE.parent / "data" / "demo")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--utts", type=int, default=100)
    args = p.parse_args()
    results: dict[str, object] = {"machine": platform.processor() or platform.machine(),
                                  "torch_threads": 1,
                                  "load_average_1min_at_start": os.getloadavg()[0]}
    if (args.corpus / "corpus.json").exists():
        results["extraction"] = extraction_rtf(args.corpus, args.checkpoint, args.utts)
    else:
        results["extraction"] = {"skipped": f"no corpus at {args.corpus}"}
    results["scoring_1m"] = score_million()
    results["bootstrap"] = bootstrap_speed()
    ex = results["extraction"]
    sc = results["scoring_1m"]
    bs = results["bootstrap"]
    rows = []
    if isinstance(ex, dict) and "rtf_total" in ex:
        rows += [
            (f"extraction RTF, 1 thread ({ex['utterances']} utts, {ex['audio_s']:.0f} s audio)",
             f"{ex['rtf_total']:.4f} (features {ex['rtf_features']:.4f}, "
             f"network {ex['rtf_network']:.4f})"),
        ]
    assert isinstance(sc, dict) and isinstance(bs, dict)
    rows += [
        ("score 1,000,000 trials: index + cosine + EER + 2 minDCF",
         f"{sc['total_s']:.2f} s (target <= 5 s)"),
        ("  of which cosine / metrics", f"{sc['cosine_s']:.2f} s / {sc['eer_mindcf_s']:.2f} s"),
        ("  with AS-norm (1,000 cohort)", f"{sc['asnorm_total_s']:.2f} s"),
        (f"speaker bootstrap, {bs['replicates']} replicates, {bs['trials']} trials, 2 groups",
         f"{bs['seconds']:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = HERE / "results" / "sv.json"
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
