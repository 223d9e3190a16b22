"""``AuditConfig``: every setting that shapes an audit (stored in report.json)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairstream.audit.embedding_cohorts import EmbeddingConfig
from fairstream.audit.geo_tree import GeoTreeConfig
from fairstream.audit.geodemographic import GeodemographicConfig
from fairstream.audit.inputs import ColumnMap
from fairstream.audit.privacy import PrivacyConfig

__all__ = ["AuditConfig"]


@dataclass(frozen=True)
class AuditConfig:
    """Everything that shapes an audit (stored in report.json).

    Attributes:
        n_boot: speaker-bootstrap replicates (0: no intervals; the geo tree then uses the
            Bonferroni-Gaussian rule with no standard errors and never splits).
        confidence: interval level.
        seed: seed of the bootstrap and k-means.
        columns: results column names.
        duplicates: "error" or "first" for repeated utterance ids.
        privacy: privacy rules.
        geo: geographic tree settings.
        geodemographic: geodemographic search settings.
        embedding: k-means settings.
        confirm_split: discover each method's bottom cohort on a random half of the speakers
            (drawn with ``seed``) and test it on the other half, instead of correcting the test
            for the search on all speakers (:func:`~fairstream.audit.run_audit`).
    """

    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    columns: ColumnMap = field(default_factory=ColumnMap)
    duplicates: str = "error"
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    geo: GeoTreeConfig = field(default_factory=GeoTreeConfig)
    geodemographic: GeodemographicConfig = field(default_factory=GeodemographicConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    confirm_split: bool = False
