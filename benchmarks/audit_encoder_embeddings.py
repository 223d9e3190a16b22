"""Which speaker embedding lets the audit's k-means find accent: the recognizer's encoder
states against a speaker-verification model and the fbank fallback.

For the audited speakers of a results table (the demo's test split by default) and each
embedding source:

* ``ari_accent``: adjusted Rand index between accent and the audit's k-means clusters (the
  audit's own clustering, :func:`~fairstream.audit.embedding_cohorts.find_embedding_cohorts`,
  with k chosen by silhouette as in ``fairstream audit``, and with k = number of accents);
* ``accent_cv_accuracy``: how much accent information the embedding holds at all, whether or
  not it is the main axis k-means follows: 5-fold cross-validated accuracy of a logistic
  regression (standardized inputs, C = 0.1) predicting accent, mean and sd over shuffles,
  next to the majority-class rate.

Sources: the speaker-verification table (``--sv``, L2-normalized as the audit does), the fbank
fallback (z-scored), and the encoder of ``--checkpoint`` (z-scored) with mean and mean+std
pooling of its output frames and of the layers named in ``--layers``.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/audit_encoder_embeddings.py \\
        --results demo_out/results.parquet --corpus demo_out/corpus \\
        --checkpoint demo_out/exp/averaged.pt --sv demo_out/embeddings_speakers.parquet

Writes benchmarks/results/audit_encoder_embeddings.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fairstream._io import atomic_write_text
from fairstream.audit.embedding_cohorts import (
    EmbeddingConfig,
    Normalization,
    fallback_embeddings,
    find_embedding_cohorts,
    speaker_mean_embeddings,
)
from fairstream.audit.inputs import read_embeddings, read_results, read_speakers
from fairstream.audit.speaker_stats import SpeakerStats, speaker_stats
from fairstream.inference import load_transducer
from fairstream.inference.embeddings import utterance_encoder_stats

HERE = Path(__file__).resolve().parent


def _scores(stats: SpeakerStats, mat: np.ndarray, has: np.ndarray, norm: Normalization,
            repeats: int) -> dict[str, object]:
    accent = stats.table["accent"].astype(str).to_numpy()
    out: dict[str, object] = {"dims": int(mat.shape[1]), "normalize": norm}
    for name, k in (("silhouette", None), ("k_accents", len(set(accent)))):
        found = find_embedding_cohorts(stats, mat, has,
                                       EmbeddingConfig(k=k, normalize=norm, seed=0))
        out[f"k_{name}"] = found.k
        out[f"ari_accent_{name}"] = round(float(adjusted_rand_score(
            accent[has], found.cluster_codes[has])), 4)
    accs = [cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=0.1,
                                                                             max_iter=2000)),
                            mat[has], accent[has],
                            cv=StratifiedKFold(5, shuffle=True, random_state=r)).mean()
            for r in range(repeats)]
    out["accent_cv_accuracy"] = round(float(np.mean(accs)), 3)
    out["accent_cv_accuracy_sd"] = round(float(np.std(accs)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("demo_out/results.parquet"))
    ap.add_argument("--corpus", type=Path, default=Path("demo_out/corpus"))
    ap.add_argument("--checkpoint", type=Path, default=Path("demo_out/exp/averaged.pt"))
    ap.add_argument("--sv", type=Path, default=Path("demo_out/embeddings_speakers.parquet"),
                    help="speaker-verification embeddings (skipped if missing)")
    ap.add_argument("--layers", default="output,norms.1",
                    help="encoder layers: 'output' or submodule names of the encoder")
    ap.add_argument("--repeats", type=int, default=10, help="cross-validation shuffles")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "audit_encoder_embeddings.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    table = read_results(args.results)
    stats = speaker_stats(table, read_speakers(args.corpus / "speakers.csv"))
    utt = table.utterances
    utt_map = pd.Series(utt["speaker_id"].to_numpy(), index=utt["utt_id"].astype(str).to_numpy())
    rows: list[dict[str, object]] = []

    def add(source: str, mat: np.ndarray, has: np.ndarray, norm: Normalization) -> None:
        rows.append({"source": source, **_scores(stats, mat, has, norm, args.repeats)})
        print(rows[-1], flush=True)

    if args.sv.exists():
        ids, vec = read_embeddings(args.sv)
        mat, has, _ = speaker_mean_embeddings(ids, vec, stats, utt_map)
        add(f"speaker verification ({args.sv.name})", mat, has, "l2")
    mat, has, _ = fallback_embeddings(args.corpus, list(stats.table.index))
    add("fbank fallback (mean+std)", mat, has, "zscore")
    loaded = load_transducer(args.checkpoint)
    for layer in args.layers.split(","):
        enc = utterance_encoder_stats(loaded, args.corpus, utterances=utt["utt_id"].astype(str),
                                      layer=None if layer == "output" else layer, cache=False)
        for pooling in ("mean", "mean+std"):
            mat, has, _ = speaker_mean_embeddings(enc.utt_ids, enc.vectors(pooling), stats,
                                                  utt_map)
            add(f"encoder {layer} ({pooling})", mat, has, "zscore")

    majority = float(stats.table["accent"].value_counts(normalize=True).max())
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    print(f"majority accent rate {majority:.3f}; {stats.n_speakers} speakers")
    atomic_write_text(args.out, json.dumps({
        "results": str(args.results), "corpus": str(args.corpus),
        "checkpoint": str(args.checkpoint), "n_speakers": stats.n_speakers,
        "n_accents": int(stats.table["accent"].nunique()), "majority_accent_rate": majority,
        "cv_repeats": args.repeats, "machine": platform.machine(),
        "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
