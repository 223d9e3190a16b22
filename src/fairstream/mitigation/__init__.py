"""Mitigation: act on the cohorts an audit found, and measure what changed.

* :mod:`fairstream.mitigation.penalty` — EWC and L2-SP as a loss term of the one training loop
  (:class:`AnchorPenalty`), the diagonal empirical Fisher and its file;
* :mod:`fairstream.mitigation.run` — ``fairstream mitigate``: cohort → training speakers →
  fine-tuning by method (``ewc``, ``finetune``, ``l2sp``, ``oversample``) → decode → compare;
* :mod:`fairstream.mitigation.compare` — before/after per cohort with paired speaker-bootstrap
  intervals (``fairstream compare``).

The cohort definitions themselves live with the audit (:mod:`fairstream.audit.cohorts`).
"""

from fairstream.mitigation.compare import Comparison, compare_results
from fairstream.mitigation.penalty import AnchorPenalty, estimate_fisher
from fairstream.mitigation.run import (
    METHODS,
    MIN_COHORT_SPEAKERS,
    MitigationConfig,
    MitigationResult,
    mitigate,
)

__all__ = [
    "METHODS", "MIN_COHORT_SPEAKERS", "AnchorPenalty", "Comparison", "MitigationConfig",
    "MitigationResult", "compare_results", "estimate_fisher", "mitigate",
]
