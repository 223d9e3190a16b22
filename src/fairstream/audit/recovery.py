"""Recovery of planted cohorts: did a method find what the synthetic corpus planted?

The synthetic corpus documents its planted disparity in ``corpus.json`` under ``"planted"``
(e.g. ``{"under_represented_accents": ["en-gb-scotland", ...], ...}``). A speaker is
*planted* when its accent is one of the under-represented accents. For a method's bottom
cohort B and the planted set P:

* precision = |B ∩ P| / |B|, recall = |B ∩ P| / |P|;
* adjusted Rand index (ARI) between the method's partition and the accent labels, over the
  speakers the partition covers (1 = identical grouping, ≈ 0 = chance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from fairstream.data.layout import CORPUS_JSON, read_corpus_json
from fairstream.errors import InputDataError

__all__ = ["Recovery", "load_planted", "planted_mask", "recovery"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """Precision/recall of a bottom cohort against the planted speakers, ARI against accent."""

    precision: float
    recall: float
    adjusted_rand_accent: float
    n_bottom: int
    n_planted: int


def load_planted(corpus_dir: str | Path) -> dict[str, object] | None:
    """The ``"planted"`` entry of ``corpus_dir/corpus.json`` (None when there is none).

    Raises:
        CorpusError: ``corpus.json`` is not a fairstream corpus description of a readable
            layout version (see :func:`fairstream.data.layout.read_corpus_json`).
        InputDataError: its ``planted`` entry is not an object.
    """
    path = Path(corpus_dir) / CORPUS_JSON
    if not path.exists():
        logger.info("no %s: planted-cohort recovery not computed", path)
        return None
    info = read_corpus_json(corpus_dir)
    planted = info.get("planted")
    if planted is not None and not isinstance(planted, dict):
        raise InputDataError(f"{path}: 'planted' must be an object, got {type(planted).__name__}")
    return planted


def planted_mask(accents: np.ndarray, planted: dict[str, object]) -> np.ndarray | None:
    """(S,) bool: speaker's accent is planted as under-represented (None if not specified)."""
    names = planted.get("under_represented_accents")
    if not names:
        return None
    if not isinstance(names, (list, tuple)):
        raise InputDataError(f"'under_represented_accents' must be a list, got {names!r}")
    return np.isin(np.asarray(accents).astype(str), [str(n) for n in names])


def recovery(
    bottom: np.ndarray, planted: np.ndarray, codes: np.ndarray | None, accents: np.ndarray | None
) -> Recovery:
    """Score a bottom cohort.

    Args:
        bottom: (S,) bool, speakers in the method's bottom cohort.
        planted: (S,) bool, planted speakers.
        codes: (S,) partition codes of the method (-1 = not covered) for the ARI, or None.
        accents: (S,) accent labels, or None.
    """
    tp = int((bottom & planted).sum())
    nb, npl = int(bottom.sum()), int(planted.sum())
    ari = float("nan")
    if codes is not None and accents is not None:
        cov = codes >= 0
        if cov.sum() >= 2:
            ari = float(adjusted_rand_score(np.asarray(accents)[cov].astype(str), codes[cov]))
    return Recovery(
        precision=tp / nb if nb else float("nan"),
        recall=tp / npl if npl else float("nan"),
        adjusted_rand_accent=ari, n_bottom=nb, n_planted=npl,
    )
