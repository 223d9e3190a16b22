"""Privacy rules of the audit.

* No speaker id or individual's metadata appears in a report unless asked for
  (``include_speaker_ids``): tables hold cohort aggregates only, exclusion examples are
  hidden, and the map shows speaker locations aggregated to grid cells.
* Cohorts below ``min_cohort_speakers`` (default 10) are pooled into one merged group, which
  is suppressed (numbers hidden, speakers still counted in "rest" and overall) if it is itself
  too small; the report lists what was pooled or suppressed. The geographic tree and the
  geodemographic search never form a region/cohort below the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairstream.audit.disaggregate import apply_min_size

__all__ = ["PrivacyConfig", "apply_min_size", "coarse_locations"]


@dataclass(frozen=True)
class PrivacyConfig:
    """Attributes:
    min_cohort_speakers: smallest cohort whose numbers are reported.
    include_speaker_ids: write per-speaker cohort assignments and exclusion examples.
    location_cell_deg: grid cell (degrees) speaker locations are aggregated to on the map.
    """

    min_cohort_speakers: int = 10
    include_speaker_ids: bool = False
    location_cell_deg: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cohort_speakers < 1:
            raise ValueError(f"min_cohort_speakers must be >= 1, got {self.min_cohort_speakers}")
        if self.location_cell_deg <= 0:
            raise ValueError(f"location_cell_deg must be > 0, got {self.location_cell_deg}")


def coarse_locations(
    lat: np.ndarray, lon: np.ndarray, cell_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate points to grid-cell centres.

    Returns:
        (cell centre latitudes (C,), longitudes (C,), speakers per cell (C,)).
    """
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    ci = np.floor(np.asarray(lat)[ok] / cell_deg).astype(np.int64)
    cj = np.floor(np.asarray(lon)[ok] / cell_deg).astype(np.int64)
    cells, counts = np.unique(np.stack([ci, cj], 1), axis=0, return_counts=True)
    return (cells[:, 0] + 0.5) * cell_deg, (cells[:, 1] + 0.5) * cell_deg, counts
