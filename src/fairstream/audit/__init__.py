"""Fairness audit of speech recognition: disaggregated WER with speaker-bootstrap intervals,
and three ways to discover the cohorts a recognizer serves worst (geographic tree,
geodemographic partitions, embedding k-means).

Works on any recognizer's results table. Start with :func:`run_audit`.
"""

from __future__ import annotations

from fairstream.audit.api import DEFINITIONS, AuditConfig, AuditResult, parse_methods, run_audit
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
from fairstream.audit.privacy import PrivacyConfig
from fairstream.audit.speaker_stats import SpeakerStats, speaker_stats

__all__ = [
    "DEFINITIONS",
    "AuditConfig",
    "AuditResult",
    "ColumnMap",
    "EmbeddingConfig",
    "Exclusion",
    "GeoTreeConfig",
    "GeodemographicConfig",
    "GroupWER",
    "Partition",
    "PrivacyConfig",
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
    "run_audit",
    "speaker_stats",
]
