"""Fairness audit of speech recognition: disaggregated WER with speaker-bootstrap intervals,
and three ways to discover the cohorts a recognizer serves worst (geographic tree,
geodemographic partitions, embedding k-means).

Works on any recognizer's results table. Start with :func:`run_audit`. Each way of finding
cohorts is an :class:`AuditMethod` (:mod:`fairstream.audit.methods`); a new one is a subclass
registered with :func:`register_method`. :class:`AuditResult` keeps what each method produced
as a :class:`MethodOutcome`, keyed by the method's name.

Importing this package never imports PyTorch: an auditor of another recognizer's output needs
only the base install (the fbank fallback embedding needs the ``[asr]`` extra).
"""

from __future__ import annotations

from fairstream.audit.api import run_audit
from fairstream.audit.config import AuditConfig
from fairstream.audit.disaggregate import GroupWER, Partition, disaggregate
from fairstream.audit.embedding_cohorts import EmbeddingConfig
from fairstream.audit.geo_tree import GeoTreeConfig
from fairstream.audit.geodemographic import GeodemographicConfig
from fairstream.audit.inputs import (
    ColumnMap,
    Exclusion,
    ResultsTable,
    read_embeddings,
    read_kaldi,
    read_results,
    read_speakers,
    read_trn,
    read_zip_demographics,
)
from fairstream.audit.methods import (
    AuditInputs,
    AuditMethod,
    Bottom,
    MethodOutcome,
    Proposal,
    ReportSection,
    parse_methods,
    register_method,
)
from fairstream.audit.privacy import PrivacyConfig
from fairstream.audit.result import DEFINITIONS, AuditResult
from fairstream.audit.speaker_stats import SpeakerStats, speaker_stats

__all__ = [
    "DEFINITIONS",
    "AuditConfig",
    "AuditInputs",
    "AuditMethod",
    "AuditResult",
    "Bottom",
    "ColumnMap",
    "EmbeddingConfig",
    "Exclusion",
    "GeoTreeConfig",
    "GeodemographicConfig",
    "GroupWER",
    "MethodOutcome",
    "Partition",
    "PrivacyConfig",
    "Proposal",
    "ReportSection",
    "ResultsTable",
    "SpeakerStats",
    "disaggregate",
    "parse_methods",
    "read_embeddings",
    "read_kaldi",
    "read_results",
    "read_speakers",
    "read_trn",
    "read_zip_demographics",
    "register_method",
    "run_audit",
    "speaker_stats",
]
