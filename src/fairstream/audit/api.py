"""``run_audit``: the whole fairness audit of a recognizer's results in one call.

Steps: read inputs → per-speaker statistics → one speaker-bootstrap weight matrix →
candidate cohorts of every method (:mod:`fairstream.audit.methods`: attribute columns,
geographic tree, geodemographic partition, embedding k-means) → bottom cohort of each method
→ **one** bootstrap product for every cohort table → **one** product for every method's
bottom-vs-rest test, corrected for the choice among its candidates
(:mod:`fairstream.audit.selection`) → recovery of planted cohorts → report.

With ``AuditConfig(confirm_split=True)`` the bottom cohorts are found on a random half of the
speakers (the other half's errors and words are set to zero, so no choice sees them) and each
is tested on the other half with its own bootstrap: a plain test there is valid, nothing is
chosen on that half.

Definitions (also in the report, :data:`DEFINITIONS`):

* WER = Σerrors / Σreference words over the cohort's utterances.
* WER gap (%) = (WER_bottom / WER_rest − 1) × 100, "rest" = every other audited speaker.
* Bottom-cohort share (%) = bottom cohort's share of the audited speakers (and, shown next to
  it, of the reference words).
* Methods table: ``p_value``, ``wer_gap_ci_low``, ``wer_gap_ci_high`` are the headline,
  selection-corrected figures; ``*_naive`` the figures conditional on the choice (as if the
  cohort had been named in advance); ``n_candidates`` and ``inference`` say how the headline
  was obtained.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fairstream.audit.config import AuditConfig
from fairstream.audit.disaggregate import compare_partitions
from fairstream.audit.inputs import (
    Exclusion,
    ResultsTable,
    read_results,
    read_speakers,
    read_zip_demographics,
)
from fairstream.audit.methods import (
    AuditInputs,
    AuditMethod,
    Bottom,
    EmbeddingSource,
    MethodOutcome,
    Proposal,
    build_methods,
    default_methods,
    parse_methods,
)
from fairstream.audit.provenance import file_info, parquet_config, version
from fairstream.audit.recovery import load_planted, planted_mask, recovery
from fairstream.audit.report import write_report
from fairstream.audit.result import DEFINITIONS, AuditResult
from fairstream.audit.selection import (
    SelectionProblem,
    SelectionTest,
    chosen_index,
    inference_label,
    selection_tests,
)
from fairstream.audit.speaker_stats import SpeakerStats, SpeakerSums, speaker_stats, speaker_sums
from fairstream.data.layout import SPEAKERS_CSV, ZIP_DEMOGRAPHICS_CSV
from fairstream.errors import InputDataError, TooFewSpeakersError
from fairstream.metrics.bootstrap import SpeakerBootstrap

__all__ = ["DEFINITIONS", "AuditConfig", "AuditResult", "parse_methods", "run_audit"]

logger = logging.getLogger(__name__)

_SUPPRESSED_COLUMNS = ("wer_bottom", "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high",
                       "p_value", "p_value_naive", "wer_gap_ci_low_naive",
                       "wer_gap_ci_high_naive")

#: ``inference`` of a methods-table row whose bottom cohort was tested on the held-out half.
CONFIRM_SPLIT = "confirm split"


@dataclass(frozen=True)
class _Found:
    """One method's proposal, its chosen bottom cohort and the cohorts it chose from."""

    method: AuditMethod
    proposal: Proposal
    bottom: Bottom
    candidates: np.ndarray


@dataclass(frozen=True)
class _Tested:
    """The test of one method's bottom cohort: the headline and the conditional figures."""

    headline: SelectionTest
    naive: SelectionTest
    inference: str


