"""Audit methods as parts: each proposes candidate cohorts and names the one it reports.

:func:`~fairstream.audit.run_audit` composes :class:`AuditMethod` objects. The protocol is
small:

* :attr:`~AuditMethod.needs`, :meth:`~AuditMethod.available` and :meth:`~AuditMethod.check`
  say which inputs a method reads (attribute columns, latitude/longitude, a zip demographics
  table, embeddings): ``available`` decides whether it runs by default, ``check`` explains
  what is missing when it was asked for;
* :meth:`~AuditMethod.propose` returns its candidate cohorts (a :class:`Partition` of the
  audited speakers) as a :class:`Proposal`;
* :meth:`~AuditMethod.choose_bottom` picks, from point estimates, the cohort the method
  reports as served worst, and :meth:`~AuditMethod.candidates` lists every cohort it could
  have picked. :func:`run_audit` then tests every method's chosen cohort against the rest of
  the speakers with the same speaker-bootstrap replicates (one product for all methods, so
  their intervals are comparable), corrected for the choice among the candidates
  (:mod:`fairstream.audit.selection`);
* :meth:`~AuditMethod.cohort_table` shapes the table of its cohorts for the report.

What a method produced is a :class:`MethodOutcome` (its cohorts, table, bottom cohort, the
test of that cohort, its own result object); :class:`~fairstream.audit.AuditResult` keeps one
per method, keyed by name. The report renders every method the same way (cohort table, WER
bars, a row of the methods table) and asks the method for the rest:
:meth:`~AuditMethod.report_section` (text and plots of its HTML section),
:meth:`~AuditMethod.report_data` (report.json entries), :meth:`~AuditMethod.report_tables`
(CSV files), :attr:`~AuditMethod.speaker_column` (its column of ``speaker_cohorts.csv``).

A new method is one subclass registered with :func:`register_method`; its specification
in ``--methods`` is its :attr:`~AuditMethod.kind`, or ``kind:<argument>`` when it takes one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, TypeAlias, TypeVar

import numpy as np
import pandas as pd

from fairstream.audit.config import AuditConfig
from fairstream.audit.disaggregate import (
    GroupWER,
    Partition,
    _group_wer,
    apply_min_size,
    partition_by,
)
from fairstream.audit.embedding_cohorts import (
    EmbeddingCohorts,
    EmbeddingConfig,
    encoder_checkpoint,
    encoder_cohorts,
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
from fairstream.audit.inputs import Exclusion, ResultsTable, read_embeddings
from fairstream.audit.provenance import file_info
from fairstream.audit.speaker_stats import SpeakerStats
from fairstream.data.layout import AUDIO_DIR
from fairstream.errors import InputDataError
from fairstream.metrics.bootstrap import SpeakerBootstrap

__all__ = [
    "COHORT_COLUMNS",
    "DEFAULT_ATTRIBUTES",
    "AttributeMethod",
    "AuditInputs",
    "AuditMethod",
    "Bottom",
    "EmbeddingMethod",
    "EmbeddingSource",
    "GeoMethod",
    "GeodemographicMethod",
    "MethodOutcome",
    "Proposal",
    "ReportSection",
    "build_methods",
    "default_methods",
    "parse_methods",
    "register_method",
    "registered_methods",
]

#: attribute columns disaggregated by default, when the speaker table has them.
DEFAULT_ATTRIBUTES = ("accent", "gender", "age_band")

#: columns of a cohort table shown in the report, in order (those a table lacks are skipped).
COHORT_COLUMNS: tuple[str, ...] = (
    "group", "status", "n_speakers", "n_utterances", "ref_words", "wer", "wer_ci_low",
    "wer_ci_high", "wer_rest", "gap_pct", "gap_ci_low", "gap_ci_high", "p_value",
    "share_speakers_pct", "share_words_pct",
)

#: speaker or utterance embeddings: a file, a table, or ``(ids, matrix)``.
EmbeddingSource: TypeAlias = str | Path | pd.DataFrame | tuple[np.ndarray, np.ndarray]

_C = TypeVar("_C", bound="type[AuditMethod]")


@dataclass(frozen=True)
class AuditInputs:
    """Everything a method may read.

    Attributes:
        stats: per-speaker statistics (with the speaker metadata columns).
        table: the results table the statistics come from (None when only its
            per-speaker sums were given, as with the Dask engine).
        config: the audit configuration.
        zip_table: zip demographics, if given.
        embeddings: speaker or utterance embeddings, if given.
        embedding_ids: ids of a ``.npy`` embedding matrix.
        corpus_dir: a fairstream corpus (audio for the fallback embedding), if given.
        provenance: the report's provenance; a method adds the inputs it read.
        progress: show progress bars.
    """

    stats: SpeakerStats
    table: ResultsTable | None
    config: AuditConfig
    zip_table: pd.DataFrame | None = None
    embeddings: EmbeddingSource | None = None
    embedding_ids: str | Path | Sequence[str] | None = None
    corpus_dir: Path | None = None
    provenance: dict[str, object] = field(default_factory=dict)
    progress: bool = False

    @property
    def min_cohort(self) -> int:
        """The privacy minimum cohort size (speakers)."""
        return self.config.privacy.min_cohort_speakers

    def utterances(self) -> ResultsTable:
        """The utterance rows, for a method that needs them.

        Raises:
            InputDataError: only per-speaker sums were given (the Dask engine).
        """
        if self.table is None:
            raise InputDataError(
                "this needs the utterance rows, but the audit was given per-speaker sums "
                "(--engine dask): use speaker-level embeddings (one row per speaker id) or "
                "the in-memory engine")
        return self.table


@dataclass(frozen=True)
class Proposal:
    """A method's candidate cohorts.

    Attributes:
        partition: audited speakers → cohorts (``-1``: in none).
        agreement_codes: (S,) codes compared with accent for the adjusted Rand index
            (usually ``partition.codes``; the raw clusters for k-means).
        exclusions: speakers the method could not place, with reasons.
        detail: the method's own result (e.g. the :class:`GeoTree`), kept on the result.
    """

    partition: Partition
    agreement_codes: np.ndarray
    exclusions: tuple[Exclusion, ...] = ()
    detail: object | None = None  # each method's own result type, read by its own hooks


@dataclass(frozen=True)
class Bottom:
    """The cohort a method reports as served worst.

    Attributes:
        mask: (S,) True for its speakers (all False when the method found none).
        label: its name in the report.
    """

    mask: np.ndarray
    label: str


@dataclass(frozen=True)
class MethodOutcome:
    """What one method produced in an audit.

    Attributes:
        method: the method.
        partition: its candidate cohorts (audited speakers → cohorts, ``-1``: in none).
        table: the report's table of its cohorts (``group`` + WER columns), worst first.
        bottom: the cohort it reports as served worst.
        test: its row of the methods table: the bottom cohort against the rest (WER, WER gap
            with interval, p-value, shares) and the recovery of planted cohorts.
        detail: the method's own result (e.g. :class:`GroupWER`, :class:`GeoTree`), or None.
    """

    method: AuditMethod
    partition: Partition
    table: pd.DataFrame
    bottom: Bottom
    test: dict[str, object]
    detail: object | None = None

    @property
    def name(self) -> str:
        """The method's name in the report."""
        return self.method.name


