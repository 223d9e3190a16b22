"""``run_audit``: the whole fairness audit of a recognizer's results in one call.

Steps: read inputs → per-speaker statistics → one speaker-bootstrap weight matrix →
cohorts of every method (attribute columns, geographic tree, geodemographic partition,
embedding k-means) → bottom cohort of each method → **one** bootstrap product for every
cohort table and every bottom-vs-rest comparison → recovery of planted cohorts → report.

Definitions (also in the report):

* WER = Σerrors / Σreference words over the cohort's utterances.
* WER gap (%) = (WER_bottom / WER_rest − 1) × 100, "rest" = every other audited speaker.
* Bottom-cohort share (%) = bottom cohort's share of the audited speakers (and, shown next to
  it, of the reference words).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fairstream.audit.disaggregate import (
    GroupWER,
    Partition,
    _group_wer,
    apply_min_size,
    compare_partitions,
    partition_by,
)
from fairstream.audit.embedding_cohorts import (
    EmbeddingCohorts,
    EmbeddingConfig,
    fallback_embeddings,
    find_embedding_cohorts,
    speaker_mean_embeddings,
)
from fairstream.audit.geo_tree import GeoTree, GeoTreeConfig, grow_geo_tree, regions_frame
from fairstream.audit.geodemographic import (
    GeodemographicConfig,
    GeodemographicResult,
    search_geodemographic,
)
from fairstream.audit.inputs import (
    ColumnMap,
    Exclusion,
    ResultsTable,
    read_embeddings,
    read_results,
    read_speakers,
    read_zip_demographics,
)
from fairstream.audit.privacy import PrivacyConfig
from fairstream.audit.recovery import load_planted, planted_mask, recovery
from fairstream.audit.speaker_stats import SpeakerStats, speaker_stats
from fairstream.errors import InputDataError, TooFewSpeakersError
from fairstream.metrics.bootstrap import SpeakerBootstrap

__all__ = ["DEFINITIONS", "AuditConfig", "AuditResult", "parse_methods", "run_audit"]

logger = logging.getLogger(__name__)

DEFINITIONS = {
    "wer": "WER = Σ errors (substitutions + deletions + insertions) / Σ reference words over "
           "all utterances of the cohort (never a mean of utterance WERs).",
    "wer_gap": "WER gap (%) = (WER_bottom / WER_rest − 1) × 100, where rest is every other "
               "audited speaker.",
    "bottom_share": "Bottom-cohort share (%) = the bottom cohort's share of the audited "
                    "speakers; its share of reference words is shown next to it.",
    "bootstrap": "Intervals are percentile intervals of a speaker-level bootstrap: speakers "
                 "are resampled with replacement (their utterances stay together); p-values "
                 "test WER_cohort = WER_rest with the same replicates.",
    "empty_reference": "An utterance whose normalized reference is empty adds 0 reference "
                       "words and every hypothesis word as an insertion.",
    "recovery": "Precision = share of the bottom cohort's speakers that are planted "
                "(under-represented accents of the synthetic corpus); recall = share of the "
                "planted speakers inside the bottom cohort; ARI = adjusted Rand index of the "
                "method's cohorts against accent.",
}

_DEFAULT_ATTRIBUTES = ("accent", "gender", "age_band")


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


@dataclass(frozen=True)
class AuditResult:
    """What :func:`run_audit` returns.

    Attributes:
        overall: overall WER with interval and totals.
        methods: one row per method: bottom cohort, WER bottom/rest, WER gap with interval,
            p-value, bottom-cohort shares, recovery (precision, recall, ARI).
        groups: attribute disaggregations (``attribute:<col>`` methods).
        cohort_tables: method name → its cohort table (``group`` + WER columns), worst first.
        geo: the geographic tree, if run.
        geo_regions: regions with bounding boxes and WERs, if run.
        geodemographic: the geodemographic search, if run.
        embedding: the k-means cohorts, if run.
        exclusions: every row/speaker left out of some part, with reasons.
        notes: other facts the report states.
        provenance: inputs, versions, timings.
        config: the configuration used.
        out_dir: where the report was written (None if not written).
    """

    overall: dict[str, float]
    methods: pd.DataFrame
    groups: tuple[GroupWER, ...]
    cohort_tables: dict[str, pd.DataFrame]
    geo: GeoTree | None
    geo_regions: pd.DataFrame | None
    geodemographic: GeodemographicResult | None
    embedding: EmbeddingCohorts | None
    exclusions: tuple[Exclusion, ...]
    notes: tuple[str, ...]
    provenance: dict[str, object]
    config: AuditConfig
    stats: SpeakerStats
    out_dir: Path | None = None


def parse_methods(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"attribute:accent,attribute:accent+gender,geo,geodemo,embedding"`` → validated tuple."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out = []
    for it in items:
        if it in {"geo", "geodemo", "embedding"} or it.startswith("attribute:") and len(it) > len("attribute:"):
            out.append(it)
        else:
            raise InputDataError(
                f"unknown audit method {it!r}; use attribute:<column>[+<column>...], geo, "
                "geodemo or embedding"
            )
    if not out:
        raise InputDataError("no audit method given")
    return tuple(dict.fromkeys(out))


def _file_info(path: str | Path) -> dict[str, object]:
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def _parquet_config(path: Path) -> object | None:
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(b"fairstream")
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - provenance is best effort, never fatal
        return None


def run_audit(
    results: str | Path | pd.DataFrame | ResultsTable,
    *,
    speakers: str | Path | pd.DataFrame | None = None,
    zip_demographics: str | Path | pd.DataFrame | None = None,
    embeddings: str | Path | pd.DataFrame | tuple[np.ndarray, np.ndarray] | None = None,
    embedding_ids: str | Path | Sequence[str] | None = None,
    corpus_dir: str | Path | None = None,
    methods: str | Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    config: AuditConfig | None = None,
    progress: bool = False,
) -> AuditResult:
    """Audit a recognizer's results for the cohorts it serves worst.

    Args:
        results: results table (path, DataFrame, or a :class:`ResultsTable` from
            :func:`read_kaldi` / :func:`read_trn`).
        speakers: speaker metadata table; defaults to ``corpus_dir/speakers.csv``.
        zip_demographics: zip demographics; defaults to ``corpus_dir/zip_demographics.csv``.
        embeddings: speaker or utterance embeddings (``.npy`` with ``embedding_ids``,
            Parquet/CSV, or ``(ids, matrix)``). Without them the ``embedding`` method uses the
            audio fallback from ``corpus_dir``.
        embedding_ids: ids of a ``.npy`` embedding matrix.
        corpus_dir: a fairstream corpus: default metadata tables, planted cohorts
            (``corpus.json``) and audio for fallback embeddings.
        methods: e.g. ``"attribute:accent,attribute:gender,geo,geodemo,embedding"``; default:
            every attribute among accent/gender/age_band present, plus geo, geodemo and
            embedding when their inputs exist.
        out_dir: write report.html, report.json and CSV tables here (None: do not write).
        config: settings (:class:`AuditConfig`).
        progress: show a progress bar.

    Raises:
        InputDataError: unusable inputs (the message names the file, column or ids).
    """
    cfg = config or AuditConfig()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    corpus = Path(corpus_dir) if corpus_dir is not None else None
    if corpus is not None and not corpus.is_dir():
        raise InputDataError(f"corpus directory not found: {corpus}")
    if speakers is None and corpus is not None and (corpus / "speakers.csv").exists():
        speakers = corpus / "speakers.csv"
    if zip_demographics is None and corpus is not None and (corpus / "zip_demographics.csv").exists():
        zip_demographics = corpus / "zip_demographics.csv"

    bar = tqdm(total=7, desc="audit", disable=not progress, unit="step")

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 4)
        bar.set_postfix_str(name)
        bar.update(1)
        return time.perf_counter()

    t = time.perf_counter()
    provenance: dict[str, object] = {"fairstream_version": _version()}
    if isinstance(results, ResultsTable):
        table = results
    else:
        table = read_results(results, columns=cfg.columns, duplicates=cfg.duplicates)  # type: ignore[arg-type]
    if isinstance(results, (str, Path)):
        provenance["results"] = _file_info(results)
        if Path(results).suffix in {".parquet", ".pq"}:
            provenance["results_config"] = _parquet_config(Path(results))
    else:
        provenance["results"] = {"source": table.source}
    provenance["results"]["rows_read"] = table.n_rows_read  # type: ignore[index]
    provenance["results"]["rows_used"] = len(table.utterances)  # type: ignore[index]
    spk_table = None
    if speakers is not None:
        spk_table = read_speakers(speakers)
        provenance["speakers"] = (_file_info(speakers) if isinstance(speakers, (str, Path))
                                  else {"source": "DataFrame"})
    zip_table = None
    if zip_demographics is not None:
        zip_table = read_zip_demographics(zip_demographics)
        provenance["zip_demographics"] = (_file_info(zip_demographics)
                                          if isinstance(zip_demographics, (str, Path))
                                          else {"source": "DataFrame"})
    t = step("read", t)

    stats = speaker_stats(table, spk_table)
    if stats.n_speakers == 0:
        raise InputDataError(f"no usable utterance in {table.source}")
    exclusions: list[Exclusion] = list(stats.exclusions)
    notes: list[str] = list(stats.notes)
    meta_cols = set(stats.metadata_columns)
    if methods is None:
        chosen = [f"attribute:{c}" for c in _DEFAULT_ATTRIBUTES if c in meta_cols]
        if {cfg.geo.lat_col, cfg.geo.lon_col} <= meta_cols:
            chosen.append("geo")
        if zip_table is not None and cfg.geodemographic.zip_col in meta_cols:
            chosen.append("geodemo")
        if embeddings is not None or (corpus is not None and (corpus / "audio").is_dir()):
            chosen.append("embedding")
        if not chosen:
            raise InputDataError(
                "no audit method applies: give --methods (e.g. attribute:<column>) or metadata "
                f"columns; available: {sorted(meta_cols)}"
            )
        method_list = tuple(chosen)
    else:
        method_list = parse_methods(methods)
    if "geodemo" in method_list and zip_table is None:
        raise InputDataError("method geodemo needs a zip demographics table (--zip-demographics)")
    t = step("speaker statistics", t)

    boot = SpeakerBootstrap.draw(stats.n_speakers, cfg.n_boot, seed=cfg.seed)
    t = step("bootstrap weights", t)

    min_c = cfg.privacy.min_cohort_speakers
    method_parts: dict[str, Partition] = {}
    ari_codes: dict[str, np.ndarray] = {}
    geo = geodemo = emb = None
    for m in method_list:
        if m.startswith("attribute:"):
            cols = tuple(m.split(":", 1)[1].split("+"))
            p = apply_min_size(partition_by(stats, cols if len(cols) > 1 else cols[0]), min_c)
            method_parts[m] = p
            ari_codes[m] = p.codes
        elif m == "geo":
            gcfg = cfg.geo
            if gcfg.min_speakers < min_c:
                gcfg = GeoTreeConfig(**{**asdict(gcfg), "min_speakers": min_c})
            geo = grow_geo_tree(stats, boot, gcfg)
            exclusions += geo.exclusions
            method_parts[m] = geo.partition
            ari_codes[m] = geo.partition.codes
        elif m == "geodemo":
            dcfg = cfg.geodemographic
            if dcfg.min_speakers < min_c:
                dcfg = GeodemographicConfig(**{**asdict(dcfg), "min_speakers": min_c})
            assert zip_table is not None
            try:
                geodemo = search_geodemographic(stats, zip_table, dcfg)
            except TooFewSpeakersError as exc:  # no partition is large enough: say so, go on
                notes.append(f"geodemo not reported: {exc}")
                continue
            exclusions += geodemo.exclusions
            method_parts[m] = geodemo.partition
            ari_codes[m] = geodemo.partition.codes
        elif m == "embedding":
            ecfg = cfg.embedding
            if ecfg.min_speakers < min_c:
                ecfg = EmbeddingConfig(**{**asdict(ecfg), "min_speakers": min_c})
            try:
                emb = _embedding_method(stats, table, embeddings, embedding_ids, corpus, ecfg,
                                        provenance, progress)
            except TooFewSpeakersError as exc:  # too few speakers to cluster: say so, go on
                notes.append(f"embedding not reported: {exc}")
                continue
            exclusions += emb.exclusions
            method_parts[m] = emb.partition
            ari_codes[m] = emb.cluster_codes
    t = step("cohort search", t)

    # bottom cohort of every method from point estimates, then one product for everything
    e, w = stats.errors.astype(np.float64), stats.words.astype(np.float64)
    bottoms: dict[str, tuple[np.ndarray, str]] = {}
    for m, p in method_parts.items():
        valid = p.codes >= 0
        eg = np.bincount(p.codes[valid], weights=e[valid], minlength=p.n_groups)
        wg = np.bincount(p.codes[valid], weights=w[valid], minlength=p.n_groups)
        if m == "geodemo":
            pick = [0]
        elif m == "embedding":
            assert emb is not None
            pick = [p.labels.index(lbl) for lbl in emb.bottom_labels]
        else:
            ok = [g for g in range(p.n_groups) if p.status[g] == "ok" and wg[g] > 0]
            pick = [max(ok, key=lambda g: eg[g] / wg[g])] if ok else []
        mask = np.isin(p.codes, pick) & valid
        label = " + ".join(p.labels[g] for g in pick)
        if not pick or mask.all():
            mask = np.zeros_like(mask)
            label = "(none: no split found)" if m == "geo" else "(none: a single cohort)"
        bottoms[m] = (mask, label)
    bvr = [Partition(name=f"{m} bottom", codes=np.where(mask, 0, 1).astype(np.int64),
                     labels=("bottom", "rest")) for m, (mask, _) in bottoms.items()]
    names = list(method_parts)
    tables, overall = compare_partitions([method_parts[m] for m in names] + bvr, stats, boot,
                                         confidence=cfg.confidence)
    t = step("bootstrap intervals", t)

    cohort_tables: dict[str, pd.DataFrame] = {}
    groups: list[GroupWER] = []
    for m, tab in zip(names, tables[:len(names)]):
        if m.startswith("attribute:"):
            gw = _group_wer(method_parts[m].columns, tab, overall)
            groups.append(gw)
            cohort_tables[m] = gw.by_group
        else:
            cohort_tables[m] = tab.sort_values("wer", ascending=False,
                                               na_position="last").reset_index(drop=True)
    geo_regions = None
    if geo is not None:
        geo_regions = regions_frame(geo).merge(cohort_tables["geo"], on="group", how="left")
        geo_regions = geo_regions.sort_values("wer", ascending=False).reset_index(drop=True)
        cohort_tables["geo"] = geo_regions

    planted = load_planted(corpus) if corpus is not None else None
    accents = stats.table["accent"].to_numpy() if "accent" in stats.table.columns else None
    pmask = planted_mask(accents, planted) if planted is not None and accents is not None else None
    if planted is not None and pmask is None:
        notes.append("the corpus names no planted accents (or the audit has no accent column): "
                     "recovery not computed")
    rows = []
    for m, tab in zip(names, tables[len(names):]):
        mask, label = bottoms[m]
        b = tab.iloc[0]
        row: dict[str, object] = {
            "method": m, "bottom_cohort": label, "n_speakers_bottom": int(mask.sum()),
            "wer_bottom": b["wer"], "wer_rest": b["wer_rest"],
            "wer_gap_pct": b["gap_pct"], "wer_gap_ci_low": b["gap_ci_low"],
            "wer_gap_ci_high": b["gap_ci_high"], "p_value": b["p_value"],
            "bottom_share_speakers_pct": b["share_speakers_pct"],
            "bottom_share_words_pct": b["share_words_pct"],
            "precision": np.nan, "recall": np.nan, "ari_accent": np.nan,
        }
        if 0 < int(mask.sum()) < min_c:
            row.update({k: np.nan for k in ("wer_bottom", "wer_gap_pct", "wer_gap_ci_low",
                                            "wer_gap_ci_high", "p_value")})
            row["bottom_cohort"] = "(suppressed: below the minimum size)"
        if pmask is not None:
            rec = recovery(mask, pmask, ari_codes[m], accents)
            row.update(precision=rec.precision, recall=rec.recall,
                       ari_accent=rec.adjusted_rand_accent)
        rows.append(row)
    methods_df = pd.DataFrame(rows)
    if pmask is not None:
        provenance["planted"] = planted
        provenance["planted_speakers"] = int(pmask.sum())
    t = step("recovery", t)

    timings["total"] = round(time.perf_counter() - t_start, 4)
    provenance["timings_s"] = timings
    provenance["n_speakers"] = stats.n_speakers
    provenance["n_replicates"] = boot.n_replicates
    provenance["methods"] = list(method_list)
    if corpus is not None:
        provenance["corpus_dir"] = str(corpus)
    result = AuditResult(
        overall=overall, methods=methods_df, groups=tuple(groups), cohort_tables=cohort_tables,
        geo=geo, geo_regions=geo_regions, geodemographic=geodemo, embedding=emb,
        exclusions=tuple(exclusions), notes=tuple(notes), provenance=provenance, config=cfg,
        stats=stats,
    )
    if out_dir is not None:
        from fairstream.audit.report import write_report

        write_report(result, out_dir)
        result = AuditResult(**{**result.__dict__, "out_dir": Path(out_dir)})
    step("report", t)
    bar.close()
    return result


def _embedding_method(
    stats: SpeakerStats,
    table: ResultsTable,
    embeddings: object,
    embedding_ids: object,
    corpus: Path | None,
    ecfg: EmbeddingConfig,
    provenance: dict[str, object],
    progress: bool,
) -> EmbeddingCohorts:
    if embeddings is None:
        if corpus is None:
            raise InputDataError(
                "method embedding needs --embeddings, or --corpus-dir with audio for the "
                "fallback fbank embedding"
            )
        mat, has, ex = fallback_embeddings(corpus, list(stats.table.index), progress=progress)
        source = ("fallback: per-speaker mean + std of 80-dim log-mel fbank, z-scored "
                  "(no trained speaker model)")
        ecfg = EmbeddingConfig(**{**asdict(ecfg), "normalize": "zscore"})
        provenance["embeddings"] = {"source": source, "corpus_dir": str(corpus)}
        return find_embedding_cohorts(stats, mat, has, ecfg, source=source, exclusions=ex)
    if isinstance(embeddings, tuple):
        ids, vectors = np.asarray(embeddings[0]).astype(object), np.asarray(embeddings[1])
        provenance["embeddings"] = {"source": "arrays", "shape": list(vectors.shape)}
    else:
        ids, vectors = read_embeddings(embeddings, ids=embedding_ids)  # type: ignore[arg-type]
        provenance["embeddings"] = (_file_info(embeddings)
                                    if isinstance(embeddings, (str, Path))
                                    else {"source": "DataFrame"})
    utt_map = pd.Series(table.utterances["speaker_id"].to_numpy(),
                        index=table.utterances["utt_id"].to_numpy())
    mat, has, ex = speaker_mean_embeddings(ids, vectors, stats, utt_map)
    return find_embedding_cohorts(stats, mat, has, ecfg, source="given", exclusions=ex)


def _version() -> str:
    from fairstream import __version__

    return __version__
