"""What a report publishes, assembled in one place and protected before anything is written.

:func:`published_report` builds report.json's data and every CSV table from an
:class:`~fairstream.audit.AuditResult`, together with the privacy ledger: one
:class:`~fairstream.audit.privacy.Cell` per published set of speakers (the overall line, each
cohort row, each methods-table bottom cohort, each geodemographic candidate, each node of a
geographic split test, each exclusion counted in speakers, the speakers without metadata, the
planted speakers and their overlap with each bottom cohort), with every place its numbers
appear. It then passes both through :func:`~fairstream.audit.privacy.protect` once; the JSON,
the CSV files and report.html are all written or drawn from what comes out.

A table a method adds (:meth:`~fairstream.audit.AuditMethod.report_tables`) whose rows the
ledger cannot map to sets of speakers is withheld while the protection is on (the privacy
record names it); the geographic split tests and the geodemographic candidates are mapped.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream.audit.geo_tree import GeoTree
from fairstream.audit.geodemographic import GeodemographicResult
from fairstream.audit.inputs import Exclusion
from fairstream.audit.privacy import (
    ALL_QUANTITIES,
    LOCKED,
    SPEAKERS_ONLY,
    WITHHELD,
    Cell,
    Place,
    Published,
    protect,
)
from fairstream.audit.recovery import planted_mask
from fairstream.audit.result import DEFINITIONS, AuditResult
from fairstream.audit.speaker_stats import UNKNOWN

__all__ = ["Published", "assemble", "clean", "published_report", "table_name"]

#: withheld first: recovery counts, alternative candidates, split-test counts, cohort rows,
#: exclusion counts and notes, then the bottom cohorts of the methods table.
RANK_RECOVERY, RANK_CANDIDATE, RANK_SPLIT, RANK_COHORT, RANK_COUNT, RANK_BOTTOM = range(6)

#: numeric columns that are not totals of a set of speakers (never blanked).
_NOT_TOTALS = frozenset({"lat_min", "lat_max", "lon_min", "lon_max", "depth", "threshold",
                         "ari_accent", "n_candidates"})

_UNKNOWN_NOTE = re.compile(r"^(\d+) speakers \((\d+) utterances\) of the results have no row "
                           r"in the speaker table")


def clean(obj: Any) -> Any:  # Any: JSON-like data of any shape, in and out
    """JSON-safe: NaN/inf/NA → None, numpy scalars → python."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if not math.isfinite(v) else v
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is pd.NA:
        return None
    return obj


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:  # Any: table cells of any type
    return clean(df.to_dict(orient="records"))


def table_name(method: str) -> str:
    """The cohort table file of a method, e.g. ``cohorts_attribute_accent.csv``."""
    return "cohorts_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", method) + ".csv"


def _totals(table: pd.DataFrame) -> tuple[str, ...]:
    """The columns of ``table`` that are totals of a set of speakers or follow from them
    (counts, WERs, shares, gaps, intervals, p-values): every numeric column but booleans and
    :data:`_NOT_TOTALS`."""
    return tuple(c for c in table.columns
                 if pd.api.types.is_numeric_dtype(table[c])
                 and not pd.api.types.is_bool_dtype(table[c]) and c not in _NOT_TOTALS)


def _row_places(table: str, path: tuple[str, ...], row: int, hide: tuple[str, ...],
                set_to: tuple[tuple[str, object], ...] = (), in_data: bool = True
                ) -> tuple[Place, ...]:
    """A table row and its mirror in report.json."""
    places = [Place(("table", table), row, hide, set_to)]
    if in_data:
        places.append(Place(("data", *path), row, hide, set_to))
    return tuple(places)


def _outer_edges_coarsened(table: pd.DataFrame, cell_deg: float) -> pd.DataFrame:
    """Region boxes whose outer edges (the extreme speakers' coordinates) are moved out to
    the location grid; inner edges (split thresholds) stay."""
    out = table.copy()
    for low, high in (("lat_min", "lat_max"), ("lon_min", "lon_max")):
        if low not in out.columns or high not in out.columns or out.empty:
            continue
        lo, hi = out[low].min(), out[high].max()
        out.loc[out[low] == lo, low] = np.floor(lo / cell_deg) * cell_deg
        out.loc[out[high] == hi, high] = np.ceil(hi / cell_deg) * cell_deg
    return out


