"""Cohort definitions that travel: ``cohorts.json`` and their mapping onto any speakers table.

An audit finds its cohorts among the speakers it audited. To act on a cohort (fine-tune on
it, oversample it, :mod:`fairstream.mitigation`), the same cohort must be found among other
speakers, the training speakers above all. So the audit writes, next to its report, a
*definition* of every reportable cohort of every method that applies to any speakers table,
never a list of audited speakers:

* ``attribute``: the values of the metadata column(s), e.g. ``{"accent": "en-gb-scotland"}``;
* ``geo_box``: the tree region's box, ``lat_min <= lat < lat_max`` and the same for
  ``lon``; a bound on the edge of the audited speakers' area is ``null`` (unbounded), so a
  speaker just outside that area still falls into the region that reaches the edge;
* ``zip_predicate``: the geodemographic predicate over a zip-table column (``attr <= t``,
  ``attr > t`` or ``attr in {a, b}``) applied through the speaker's zip; the rest cohort
  is its negation among speakers whose zip is in the table;
* ``centroid``: nearest-centroid assignment in the clustering's space (the k-means centres,
  the normalization and its statistics are stored), given embeddings of the new speakers
  made the same way as the audited ones (``source`` says how).

Every method entry carries the evidence of its bottom cohort (the selection-corrected
p-value and gap interval of the methods table), so a tool can pick the bottom cohort with the
strongest evidence across methods (:func:`choose_cohort`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_write_text
from fairstream.audit.inputs import normalize_zip
from fairstream.errors import InputDataError

if TYPE_CHECKING:
    from fairstream.audit.result import AuditResult

__all__ = [
    "COHORTS_FILE", "Cohort", "assign_cohort", "choose_cohort", "cohort_document",
    "load_cohorts", "write_cohorts",
]

COHORTS_FILE = "cohorts.json"
_VERSION = 1
_PREDICATE = re.compile(r"^\s*(?P<attr>.+?)\s+(?P<op><=|>|in)\s+(?P<value>.+?)\s*$")


@dataclass(frozen=True)
class Cohort:
    """One cohort definition read from ``cohorts.json``.

    Attributes:
        method: the audit method that found it (``attribute:accent``, ``geo``, ...).
        label: its name in that method's table.
        definition: the JSON definition (see the module docstring).
        bottom: whether it is the method's bottom cohort.
        wer: its WER among the audited speakers.
        n_speakers: its audited speakers.
        evidence: the method's bottom-cohort test (``p_value``, ``wer_gap_pct``,
            ``wer_gap_ci_low``, ``wer_gap_ci_high``, ``inference``).
    """

    method: str
    label: str
    definition: Mapping[str, Any]
    bottom: bool
    wer: float | None
    n_speakers: int
    evidence: Mapping[str, Any]

    @property
    def name(self) -> str:
        """``method=label``, how ``--cohort`` names it."""
        return f"{self.method}={self.label}"


# ------------------------------------------------------------------------------ writing

def _finite(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _attribute_definitions(outcome: Any, result: AuditResult) -> dict[str, dict[str, Any]]:
    columns = list(outcome.partition.columns) or [outcome.name.split(":", 1)[-1]]
    table = result.stats.table
    out: dict[str, dict[str, Any]] = {}
    for g, label in enumerate(outcome.partition.labels):
        if outcome.partition.status[g] != "ok":
            continue
        members = np.nonzero(outcome.partition.codes == g)[0]
        if not len(members):
            continue
        row = table.iloc[members[0]]
        out[label] = {"kind": "attribute",
                      "values": {c: str(row[c]) for c in columns}}
    return out


def _geo_definitions(outcome: Any, result: AuditResult) -> dict[str, dict[str, Any]]:
    tree = outcome.detail
    cfg = tree.config
    regions = list(tree.regions)
    edge = (min(r.lat_min for r in regions), max(r.lat_max for r in regions),
            min(r.lon_min for r in regions), max(r.lon_max for r in regions))
    out: dict[str, dict[str, Any]] = {}
    for r in regions:
        label = tree.partition.labels[r.region_id]
        if tree.partition.status[r.region_id] != "ok":
            continue
        out[label] = {
            "kind": "geo_box", "lat_col": cfg.lat_col, "lon_col": cfg.lon_col,
            "lat_min": None if r.lat_min <= edge[0] else r.lat_min,
            "lat_max": None if r.lat_max >= edge[1] else r.lat_max,
            "lon_min": None if r.lon_min <= edge[2] else r.lon_min,
            "lon_max": None if r.lon_max >= edge[3] else r.lon_max,
            "path": r.path,
        }
    return out


def _zip_path(result: AuditResult) -> str | None:
    info = result.provenance.get("zip_demographics")
    return str(info.get("path")) if isinstance(info, dict) and info.get("path") else None


def _geodemo_definitions(outcome: Any, result: AuditResult) -> dict[str, dict[str, Any]]:
    found = outcome.detail
    zip_col = result.config.geodemographic.zip_col
    base = {"kind": "zip_predicate", "zip_col": zip_col,
            "predicate": found.bottom_definition,
            "zip_table": _zip_path(result)}
    labels = found.partition.labels
    out = {labels[0]: {**base, "negate": False}}
    if len(labels) > 1 and found.partition.status[1] == "ok":
        out[labels[1]] = {**base, "negate": True}
    return out


def _embedding_definitions(outcome: Any, result: AuditResult) -> dict[str, dict[str, Any]]:
    em = outcome.detail
    if em.centroids is None:
        return {}
    base = {"kind": "centroid", "source": em.source, "normalization": em.normalization,
            "centroids": em.centroids.tolist(), "centroid_labels": list(em.centroid_labels)}
    status = dict(zip(em.partition.labels, em.partition.status))
    return {label: {**base, "label": label} for label in sorted(set(em.centroid_labels))
            if label and status.get(label) == "ok"}


_BUILDERS = {"attribute": _attribute_definitions, "geo": _geo_definitions,
             "geodemo": _geodemo_definitions, "embedding": _embedding_definitions}


def cohort_document(result: AuditResult) -> dict[str, Any]:
    """The ``cohorts.json`` document of an audit (see the module docstring)."""
    methods_table = result.methods.set_index("method") if len(result.methods) else None
    entries = []
    for name, outcome in result.outcomes.items():
        build = _BUILDERS.get(outcome.method.kind)
        if build is None:
            continue
        definitions = build(outcome, result)
        wer_by = {str(r["group"]): r for r in outcome.table.to_dict(orient="records")}
        evidence: dict[str, Any] = {}
        if methods_table is not None and name in methods_table.index:
            row = methods_table.loc[name]
            evidence = {k: _finite(row.get(k)) for k in (
                "p_value", "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high")}
            evidence["inference"] = str(row.get("inference", ""))
        cohorts = []
        for label, definition in definitions.items():
            r = wer_by.get(label, {})
            cohorts.append({
                "label": label, "bottom": label == outcome.bottom.label,
                "wer": _finite(r.get("wer")), "n_speakers": int(r.get("n_speakers", 0) or 0),
                "definition": definition,
            })
        entries.append({"method": name, "bottom": outcome.bottom.label,
                        "evidence": evidence, "cohorts": cohorts})
    return {"version": _VERSION,
            "about": "cohort definitions that apply to any speakers table "
                     "(fairstream.audit.cohorts)",
            "methods": entries}


def write_cohorts(result: AuditResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/cohorts.json`` atomically; returns its path."""
    path = Path(out_dir) / COHORTS_FILE
    atomic_write_text(path, json.dumps(cohort_document(result), indent=1, allow_nan=False))
    return path