@dataclass(frozen=True)
class ReportSection:
    """A method's own part of its report.html section; the report adds the cohort table, the
    WER-per-cohort bars and the note on pooled cohorts to every section.

    Attributes:
        columns: cohort-table columns shown, in order (those the table lacks are skipped).
        paragraphs: text above the table.
        images: base64 PNG plots shown after the WER-per-cohort bars.
    """

    columns: tuple[str, ...] = COHORT_COLUMNS
    paragraphs: tuple[str, ...] = ()
    images: tuple[str, ...] = ()


class AuditMethod(ABC):
    """One way of finding the cohorts a recognizer serves worst (see the module docstring)."""

    #: the specification word in ``--methods``.
    kind: ClassVar[str]
    #: how to write the specification, for error messages.
    usage: ClassVar[str]
    #: the inputs the method reads, in words.
    needs: ClassVar[str]
    #: whether the specification is ``kind:<argument>``.
    takes_argument: ClassVar[bool] = False
    #: the bottom label when no cohort stands out.
    no_bottom_label: ClassVar[str] = "(none: a single cohort)"
    #: its column of ``speaker_cohorts.csv`` (written only when speaker ids are allowed);
    #: None: the method adds none.
    speaker_column: ClassVar[str | None] = None
    #: whether the report quotes the published figures of the method (Dheram et al. 2022).
    cites_paper_figures: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The method's name in the report (its specification)."""
        return self.kind

    @classmethod
    def from_spec(cls, argument: str | None) -> AuditMethod:
        """Build the method from the text after ``kind:`` (None when there is none)."""
        return cls()

    @classmethod
    def defaults(cls, inputs: AuditInputs) -> list[AuditMethod]:
        """The instances run when no method is named: this method if its inputs exist."""
        method = cls.from_spec(None)
        return [method] if method.available(inputs) else []

    def available(self, inputs: AuditInputs) -> bool:
        """True when the inputs the method needs are present."""
        return True

    def check(self, inputs: AuditInputs) -> None:
        """Raise :class:`InputDataError` naming a missing input (the method was asked for)."""

    @abstractmethod
    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        """The candidate cohorts.

        Raises:
            TooFewSpeakersError: the data are valid but too small for this method (the audit
                notes it and goes on with the other methods).
        """

    def bottom_groups(
        self, proposal: Proposal, errors: np.ndarray, words: np.ndarray
    ) -> list[int]:
        """Cohort codes forming the bottom cohort, given each cohort's errors and words.

        Default: the reportable ("ok") cohort with the highest WER.
        """
        status = proposal.partition.status
        ok = [g for g in range(len(words)) if status[g] == "ok" and words[g] > 0]
        return [max(ok, key=lambda g: errors[g] / words[g])] if ok else []

    def choose_bottom(
        self, proposal: Proposal, errors: np.ndarray, words: np.ndarray
    ) -> Bottom:
        """The bottom cohort from per-speaker ``errors`` and ``words`` (point estimates)."""
        p = proposal.partition
        valid = p.codes >= 0
        eg = np.bincount(p.codes[valid], weights=errors[valid], minlength=p.n_groups)
        wg = np.bincount(p.codes[valid], weights=words[valid], minlength=p.n_groups)
        pick = self.bottom_groups(proposal, eg, wg)
        mask = np.isin(p.codes, pick) & valid
        if not pick or mask.all():
            return Bottom(np.zeros_like(mask), self.no_bottom_label)
        return Bottom(mask, " + ".join(p.labels[g] for g in pick))

    def candidates(self, proposal: Proposal, inputs: AuditInputs) -> np.ndarray:
        """Every cohort the search could have reported as its bottom cohort.

        The selection-corrected test of the bottom cohort (:mod:`fairstream.audit.selection`)
        takes the maximum over these candidates, each compared with the rest of the audited
        speakers, so the list must hold the cohort :meth:`choose_bottom` picks (a union of
        groups too, when the method reports one) and every other it might have picked.

        Default: each reportable ("ok") cohort of the partition.

        Returns:
            (C, S) bool, row c = the speakers of candidate c.
        """
        p = proposal.partition
        ok = np.array([g for g in range(p.n_groups) if p.status[g] == "ok"], dtype=np.int64)
        return np.asarray(p.codes[None, :] == ok[:, None], dtype=bool)

    def cohort_table(
        self, proposal: Proposal, table: pd.DataFrame, overall: dict[str, float]
    ) -> tuple[pd.DataFrame, object | None]:
        """The report's table of the cohorts (worst first) and the method's result object.

        Args:
            proposal: what :meth:`propose` returned.
            table: the bootstrap table of ``proposal.partition``.
            overall: overall WER and totals.

        Returns:
            (table, result object kept on :class:`AuditResult`, e.g. ``proposal.detail``).
        """
        ordered = table.sort_values("wer", ascending=False, na_position="last")
        return ordered.reset_index(drop=True), proposal.detail

    def report_section(
        self, outcome: MethodOutcome, stats: SpeakerStats, config: AuditConfig
    ) -> ReportSection:
        """The method's text, plots and table columns in report.html.

        Default: the cohort table's usual columns, no text and no plot of its own.
        """
        return ReportSection()

    def report_data(self, outcome: MethodOutcome) -> dict[str, object]:
        """Entries the method adds to report.json (key → JSON-like value). Default: none."""
        return {}

    def report_tables(self, outcome: MethodOutcome) -> dict[str, pd.DataFrame]:
        """CSV files the method adds to the report (file name → table). Default: none."""
        return {}


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[AuditMethod]] = {}