def _exclusion_members(result: AuditResult, x: Exclusion) -> np.ndarray | None:
    """The speakers an exclusion counts (None: not known to the ledger)."""
    outcome = next((o for o in result.outcomes.values() if o.method.speaker_column == x.stage),
                   None)
    if outcome is None:
        return None
    outside = outcome.partition.codes < 0
    same = [e for e in result.exclusions if e.stage == x.stage and e.unit == "speakers"]
    if len(same) == 1:
        return outside
    table, cfg = result.stats.table, result.config
    if x.stage == "geo":  # missing (NaN) coordinates vs out of range
        lat = table[cfg.geo.lat_col].to_numpy(np.float64)
        lon = table[cfg.geo.lon_col].to_numpy(np.float64)
        nan = ~(np.isfinite(lat) & np.isfinite(lon))
        return outside & (nan if x.reason.startswith("missing") else ~nan)
    if x.stage == "geodemographic":  # no zip code vs a zip code not in the table
        zips = table[cfg.geodemographic.zip_col].astype("object")
        no_zip = (zips.isna() | (zips == UNKNOWN)).to_numpy()
        return outside & (no_zip if "no zip code" in x.reason else ~no_zip)
    return None


def _without_metadata(result: AuditResult, n: int) -> np.ndarray | None:
    """The speakers of the results without a row in the speaker table (None if they cannot
    be told apart from speakers whose metadata are all missing)."""
    table = result.stats.table
    none = np.ones(len(table), dtype=bool)
    for c in result.stats.metadata_columns:
        col = table[c]
        none &= (col.isna() if pd.api.types.is_numeric_dtype(col)
                 else col.astype(str) == UNKNOWN).to_numpy()
    return none if int(none.sum()) == n else None


def assemble(result: AuditResult) -> tuple[Published, list[Cell]]:
    """report.json's data, the CSV tables and the privacy ledger, unprotected."""
    show = result.config.privacy.include_speaker_ids
    n_spk = result.stats.n_speakers
    methods = result.methods
    cohorts = {m: (o.table if show or not isinstance(o.detail, GeoTree)
                   else _outer_edges_coarsened(o.table, result.config.privacy.location_cell_deg))
               for m, o in result.outcomes.items()}
    data: dict[str, Any] = {  # Any: the JSON report
        "format": "fairstream-audit",
        "version": 1,
        "overall": result.overall,
        "definitions": DEFINITIONS,
        "methods": _records(methods),
        "cohorts": {m: _records(t) for m, t in cohorts.items()},
        "exclusions": [x.to_dict(with_examples=show) for x in result.exclusions],
        "notes": list(result.notes),
        "provenance": result.provenance,
        "config": asdict(result.config),
    }
    for outcome in result.outcomes.values():
        data.update(outcome.method.report_data(outcome))
    data = clean(data)
    tables: dict[str, pd.DataFrame] = {"methods.csv": methods.copy()}
    cells = [Cell("overall", np.ones(n_spk, dtype=bool), ALL_QUANTITIES, LOCKED)]
    withheld_tables: list[str] = []

    accents = (result.stats.table["accent"].to_numpy()
               if "accent" in result.stats.table.columns else None)
    planted = result.provenance.get("planted")
    pmask = (planted_mask(accents, planted)
             if isinstance(planted, dict) and accents is not None else None)
    if pmask is not None:
        cells.append(Cell("provenance: planted_speakers", pmask, SPEAKERS_ONLY, RANK_RECOVERY,
                          (Place(("data", "provenance"), None, ("planted_speakers",)),)))
    hide_methods = _totals(methods)
    for i, (m, outcome) in enumerate(result.outcomes.items()):
        bottom = np.asarray(outcome.bottom.mask, dtype=bool)
        cells.append(Cell(f"methods.csv: {m} (bottom cohort)", bottom, ALL_QUANTITIES,
                          RANK_BOTTOM, _row_places("methods.csv", ("methods",), i,
                                                   hide_methods)))
        if pmask is not None:
            recovery = tuple(c for c in ("precision", "recall") if c in methods.columns)
            cells.append(Cell(f"methods.csv: {m} (precision, recall)", bottom & pmask,
                              SPEAKERS_ONLY, RANK_RECOVERY,
                              _row_places("methods.csv", ("methods",), i, recovery)))
        cells += _cohort_cells(m, cohorts[m], outcome.partition.labels,
                               outcome.partition.codes, bottom)
        tables[table_name(m)] = cohorts[m].copy()
        for name, extra in outcome.method.report_tables(outcome).items():
            mapped = _extra_cells(name, extra, outcome.detail, outcome.partition.codes, data)
            if mapped is None and not show:
                withheld_tables.append(name)
                continue
            cells += mapped or []
            tables[name] = extra.copy()
    ex_cols = ["stage", "reason", "count", "unit"] + (["examples"] if show else [])
    tables["exclusions.csv"] = pd.DataFrame(
        [x.to_dict(with_examples=show) for x in result.exclusions], columns=ex_cols)
    for i, x in enumerate(result.exclusions):
        if x.unit == "speakers":
            note = (("reason", f"{x.reason} (count withheld for privacy)"),)
            cells.append(Cell(f"exclusions.csv: {x.stage}: {x.reason}",
                              _exclusion_members(result, x), SPEAKERS_ONLY, RANK_COUNT,
                              _row_places("exclusions.csv", ("exclusions",), i, ("count",),
                                          note)))
    for i, text in enumerate(data["notes"]):
        found = _UNKNOWN_NOTE.match(text)
        if found:
            replaced = _UNKNOWN_NOTE.sub("Speakers (how many is withheld for privacy) of the "
                                         "results have no row in the speaker table", text)
            cells.append(Cell("notes: speakers without a row in the speaker table",
                              _without_metadata(result, int(found.group(1))), ALL_QUANTITIES,
                              RANK_COUNT,
                              (Place(("data", "notes"), i, (), (("text", replaced),)),)))
    if withheld_tables:
        data["privacy"] = {"withheld_tables": withheld_tables}
    return Published(data, tables), cells


