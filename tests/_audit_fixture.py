"""A fixed synthetic audit input on disk, shared by the pinned-numbers and torch-free tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fairstream.audit.synthetic import make_synthetic_audit

ALL_METHODS = "attribute:accent,attribute:accent+gender,geo,geodemo,embedding"


def write_fixed_input(root: Path) -> Path:
    """The fixed synthetic audit input as files (results.csv, metadata, embeddings)."""
    d = make_synthetic_audit(n_speakers=240, n_accents=4, n_planted_accents=1,
                             accent_factor=2.2, geo_factor=2.5, rural_factor=1.3,
                             embedding_noise=0.3, seed=7)
    root.mkdir(parents=True, exist_ok=True)
    d.speakers.to_csv(root / "speakers.csv", index=False)
    d.zip_demographics.to_csv(root / "zip_demographics.csv", index=False)
    (root / "corpus.json").write_text(json.dumps({
        "format": "fairstream-corpus", "version": 1,
        "planted": {"under_represented_accents": d.planted["under_represented_accents"]},
    }))
    d.results.to_csv(root / "results.csv", index=False)
    np.save(root / "emb.npy", d.embeddings)
    (root / "emb_ids.txt").write_text("\n".join(d.embedding_ids) + "\n")
    return root