def run_audit(
    results: str | Path | pd.DataFrame | ResultsTable | SpeakerSums,
    *,
    speakers: str | Path | pd.DataFrame | None = None,
    zip_demographics: str | Path | pd.DataFrame | None = None,
    embeddings: EmbeddingSource | None = None,
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
            :func:`read_kaldi` / :func:`read_trn`), or its per-speaker sums
            (:class:`~fairstream.audit.speaker_stats.SpeakerSums`, e.g. from
            :func:`~fairstream.audit.dask_engine.dask_speaker_sums` for partitioned Parquet
            on a Dask cluster).
        speakers: speaker metadata table; defaults to ``corpus_dir/speakers.csv``.
        zip_demographics: zip demographics; defaults to ``corpus_dir/zip_demographics.csv``.
        embeddings: speaker or utterance embeddings (``.npy`` with ``embedding_ids``,
            Parquet/CSV, or ``(ids, matrix)``), or ``"encoder:CKPT"``: computed from the
            encoder of a transducer checkpoint over the audio in ``corpus_dir``
            (:mod:`fairstream.inference.embeddings`). Without them the ``embedding`` method
            uses the audio fallback from ``corpus_dir``.
        embedding_ids: ids of a ``.npy`` embedding matrix.
        corpus_dir: a fairstream corpus: default metadata tables, planted cohorts
            (``corpus.json``) and audio for fallback embeddings.
        methods: e.g. ``"attribute:accent,attribute:gender,geo,geodemo,embedding"``; default:
            every attribute among accent/gender/age_band present, plus geo, geodemo and
            embedding when their inputs exist (see :mod:`fairstream.audit.methods`).
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
    if speakers is None and corpus is not None and (corpus / SPEAKERS_CSV).exists():
        speakers = corpus / SPEAKERS_CSV
    if (zip_demographics is None and corpus is not None
            and (corpus / ZIP_DEMOGRAPHICS_CSV).exists()):
        zip_demographics = corpus / ZIP_DEMOGRAPHICS_CSV

    bar = tqdm(total=8, desc="audit", disable=not progress, unit="step")

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 4)
        bar.set_postfix_str(name)
        bar.update(1)
        return time.perf_counter()

    t = time.perf_counter()
    provenance: dict[str, object] = {"fairstream_version": version()}
    table: ResultsTable | None = None
    if isinstance(results, SpeakerSums):
        sums = results
    else:
        table = (results if isinstance(results, ResultsTable)
                 else read_results(results, columns=cfg.columns,
                                   duplicates=cfg.duplicates))  # type: ignore[arg-type]
        sums = speaker_sums(table)
    provenance.update(_results_provenance(results, sums))
    provenance["engine"] = sums.engine
    spk_table = None
    if speakers is not None:
        spk_table = read_speakers(speakers)
        provenance["speakers"] = _source_info(speakers)
    zip_table = None
    if zip_demographics is not None:
        zip_table = read_zip_demographics(zip_demographics)
        provenance["zip_demographics"] = _source_info(zip_demographics)
    t = step("read", t)

    stats = speaker_stats(sums, spk_table)
    if stats.n_speakers == 0:
        raise InputDataError(f"no usable utterance in {sums.source}")
    exclusions: list[Exclusion] = list(stats.exclusions)
    notes: list[str] = list(stats.notes)
    inputs = AuditInputs(stats=stats, table=table, config=cfg, zip_table=zip_table,
                         embeddings=embeddings, embedding_ids=embedding_ids, corpus_dir=corpus,
                         provenance=provenance, progress=progress)
    chosen = default_methods(inputs) if methods is None else build_methods(methods)
    for method in chosen:
        method.check(inputs)
    t = step("speaker statistics", t)

    boot = SpeakerBootstrap.draw(stats.n_speakers, cfg.n_boot, seed=cfg.seed)
    t = step("bootstrap weights", t)

    # with a confirmation split, the search sees the errors of the discovery half only
    held_out = _held_out_half(stats.n_speakers, cfg.seed) if cfg.confirm_split else None
    search = (inputs if held_out is None
              else replace(inputs, stats=_without_outcomes(stats, held_out)))
    found: list[_Found] = []
    e = search.stats.errors.astype(np.float64)
    w = search.stats.words.astype(np.float64)
    for method in chosen:
        try:
            proposal = method.propose(search, boot)
        except TooFewSpeakersError as exc:  # too small for this method: say so, go on
            notes.append(f"{method.name} not reported: {exc}")
            continue
        exclusions += proposal.exclusions
        found.append(_Found(method, proposal, method.choose_bottom(proposal, e, w),
                            method.candidates(proposal, search)))
    t = step("cohort search", t)

    # one product for every method's cohorts
    tables, overall = compare_partitions([f.proposal.partition for f in found], stats, boot,
                                         confidence=cfg.confidence)
    t = step("bootstrap intervals", t)
    tested = _test_bottoms(found, stats, boot, cfg, held_out)
    t = step("selection-corrected tests", t)

    tests, planted_info = _bottom_tests(found, tested, stats, overall, corpus, cfg, notes)
    provenance.update(planted_info)
    outcomes: dict[str, MethodOutcome] = {}
    for f, tab, test in zip(found, tables, tests):
        cohorts, detail = f.method.cohort_table(f.proposal, tab, overall)
        outcomes[f.method.name] = MethodOutcome(
            method=f.method, partition=f.proposal.partition, table=cohorts, bottom=f.bottom,
            test=test, detail=detail)
    t = step("recovery", t)

    timings["total"] = round(time.perf_counter() - t_start, 4)
    provenance["timings_s"] = timings
    provenance["n_speakers"] = stats.n_speakers
    provenance["n_replicates"] = boot.n_replicates
    provenance["methods"] = [m.name for m in chosen]
    if corpus is not None:
        provenance["corpus_dir"] = str(corpus)
    result = AuditResult(
        overall=overall, outcomes=outcomes, exclusions=tuple(exclusions), notes=tuple(notes),
        provenance=provenance, config=cfg, stats=stats,
    )
    if out_dir is not None:
        write_report(result, out_dir)
        result = replace(result, out_dir=Path(out_dir))
    step("report", t)
    bar.close()
    return result