# ------------------------------------------------------------------------------ reading

def load_cohorts(path: str | Path) -> list[Cohort]:
    """Every cohort of a ``cohorts.json``.

    Raises:
        InputDataError: the file is missing, not JSON, or not a cohorts document.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(f"cannot read the cohorts file {p}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != _VERSION or "methods" not in doc:
        raise InputDataError(f"{p} is not a cohorts.json (version {_VERSION}) written by "
                             "`fairstream audit`")
    out = []
    for m in doc["methods"]:
        for c in m.get("cohorts", []):
            out.append(Cohort(method=str(m["method"]), label=str(c["label"]),
                              definition=c["definition"], bottom=bool(c.get("bottom")),
                              wer=c.get("wer"), n_speakers=int(c.get("n_speakers", 0)),
                              evidence=m.get("evidence", {})))
    return out


def _evidence_key(c: Cohort) -> tuple[float, float]:
    p = c.evidence.get("p_value")
    low = c.evidence.get("wer_gap_ci_low")
    return (p if p is not None else math.inf, -(low if low is not None else -math.inf))


def choose_cohort(cohorts: Sequence[Cohort], name: str | None = None) -> Cohort:
    """The cohort called ``name`` (``method=label``, or a label unique across methods), or by
    default the bottom cohort with the strongest selection-corrected evidence: the smallest
    corrected p-value, ties broken by the larger lower bound of the gap interval.

    Raises:
        InputDataError: no such cohort (the error lists the available names), or no method
            reported a bottom cohort.
    """
    if name is not None:
        hits = [c for c in cohorts if c.name == name] or [c for c in cohorts if c.label == name]
        if len(hits) == 1:
            return hits[0]
        names = ", ".join(c.name for c in cohorts[:40])
        why = "is ambiguous (name the method: METHOD=LABEL)" if hits else "is not in the file"
        raise InputDataError(f"cohort {name!r} {why}; available: {names}")
    bottoms = [c for c in cohorts if c.bottom and c.evidence.get("p_value") is not None]
    if not bottoms:
        raise InputDataError("no method of the audit reported a tested bottom cohort; name one "
                             "with --cohort METHOD=LABEL")
    return min(bottoms, key=_evidence_key)


def _attribute_mask(d: Mapping[str, Any], speakers: pd.DataFrame) -> np.ndarray:
    mask = np.ones(len(speakers), dtype=bool)
    for col, value in d["values"].items():
        if col not in speakers.columns:
            raise InputDataError(f"cohort needs the speaker column {col!r}; columns: "
                                 f"{list(speakers.columns)}")
        mask &= speakers[col].astype(str).to_numpy() == str(value)
    return mask


def _geo_mask(d: Mapping[str, Any], speakers: pd.DataFrame) -> np.ndarray:
    for col in (d["lat_col"], d["lon_col"]):
        if col not in speakers.columns:
            raise InputDataError(f"geographic cohort needs the speaker column {col!r}")
    lat = pd.to_numeric(speakers[d["lat_col"]], errors="coerce").to_numpy(dtype=float)
    lon = pd.to_numeric(speakers[d["lon_col"]], errors="coerce").to_numpy(dtype=float)
    mask = np.isfinite(lat) & np.isfinite(lon)
    for v, lo, hi in ((lat, d.get("lat_min"), d.get("lat_max")),
                      (lon, d.get("lon_min"), d.get("lon_max"))):
        with np.errstate(invalid="ignore"):
            if lo is not None:
                mask &= v >= lo
            if hi is not None:
                mask &= v < hi
    return mask


def _zip_mask(d: Mapping[str, Any], speakers: pd.DataFrame,
              zip_table: pd.DataFrame | None) -> np.ndarray:
    if zip_table is None:
        raise InputDataError(f"the cohort {d['predicate']!r} is a zip-demographics predicate: "
                             "give the zip table (--zip-demographics)")
    m = _PREDICATE.match(d["predicate"])
    if m is None:
        raise InputDataError(f"cannot read the zip predicate {d['predicate']!r}")
    attr, op, value = m["attr"], m["op"], m["value"]
    if attr not in zip_table.columns:
        raise InputDataError(f"zip predicate {d['predicate']!r}: the zip table has no column "
                             f"{attr!r}")
    col = zip_table[attr]
    if op == "in":
        values = {v.strip() for v in value.strip("{} ").split(",")}
        zip_ok = col.astype(str).isin(values)
    else:
        num = pd.to_numeric(col, errors="coerce")
        zip_ok = num <= float(value) if op == "<=" else num > float(value)
    zip_col = d["zip_col"]
    if zip_col not in speakers.columns:
        raise InputDataError(f"zip cohort needs the speaker column {zip_col!r}")
    keys = zip_ok.index.astype(str)
    lookup = pd.Series(zip_ok.to_numpy(), index=keys)
    z = normalize_zip(speakers[zip_col]).fillna("").astype(str)
    known = z.isin(keys).to_numpy()
    hit = np.zeros(len(speakers), dtype=bool)
    hit[known] = lookup.reindex(z[known]).to_numpy(dtype=bool)
    return known & (~hit if d.get("negate") else hit)


def _centroid_mask(d: Mapping[str, Any], speakers: pd.DataFrame,
                   embeddings: pd.DataFrame | None) -> np.ndarray:
    if embeddings is None:
        raise InputDataError(
            f"cohort {d['label']!r} is an embedding cluster: give per-speaker embeddings of "
            f"these speakers made the same way as the audited ones ({d['source']})")
    centres = np.asarray(d["centroids"], dtype=np.float64)
    ids = speakers["speaker_id"].astype(str)
    have = ids.isin(embeddings.index.astype(str)).to_numpy()
    x = embeddings.reindex(ids[have]).to_numpy(dtype=np.float64)
    if x.shape[1] != centres.shape[1]:
        raise InputDataError(f"embeddings have {x.shape[1]} dimensions, the cohort's centres "
                             f"{centres.shape[1]}")
    norm = d.get("normalization") or {"kind": "none"}
    if norm["kind"] == "l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif norm["kind"] == "zscore":
        x = (x - np.asarray(norm["mean"])) / np.asarray(norm["std"])
    nearest = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1).argmin(axis=1)
    labels = np.asarray(d["centroid_labels"], dtype=object)
    mask = np.zeros(len(speakers), dtype=bool)
    mask[have] = labels[nearest] == d["label"]
    return mask


def assign_cohort(cohort: Cohort | Mapping[str, Any], speakers: pd.DataFrame, *,
                  zip_table: pd.DataFrame | None = None,
                  embeddings: pd.DataFrame | None = None) -> np.ndarray:
    """Which rows of ``speakers`` belong to the cohort.

    Args:
        cohort: a :class:`Cohort` or its ``definition``.
        speakers: a speakers table (``speaker_id`` and the metadata columns the definition
            reads), e.g. the corpus's ``speakers.csv`` restricted to the training split.
        zip_table: the zip demographics table, indexed by zip (for ``zip_predicate``).
        embeddings: per-speaker embeddings indexed by speaker id (for ``centroid``).

    Returns:
        (N,) bool aligned with ``speakers``.

    Raises:
        InputDataError: a column or input the definition needs is missing.
    """
    d = cohort.definition if isinstance(cohort, Cohort) else cohort
    if isinstance(cohort, Cohort) and d.get("kind") == "centroid" and "label" not in d:
        d = {**d, "label": cohort.label}
    kind = d.get("kind")
    if kind == "attribute":
        return _attribute_mask(d, speakers)
    if kind == "geo_box":
        return _geo_mask(d, speakers)
    if kind == "zip_predicate":
        return _zip_mask(d, speakers, zip_table)
    if kind == "centroid":
        return _centroid_mask(d, speakers, embeddings)
    raise InputDataError(f"unknown cohort definition kind {kind!r}")