def _cohort_cells(method: str, table: pd.DataFrame, labels: tuple[str, ...],
                  codes: np.ndarray, bottom: np.ndarray) -> list[Cell]:
    """One cell per reported row of a method's cohort table."""
    hide = _totals(table)
    name = table_name(method)
    out = []
    for i, (label, status) in enumerate(zip(table["group"], table["status"])):
        if status == "suppressed" or label not in labels:
            continue  # already blank
        members = codes == labels.index(label)
        rank = RANK_BOTTOM if np.array_equal(members, bottom) else RANK_COHORT
        out.append(Cell(f"{name}: {label}", members, ALL_QUANTITIES, rank,
                        _row_places(name, ("cohorts", method), i, hide,
                                    (("status", WITHHELD),))))
    return out


def _extra_cells(name: str, table: pd.DataFrame, detail: object, codes: np.ndarray,
                 data: dict[str, Any]) -> list[Cell] | None:  # Any: the JSON report
    """Cells of a method's own table (None: its rows cannot be mapped to speakers)."""
    hide = _totals(table)
    if isinstance(detail, GeoTree) and len(table) == len(detail.tests):
        out = []
        paths = [r.path for r in detail.regions]
        for i, t in enumerate(detail.tests):
            inside = [r.region_id for r, p in zip(detail.regions, paths)
                      if t.path == "all" or p == t.path or p.startswith(t.path + " & ")]
            out.append(Cell(f"{name}: {t.path}", np.isin(codes, inside) & (codes >= 0),
                            SPEAKERS_ONLY, RANK_SPLIT,
                            _row_places(name, ("geo_split_tests",), i, hide)))
        return out
    if (isinstance(detail, GeodemographicResult)
            and len(detail.candidate_members) == len(table)):
        top = len((data.get("geodemographic") or {}).get("top_candidates") or [])
        out = []
        for i, members in enumerate(detail.candidate_members):
            mask = np.zeros(len(codes), dtype=bool)
            mask[members] = True
            definition = table["definition"].iloc[i] if "definition" in table else i
            places = (Place(("table", name), i, hide),) + (
                (Place(("data", "geodemographic", "top_candidates"), i, hide),) if i < top
                else ())
            out.append(Cell(f"{name}: {definition}", mask, ALL_QUANTITIES,
                            RANK_BOTTOM if i == 0 else RANK_CANDIDATE, places))
        return out
    return None


def published_report(result: AuditResult) -> Published:
    """Everything the report publishes, privacy protection applied
    (:func:`~fairstream.audit.privacy.protect`); with speaker ids allowed it adds
    ``speaker_cohorts.csv``."""
    pub, cells = assemble(result)
    out = protect(pub, cells, result.config.privacy)
    if result.config.privacy.include_speaker_ids:
        assign = pd.DataFrame(index=result.stats.table.index)
        for outcome in result.outcomes.values():
            column = outcome.method.speaker_column
            if column is not None:
                p = outcome.partition
                assign[column] = np.array(p.labels + ("",))[p.codes]
        out.tables["speaker_cohorts.csv"] = assign.reset_index()
    return out