def _held_out_half(n_speakers: int, seed: int) -> np.ndarray:
    """(S,) bool: the confirmation half (⌈S/2⌉ speakers drawn with ``seed``)."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    held = np.zeros(n_speakers, dtype=bool)
    held[rng.permutation(n_speakers)[: (n_speakers + 1) // 2]] = True
    return held


def _without_outcomes(stats: SpeakerStats, held_out: np.ndarray) -> SpeakerStats:
    """``stats`` with the error and word counts of the held-out speakers set to zero: their
    metadata, coordinates and embeddings still place them in cohorts, but no search or choice
    sees how they were served."""
    table = stats.table.copy()
    counts = [c for c in ("sub", "del", "ins", "hits", "ref_words", "errors")
              if c in table.columns]
    table.loc[held_out, counts] = 0
    return replace(stats, table=table)


def _test_bottoms(
    found: list[_Found],
    stats: SpeakerStats,
    boot: SpeakerBootstrap,
    cfg: AuditConfig,
    held_out: np.ndarray | None,
) -> list[_Tested | None]:
    """The test of every method's bottom cohort (None: the method found none).

    Without a held-out half: the max-statistic test over the method's candidates, on all
    speakers. With one: the conditional test on all speakers (the naive figures) and a plain
    test of the same cohort on the held-out half with its own bootstrap (the headline).

    Raises:
        ValueError: a method's bottom cohort is not among its candidates.
    """
    e, w = stats.errors.astype(np.float64), stats.words.astype(np.float64)
    with_bottom = [f for f in found if f.bottom.mask.any()]
    problems = []
    for f in with_bottom:
        if held_out is not None:
            problems.append(SelectionProblem(f.bottom.mask[None], 0))
            continue
        pick = chosen_index(f.candidates, f.bottom.mask)
        if pick is None:
            raise ValueError(
                f"audit method {f.method.name}: its bottom cohort {f.bottom.label!r} is not "
                f"among its {len(f.candidates)} candidates (AuditMethod.candidates)")
        problems.append(SelectionProblem(f.candidates, pick))
    full = selection_tests(e, w, boot, problems, confidence=cfg.confidence)
    if held_out is None:
        out = [_Tested(t, t, inference_label(t.n_candidates)) for t in full]
    else:
        idx = np.nonzero(held_out)[0]
        boot_h = SpeakerBootstrap.draw(len(idx), boot.n_replicates, seed=cfg.seed)
        held = selection_tests(e[idx], w[idx], boot_h,
                               [SelectionProblem(f.bottom.mask[idx][None], 0)
                                for f in with_bottom], confidence=cfg.confidence)
        out = [_Tested(h, t, CONFIRM_SPLIT) for h, t in zip(held, full)]
    by_method = {id(f): t for f, t in zip(with_bottom, out)}
    return [by_method.get(id(f)) for f in found]


def _bottom_tests(
    found: list[_Found],
    tested: Sequence[_Tested | None],
    stats: SpeakerStats,
    overall: dict[str, float],
    corpus: Path | None,
    cfg: AuditConfig,
    notes: list[str],
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Each method's row of the methods table (bottom cohort vs rest, recovery), and the
    provenance of planted cohorts.

    Appends to ``notes`` when recovery cannot be computed.
    """
    planted = load_planted(corpus) if corpus is not None else None
    accents = stats.table["accent"].to_numpy() if "accent" in stats.table.columns else None
    pmask = planted_mask(accents, planted) if planted is not None and accents is not None else None
    if planted is not None and pmask is None:
        notes.append("the corpus names no planted accents (or the audit has no accent column): "
                     "recovery not computed")
    min_c = cfg.privacy.min_cohort_speakers
    rows = []
    nan = float("nan")
    for f, test in zip(found, tested):
        mask = f.bottom.mask
        row: dict[str, object] = {
            "method": f.method.name, "bottom_cohort": f.bottom.label, "n_speakers_bottom": 0,
            "wer_bottom": nan, "wer_rest": overall["wer"], "wer_gap_pct": nan,
            "wer_gap_ci_low": nan, "wer_gap_ci_high": nan, "p_value": nan,
            "p_value_naive": nan, "wer_gap_ci_low_naive": nan, "wer_gap_ci_high_naive": nan,
            "n_candidates": len(f.candidates), "inference": "no bottom cohort",
            "bottom_share_speakers_pct": 0.0, "bottom_share_words_pct": 0.0,
            "precision": nan, "recall": nan, "ari_accent": nan,
        }
        n_tested = 0
        if test is not None:
            h, nv = test.headline, test.naive
            n_tested = h.n_speakers
            words = h.words + h.words_rest
            row.update({
                "n_speakers_bottom": h.n_speakers, "wer_bottom": h.wer, "wer_rest": h.wer_rest,
                "wer_gap_pct": h.gap_pct, "wer_gap_ci_low": h.ci_low,
                "wer_gap_ci_high": h.ci_high, "p_value": h.p_value,
                "p_value_naive": nv.p_value_naive, "wer_gap_ci_low_naive": nv.ci_low_naive,
                "wer_gap_ci_high_naive": nv.ci_high_naive, "inference": test.inference,
                "bottom_share_speakers_pct":
                    100.0 * h.n_speakers / (h.n_speakers + h.n_speakers_rest),
                "bottom_share_words_pct": 100.0 * h.words / words if words > 0 else nan,
            })
        if 0 < n_tested < min_c:
            row.update({k: np.nan for k in _SUPPRESSED_COLUMNS})
            row["bottom_cohort"] = "(suppressed: below the minimum size)"
        if pmask is not None:
            rec = recovery(mask, pmask, f.proposal.agreement_codes, accents)
            row.update(precision=rec.precision, recall=rec.recall,
                       ari_accent=rec.adjusted_rand_accent)
        rows.append(row)
    info: dict[str, object] = {}
    if pmask is not None:
        info["planted"] = planted
        info["planted_speakers"] = int(pmask.sum())
    return rows, info


def _results_provenance(
    results: str | Path | pd.DataFrame | ResultsTable | SpeakerSums, sums: SpeakerSums
) -> dict[str, object]:
    """Provenance entries of the results table: ``results`` and, for Parquet written by
    ``fairstream decode``, ``results_config``."""
    out: dict[str, object] = {}
    if isinstance(results, (str, Path)):
        info = file_info(results)
        out["results"] = info
        if Path(results).suffix in {".parquet", ".pq"}:
            out["results_config"] = parquet_config(Path(results))
    else:
        info = {"source": sums.source}
        out["results"] = info
    info["rows_read"] = sums.n_rows_read
    info["rows_used"] = sums.n_rows_used
    return out


def _source_info(source: str | Path | pd.DataFrame) -> dict[str, object]:
    return file_info(source) if isinstance(source, (str, Path)) else {"source": "DataFrame"}

