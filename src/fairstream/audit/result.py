"""What an audit returns (:class:`AuditResult`) and the definitions of its numbers.

Both :mod:`fairstream.audit.api` (which builds a result) and :mod:`fairstream.audit.report`
(which writes one) import from here; neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairstream.audit.config import AuditConfig
from fairstream.audit.inputs import Exclusion
from fairstream.audit.methods import MethodOutcome
from fairstream.audit.speaker_stats import SpeakerStats

__all__ = ["DEFINITIONS", "AuditResult"]

DEFINITIONS = {
    "wer": "WER = Σ errors (substitutions + deletions + insertions) / Σ reference words over "
           "all utterances of the cohort (never a mean of utterance WERs).",
    "wer_gap": "WER gap (%) = (WER_bottom / WER_rest − 1) × 100, where rest is every other "
               "audited speaker.",
    "bottom_share": "Bottom-cohort share (%) = the bottom cohort's share of the audited "
                    "speakers; its share of reference words is shown next to it.",
    "bootstrap": "Intervals are percentile intervals of a speaker-level bootstrap: speakers "
                 "are resampled with replacement (their utterances stay together); p-values "
                 "test WER_cohort = WER_rest with the same replicates. In a cohort table they "
                 "are conditional: each cohort as if it had been named in advance.",
    "selection": "Each method reports the worst of the cohorts its search considered, so the "
                 "p-value and interval of its bottom cohort in the methods table are corrected "
                 "for that choice: with T = gap / se for every candidate cohort, p = share of "
                 "bootstrap replicates whose maximum over the candidates of |centred T| is at "
                 "least the bottom cohort's |T| (two-sided, +1 corrected), and the interval is "
                 "gap ± c·se with c the matching quantile of that maximum, widened to contain "
                 "the conditional interval (simultaneous over all candidates). With one "
                 "candidate nothing was chosen and the conditional figures stand. With "
                 "--confirm-split the cohort is found on half of the speakers and tested on "
                 "the other half. The *_naive figures are conditional on this choice.",
    "empty_reference": "An utterance whose normalized reference is empty adds 0 reference "
                       "words and every hypothesis word as an insertion.",
    "recovery": "Precision = share of the bottom cohort's speakers that are planted "
                "(under-represented accents of the synthetic corpus); recall = share of the "
                "planted speakers inside the bottom cohort; ARI = adjusted Rand index of the "
                "method's cohorts against accent.",
}


@dataclass(frozen=True)
class AuditResult:
    """What :func:`~fairstream.audit.run_audit` returns.

    Attributes:
        overall: overall WER with interval and totals.
        outcomes: method name → what the method produced (:class:`MethodOutcome`: its
            cohorts, cohort table, bottom cohort and its test, the method's own result), in
            the order the methods ran.
        exclusions: every row/speaker left out of some part, with reasons.
        notes: other facts the report states.
        provenance: inputs, versions, timings.
        config: the configuration used.
        stats: the per-speaker statistics every method worked on.
        out_dir: where the report was written (None if not written).
    """

    overall: dict[str, float]
    outcomes: dict[str, MethodOutcome]
    exclusions: tuple[Exclusion, ...]
    notes: tuple[str, ...]
    provenance: dict[str, object]
    config: AuditConfig
    stats: SpeakerStats
    out_dir: Path | None = None

    @property
    def methods(self) -> pd.DataFrame:
        """One row per method: bottom cohort, WER bottom/rest, WER gap with interval,
        p-value, bottom-cohort shares, recovery (precision, recall, ARI)."""
        return pd.DataFrame([o.test for o in self.outcomes.values()])

    @property
    def cohort_tables(self) -> dict[str, pd.DataFrame]:
        """Method name → its cohort table (``group`` + WER columns), worst first."""
        return {name: o.table for name, o in self.outcomes.items()}