def register_method(cls: _C) -> _C:
    """Make a method class available to ``--methods`` and the default selection.

    Usable as a class decorator. Default selection follows registration order.
    """
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"audit method {cls.kind!r} is already registered")
    _REGISTRY[cls.kind] = cls
    return cls


def registered_methods() -> tuple[type[AuditMethod], ...]:
    """The registered method classes, in registration order."""
    return tuple(_REGISTRY.values())


def _usage() -> str:
    names = [c.usage for c in _REGISTRY.values()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _split_spec(spec: str) -> tuple[type[AuditMethod], str | None] | None:
    kind, sep, arg = spec.partition(":")
    cls = _REGISTRY.get(kind)
    if cls is None or (cls.takes_argument and not arg) or (not cls.takes_argument and sep):
        return None
    return cls, (arg if sep else None)


def parse_methods(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"attribute:accent,attribute:accent+gender,geo,geodemo,embedding"`` → validated tuple."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for it in items:
        if _split_spec(it) is None:
            raise InputDataError(f"unknown audit method {it!r}; use {_usage()}")
    if not items:
        raise InputDataError("no audit method given")
    return tuple(dict.fromkeys(items))


def build_methods(spec: str | Sequence[str]) -> list[AuditMethod]:
    """The method objects of a specification (see :func:`parse_methods`)."""
    out = []
    for it in parse_methods(spec):
        parsed = _split_spec(it)
        assert parsed is not None  # parse_methods validated it
        out.append(parsed[0].from_spec(parsed[1]))
    return out


def default_methods(inputs: AuditInputs) -> list[AuditMethod]:
    """Every registered method whose inputs are present, in registration order.

    Raises:
        InputDataError: none applies.
    """
    chosen = [m for cls in _REGISTRY.values() for m in cls.defaults(inputs)]
    if not chosen:
        raise InputDataError(
            "no audit method applies: give --methods (e.g. attribute:<column>) or metadata "
            f"columns; available: {sorted(set(inputs.stats.metadata_columns))}"
        )
    return chosen


# ----------------------------------------------------------------------------- methods

_D = TypeVar("_D")
#: most unions of clusters an embedding bottom share may make candidates of.
_MAX_UNIONS = 4096
_Sized = TypeVar("_Sized", GeoTreeConfig, GeodemographicConfig, EmbeddingConfig)


def _detail(outcome: MethodOutcome, kind: type[_D]) -> _D:
    """The method's own result kept on ``outcome`` (of the type the method produces)."""
    detail = outcome.detail
    assert isinstance(detail, kind), type(detail)
    return detail


def _at_least(cfg: _Sized, min_cohort: int) -> _Sized:
    """``cfg`` with ``min_speakers`` raised to the privacy minimum cohort size."""
    return replace(cfg, min_speakers=min_cohort) if cfg.min_speakers < min_cohort else cfg



@register_method
class AttributeMethod(AuditMethod):
    """WER by a metadata column or an intersection of columns (``attribute:accent+gender``)."""

    kind = "attribute"
    usage = "attribute:<column>[+<column>...]"
    needs = "speaker metadata columns"
    takes_argument = True

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)

    @property
    def name(self) -> str:
        return f"{self.kind}:{'+'.join(self.columns)}"

    @classmethod
    def from_spec(cls, argument: str | None) -> AuditMethod:
        if not argument:
            raise InputDataError(f"method attribute needs columns: {cls.usage}")
        return cls(argument.split("+"))

    @classmethod
    def defaults(cls, inputs: AuditInputs) -> list[AuditMethod]:
        meta = set(inputs.stats.metadata_columns)
        return [cls((c,)) for c in DEFAULT_ATTRIBUTES if c in meta]

    def available(self, inputs: AuditInputs) -> bool:
        return set(self.columns) <= set(inputs.stats.metadata_columns)

    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        by = self.columns if len(self.columns) > 1 else self.columns[0]
        p = apply_min_size(partition_by(inputs.stats, by), inputs.min_cohort)
        return Proposal(partition=p, agreement_codes=p.codes)

    def cohort_table(
        self, proposal: Proposal, table: pd.DataFrame, overall: dict[str, float]
    ) -> tuple[pd.DataFrame, object | None]:
        gw: GroupWER = _group_wer(proposal.partition.columns, table, overall)
        return gw.by_group, gw


@register_method
class GeoMethod(AuditMethod):
    """Geographic tree: lat/lon regions split only on significant WER differences.

    Candidates (:meth:`candidates`, the default): the tree's regions. The bottom region is the
    worst of them, and the max-statistic over the regions corrects for that choice. The region
    boundaries come from the tree's own search, which is corrected by the tree itself: a split
    is kept only when its simultaneous max-statistic interval over every threshold considered
    excludes 0, at hierarchical levels summing to the family-wise α
    (:mod:`fairstream.audit.geo_tree`). With no geographic effect the tree therefore stays one
    region (no bottom cohort, nothing declared) with probability ≈ 1 − α; the calibration
    benchmark measures the family-wise error of both steps together.
    """

    kind = "geo"
    usage = "geo"
    needs = "speaker latitude and longitude columns"
    no_bottom_label = "(none: no split found)"
    speaker_column = "geo"

    def available(self, inputs: AuditInputs) -> bool:
        g = inputs.config.geo
        return {g.lat_col, g.lon_col} <= set(inputs.stats.metadata_columns)

    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        cfg = _at_least(inputs.config.geo, inputs.min_cohort)
        tree = grow_geo_tree(inputs.stats, boot, cfg)
        return Proposal(partition=tree.partition, agreement_codes=tree.partition.codes,
                        exclusions=tree.exclusions, detail=tree)

    def cohort_table(
        self, proposal: Proposal, table: pd.DataFrame, overall: dict[str, float]
    ) -> tuple[pd.DataFrame, object | None]:
        ordered, tree = super().cohort_table(proposal, table, overall)
        assert isinstance(tree, GeoTree)
        regions = regions_frame(tree).merge(ordered, on="group", how="left")
        return regions.sort_values("wer", ascending=False).reset_index(drop=True), tree

    def report_section(
        self, outcome: MethodOutcome, stats: SpeakerStats, config: AuditConfig
    ) -> ReportSection:
        g = _detail(outcome, GeoTree)
        text = (
            f"{len(g.regions)} regions from {len(g.tests)} split tests "
            f"(min {g.config.min_speakers} speakers and {g.config.min_words} words per "
            f"region, at most {g.config.max_regions} regions, "
            f"family-wise α = {g.config.alpha}). "
            "A region is split only when the simultaneous speaker-bootstrap interval of the "
            "best split's WER difference (max-statistic over all candidate thresholds, level "
            "α × region share of speakers) excludes 0."
        )
        # no map here: report.html draws the region map from the published cohort table
        return ReportSection(columns=("group", "path") + COHORT_COLUMNS[1:], paragraphs=(text,))

    def report_data(self, outcome: MethodOutcome) -> dict[str, object]:
        return {"geo_split_tests": [asdict(t) for t in _detail(outcome, GeoTree).tests]}

    def report_tables(self, outcome: MethodOutcome) -> dict[str, pd.DataFrame]:
        tests = [asdict(t) for t in _detail(outcome, GeoTree).tests]
        return {"geo_split_tests.csv": pd.DataFrame(tests)}


@register_method
class GeodemographicMethod(AuditMethod):
    """The binary partition of zip demographics with the largest WER gap."""

    kind = "geodemo"
    usage = "geodemo"
    needs = "a zip demographics table and a speaker zip column"
    speaker_column = "geodemographic"
    cites_paper_figures = True

    def available(self, inputs: AuditInputs) -> bool:
        zip_col = inputs.config.geodemographic.zip_col
        return inputs.zip_table is not None and zip_col in set(inputs.stats.metadata_columns)

    def check(self, inputs: AuditInputs) -> None:
        if inputs.zip_table is None:
            raise InputDataError(
                "method geodemo needs a zip demographics table (--zip-demographics)"
            )

    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        cfg = _at_least(inputs.config.geodemographic, inputs.min_cohort)
        assert inputs.zip_table is not None  # check() ran
        found: GeodemographicResult = search_geodemographic(inputs.stats, inputs.zip_table, cfg)
        return Proposal(partition=found.partition, agreement_codes=found.partition.codes,
                        exclusions=found.exclusions, detail=found)

    def bottom_groups(
        self, proposal: Proposal, errors: np.ndarray, words: np.ndarray
    ) -> list[int]:
        return [0]  # the search already chose the worse side (code 0)

    def candidates(self, proposal: Proposal, inputs: AuditInputs) -> np.ndarray:
        """Every cohort the search compared with the rest (one side of each partition
        that left enough speakers on both sides); the first is the bottom cohort."""
        found = proposal.detail
        assert isinstance(found, GeodemographicResult)
        out = np.zeros((len(found.candidate_members), inputs.stats.n_speakers), dtype=bool)
        for i, members in enumerate(found.candidate_members):
            out[i, members] = True
        return out

    def report_section(
        self, outcome: MethodOutcome, stats: SpeakerStats, config: AuditConfig
    ) -> ReportSection:
        gd = _detail(outcome, GeodemographicResult)
        text = (f"Largest WER gap among {gd.n_candidates} binary zip partitions: "
                f"{gd.bottom_definition}. The p-value and interval of the methods table are "
                f"corrected for this search (max-statistic over the {gd.n_candidates} "
                "candidates); the figures conditional on this choice are shown as naive.")
        return ReportSection(paragraphs=(text,))

    def report_data(self, outcome: MethodOutcome) -> dict[str, object]:
        g = _detail(outcome, GeodemographicResult)
        return {"geodemographic": {
            "attribute": g.attribute, "bottom_definition": g.bottom_definition,
            "n_candidates": g.n_candidates,
            "top_candidates": g.candidates.head(20).to_dict(orient="records"),
        }}

    def report_tables(self, outcome: MethodOutcome) -> dict[str, pd.DataFrame]:
        return {"geodemographic_candidates.csv": _detail(outcome, GeodemographicResult).candidates}


@register_method
class EmbeddingMethod(AuditMethod):
    """k-means cohorts of speaker embeddings (given, or an fbank fallback from audio)."""

    kind = "embedding"
    usage = "embedding"
    needs = "speaker or utterance embeddings, or a corpus directory with audio"
    speaker_column = "embedding"
    cites_paper_figures = True

    def available(self, inputs: AuditInputs) -> bool:
        corpus = inputs.corpus_dir
        return inputs.embeddings is not None or (corpus is not None
                                                 and (corpus / AUDIO_DIR).is_dir())

    def check(self, inputs: AuditInputs) -> None:
        if inputs.embeddings is None and inputs.corpus_dir is None:
            raise InputDataError(
                "method embedding needs --embeddings, or --corpus-dir with audio for the "
                "fallback fbank embedding"
            )

    def propose(self, inputs: AuditInputs, boot: SpeakerBootstrap) -> Proposal:
        cfg = _at_least(inputs.config.embedding, inputs.min_cohort)
        found = self._cohorts(inputs, cfg)
        return Proposal(partition=found.partition, agreement_codes=found.cluster_codes,
                        exclusions=found.exclusions, detail=found)

    def _cohorts(self, inputs: AuditInputs, cfg: EmbeddingConfig) -> EmbeddingCohorts:
        stats, source = inputs.stats, inputs.embeddings
        if source is None:
            assert inputs.corpus_dir is not None  # check() ran
            mat, has, ex = fallback_embeddings(inputs.corpus_dir, list(stats.table.index),
                                               progress=inputs.progress)
            text = ("fallback: per-speaker mean + std of 80-dim log-mel fbank, z-scored "
                    "(no trained speaker model)")
            inputs.provenance["embeddings"] = {"source": text,
                                               "corpus_dir": str(inputs.corpus_dir)}
            return find_embedding_cohorts(stats, mat, has, replace(cfg, normalize="zscore"),
                                          source=text, exclusions=ex)
        checkpoint = encoder_checkpoint(source)
        if checkpoint is not None:  # "encoder:CKPT": embeddings from the recognizer itself
            return encoder_cohorts(checkpoint, inputs.corpus_dir, stats, inputs.utterances(), cfg,
                                   inputs.provenance, progress=inputs.progress)
        if isinstance(source, tuple):
            ids, vectors = np.asarray(source[0]).astype(object), np.asarray(source[1])
            inputs.provenance["embeddings"] = {"source": "arrays", "shape": list(vectors.shape)}
        else:
            ids, vectors = read_embeddings(source, ids=inputs.embedding_ids)
            inputs.provenance["embeddings"] = (file_info(source)
                                               if isinstance(source, (str, Path))
                                               else {"source": "DataFrame"})
        utt_map = None
        if inputs.table is not None:  # embeddings may be per utterance
            utt = inputs.table.utterances
            utt_map = pd.Series(utt["speaker_id"].to_numpy(), index=utt["utt_id"].to_numpy())
        mat, has, ex = speaker_mean_embeddings(ids, vectors, stats, utt_map)
        return find_embedding_cohorts(stats, mat, has, cfg, source="given", exclusions=ex)

    def bottom_groups(
        self, proposal: Proposal, errors: np.ndarray, words: np.ndarray
    ) -> list[int]:
        found = proposal.detail
        assert isinstance(found, EmbeddingCohorts)
        return [proposal.partition.labels.index(lbl) for lbl in found.bottom_labels]

    def candidates(self, proposal: Proposal, inputs: AuditInputs) -> np.ndarray:
        """Each reportable cluster; with a bottom share, also every union of two or more
        reportable clusters within that share of speakers (any of them can be the worst
        clusters taken together).

        Raises:
            InputDataError: the unions are too many to test (lower ``--k`` or
                ``--bottom-share``).
        """
        single = super().candidates(proposal, inputs)
        share = inputs.config.embedding.bottom_share
        if share is None or len(single) < 2:
            return single
        pct = 100.0 * single.sum(axis=1) / inputs.stats.n_speakers
        unions: list[tuple[int, ...]] = []

        def grow(prefix: tuple[int, ...], total: float) -> None:
            for j in range(prefix[-1] + 1 if prefix else 0, len(single)):
                if total + pct[j] <= share + 1e-9:  # superset of the rule's unions
                    if prefix:
                        unions.append(prefix + (j,))
                        if len(unions) > _MAX_UNIONS:
                            raise InputDataError(
                                f"--bottom-share {share:g} % with {len(single)} clusters "
                                f"makes more than {_MAX_UNIONS} candidate unions to correct "
                                "for; lower --k or --bottom-share")
                    grow(prefix + (j,), total + pct[j])

        grow((), 0.0)
        return np.vstack([single] + [single[list(u)].any(axis=0, keepdims=True)
                                     for u in unions])

    def report_section(
        self, outcome: MethodOutcome, stats: SpeakerStats, config: AuditConfig
    ) -> ReportSection:
        em = _detail(outcome, EmbeddingCohorts)
        sil = ", ".join(f"k={k}: {v:.3f}" for k, v in sorted(em.silhouette.items()))
        return ReportSection(paragraphs=(f"Embeddings: {em.source}. k = {em.k} (silhouette "
                                         f"{sil}). Bottom cohort: "
                                         f"{', '.join(em.bottom_labels)}.",))

    def report_data(self, outcome: MethodOutcome) -> dict[str, object]:
        em = _detail(outcome, EmbeddingCohorts)
        return {"embedding": {"k": em.k, "silhouette": em.silhouette, "source": em.source,
                              "bottom_clusters": list(em.bottom_labels)}}
