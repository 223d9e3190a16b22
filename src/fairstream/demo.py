"""The whole story on the embedded demo corpus, as one resumable job.

Stages (each is skipped when its output already exists, so a killed demo resumes):

1. ``corpus``  — synthesize the demo corpus (:func:`fairstream.data.synthesis.build_corpus`).
2. ``train``   — train the default streaming transducer recipe for its fixed number of
   optimizer steps (``schedule.max_steps``, a global batch whatever the number of processes);
   its wall-clock budget is only a safety cap, and the demo warns when it stopped training
   early.
3. ``decode``  — decode the test split in streaming mode with the recipe's search (its
   ``decode`` section: beam search fused with a token n-gram LM fitted on the training
   transcripts) into ``results.parquet``, and with plain greedy search into
   ``results_greedy.parquet`` as the baseline; decode the audit split (400 more unseen
   speakers, a few utterances each) with greedy search into ``results_audit.parquet``.
4. ``speaker`` — train the speaker-embedding extractor (small ECAPA-TDNN) on the training
   speakers and embed the audited split; the audit's automatic cohorts cluster these embeddings.
5. ``audit``   — disaggregated WER, geographic tree, geodemographic and embedding cohorts,
   planted-cohort recovery on the audit split (the test split for a corpus without one);
   write ``audit/report.html`` and ``audit/cohorts.json``.
6. ``mitigate`` — (with an audit split) take the audit's bottom cohort with the strongest
   selection-corrected evidence across methods, map its definition onto the training speakers,
   fine-tune with EWC (:mod:`fairstream.mitigation`), decode the **test** split again (speakers
   disjoint from the audited ones: the cohort is chosen on one set of speakers and measured on
   another), audit the test speakers again before and after (``mitigate/audit_before``,
   ``mitigate/audit_after``) and add the before/after section to ``audit/report.html``
   (``mitigate/comparison.{md,json,png}``).

``OUT/summary.md`` collects the numbers (the steps trained against the target among them);
``OUT/summary.json`` holds the same data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fairstream._io import atomic_write_text as _atomic_write
from fairstream._threads import torch_threads as _torch_threads
from fairstream.data.layout import CorpusVersionError, read_corpus_json
from fairstream.errors import CorpusError, TrainingError

if TYPE_CHECKING:
    from fairstream.data.corpus import Corpus
    from fairstream.data.layout import JsonObject
    from fairstream.inference import LoadedModel, SearchConfig
    from fairstream.lm import NgramLM

__all__ = [
    "DemoConfig", "DemoResult", "TrainingRecord", "default_recipe", "read_training_record",
    "run_demo",
]

log = logging.getLogger(__name__)


#: the split the demo audits when the corpus has it (the ``demo-clean`` preset does): more
#: speakers than the test split, so the cohort searches have the power to find something.
AUDIT_SPLIT = "audit"


def default_recipe() -> Path:
    """Path of the packaged default recipe (``lstm_transducer.yaml``)."""
    return Path(str(resources.files("fairstream") / "recipes" / "lstm_transducer.yaml"))


@dataclass(frozen=True)
class DemoConfig:
    """Settings of :func:`run_demo`.

    Attributes:
        out: output directory (corpus, experiment, results, audit, summary).
        preset: corpus preset (``demo-clean``: the demo corpus with clean test text;
            ``demo`` without it; ``tiny`` for a smoke run).
        seed: corpus and training seed.
        jobs: worker processes for synthesis.
        recipe: training recipe; default :func:`default_recipe`.
        overrides: ``key=value`` recipe overrides.
        steps: optimizer steps to train (None: the recipe's ``schedule.max_steps``).
        budget_minutes: wall-clock safety cap on training (None: the recipe's); when it stops
            training before ``steps``, the demo warns and the summary says so.
        nproc: training processes; above 1 training runs data-parallel under ``torchrun``
            (one thread each), which is how a 2-core machine is used fully.
        chunk_ms: streaming chunk size used to decode the test split.
        threads: PyTorch threads for decoding, embedding and the audit (one stream at a time
            gains nothing from more, and spinning threads slow everything else on the machine
            down; training sets its own).
        n_boot: speaker-bootstrap replicates in the audit.
        speaker_model: train a speaker-embedding model for the audit's automatic cohorts
            (otherwise the audit falls back to fbank statistics).
        speaker_steps: training steps of the speaker model (None: its default schedule).
        mitigate: run the mitigation stage (EWC on the audit's strongest bottom cohort).
        mitigate_steps: its fine-tuning steps.
        progress: progress bars.
    """

    out: Path
    preset: str = "demo-clean"
    seed: int = 0
    jobs: int = 2
    recipe: Path | None = None
    overrides: tuple[str, ...] = ()
    steps: int | None = None
    budget_minutes: float | None = None
    nproc: int = 2
    chunk_ms: int = 160
    threads: int = 1
    n_boot: int = 1000
    speaker_model: bool = True
    speaker_steps: int | None = None
    mitigate: bool = True
    mitigate_steps: int = 150
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced: paths and the headline numbers."""

    corpus_dir: Path
    checkpoint: Path
    results: Path
    audit_dir: Path
    summary: Path
    wer_by_accent: pd.DataFrame
    audit_methods: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    training: TrainingRecord | None = None


@dataclass(frozen=True)
class TrainingRecord:
    """How the demo's model was trained, read back from its checkpoint.

    Attributes:
        steps: optimizer steps trained.
        target_steps: the run's ``schedule.max_steps`` (``None``: no step limit).
        stop_reason: ``max_steps``, ``max_epochs`` or ``budget`` (``None``: a checkpoint
            written before the stop reason was recorded).
        train_minutes: training wall-clock time.
        budget_minutes: the run's wall-clock safety cap (``None``: none).
        processes: training processes.
    """

    steps: int
    target_steps: int | None
    stop_reason: str | None
    train_minutes: float
    budget_minutes: float | None
    processes: int

    @property
    def stopped_early(self) -> bool:
        """True when training ended before its target number of steps."""
        return self.target_steps is not None and self.steps < self.target_steps

    def describe(self) -> str:
        """One line: steps trained of the target, time, processes and the stop reason."""
        target = f" of {self.target_steps}" if self.target_steps is not None else ""
        return (f"trained {self.steps}{target} steps in {self.train_minutes:.1f} min on "
                f"{self.processes} process(es) (stopped: {self.stop_reason or 'unknown'})")

    def warning(self) -> str | None:
        """The warning for a run that stopped before its target, else ``None``."""
        if not self.stopped_early:
            return None
        if self.stop_reason == "budget":
            cause = (f"the wall-clock safety cap (schedule.budget_minutes={self.budget_minutes:g})"
                     " stopped training")
        else:
            cause = f"training stopped ({self.stop_reason or 'unknown reason'})"
        return (f"WARNING: {cause} at step {self.steps} of {self.target_steps}: this model is "
                "trained less than the recipe asks, so its numbers are not comparable to a "
                "full run (rerun with a larger --budget-minutes in a fresh --out)")

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``summary.json``."""
        return {**dataclasses.asdict(self), "stopped_early": self.stopped_early,
                "warning": self.warning()}


@dataclass(frozen=True)
class TextReport:
    """How much of the test text the training text gives away, and how the held-out slot
    words fare.

    Attributes:
        test_utterances: Test utterances decoded.
        seen_sentences: Test utterances whose normalized sentence also occurs among the
            training transcripts (an LM fitted on them can have memorized it).
        heldout_words: Reference words of held-out slot values (names, places, songs never
            used in training), 0 when the corpus holds none out.
        heldout_error_rate: Per search (``recipe``, ``greedy``): the share of those words
            not matched (:func:`fairstream.metrics.heldout.heldout_slot_score`).
    """

    test_utterances: int
    seen_sentences: int
    heldout_words: int
    heldout_error_rate: dict[str, float]

    @property
    def seen_share(self) -> float:
        """Share of test utterances whose sentence occurs in training."""
        return self.seen_sentences / self.test_utterances if self.test_utterances else 0.0

    def describe(self) -> str:
        """One line for the log and the summary."""
        text = (f"test sentences also in the training transcripts: {self.seen_sentences} of "
                f"{self.test_utterances} ({100 * self.seen_share:.1f} %)")
        if not self.heldout_words:
            return text + "; no slot values held out of training"
        rates = ", ".join(f"{k} {100 * v:.2f} %" for k, v in self.heldout_error_rate.items())
        return (f"{text}; error rate on the {self.heldout_words} held-out slot words: {rates}")

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``summary.json`` (rates as fractions)."""
        return {**dataclasses.asdict(self), "seen_share": self.seen_share}


def summarize_test_text(corpus: Corpus, decoded: Mapping[str, pd.DataFrame]) -> TextReport:
    """Compare the decoded test references with the training transcripts (see
    :class:`TextReport`). ``decoded`` maps a search name to its results table."""
    from fairstream.data.layout import read_heldout_slots
    from fairstream.data.text import normalize
    from fairstream.metrics.heldout import heldout_slot_score

    train = {normalize(c.supervisions[0].text or "") for c in corpus.cuts("train")}
    first = next(iter(decoded.values()))
    seen = int(sum(ref in train for ref in first["ref"]))
    heldout = read_heldout_slots(corpus.root)
    rates: dict[str, float] = {}
    words = 0
    if heldout:
        for name in ("recipe", "greedy"):
            if name in decoded:
                df = decoded[name]
                score = heldout_slot_score(zip(df["ref"], df["hyp"]), heldout, normalized=True)
                words = score.slot_words
                rates[name] = score.error_rate
    return TextReport(test_utterances=len(first), seen_sentences=seen, heldout_words=words,
                      heldout_error_rate=rates)


def read_training_record(checkpoint: Path) -> TrainingRecord:
    """The :class:`TrainingRecord` of a checkpoint written by the training loop."""
    from fairstream.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    schedule = ck.config.get("schedule") or {}
    target = schedule.get("max_steps")
    budget = schedule.get("budget_minutes")
    reason = ck.progress.get("stop_reason")
    return TrainingRecord(
        steps=ck.step,
        target_steps=int(target) if target is not None else None,
        stop_reason=str(reason) if reason is not None else None,
        train_minutes=round(float(ck.progress.get("elapsed_s", 0.0)) / 60.0, 2),
        budget_minutes=float(budget) if budget is not None else None,
        processes=int(ck.progress.get("world_size", 1)),
    )


def _train_overrides(config: DemoConfig, corpus_dir: Path) -> list[str]:
    """The ``--set`` values the demo adds to the recipe for training."""
    sets = [*config.overrides, f"data.corpus={corpus_dir}", f"seed={config.seed}"]
    if config.steps is not None:
        sets.append(f"schedule.max_steps={config.steps}")
    if config.budget_minutes is not None:
        sets.append(f"schedule.budget_minutes={config.budget_minutes}")
    return sets


def _stage(name: str, timings: dict[str, float], echo: Callable[[str], None]) -> Callable[[], None]:
    t0 = time.perf_counter()
    echo(f"== {name}")

    def done() -> None:
        timings[name] = round(time.perf_counter() - t0, 1)

    return done


def run_demo(config: DemoConfig, echo: Callable[[str], None] = log.info) -> DemoResult:
    """Run (or resume) the demo. ``echo`` receives one line per stage and result."""
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.data.corpus import load_corpus
    from fairstream.data.presets import get_preset
    from fairstream.data.synthesis import build_corpus
    from fairstream.inference import SearchConfig, decode_cuts, load_transducer, summarize_wer
    from fairstream.results import read_results, write_results
    from fairstream.training.config import load_config
    from fairstream.training.transducer import train

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    corpus_dir = out / "corpus"

    # 1. corpus -------------------------------------------------------------------------
    done = _stage("corpus", timings, echo)
    preset = get_preset(config.preset)
    if _corpus_complete(corpus_dir, preset.fingerprint(config.seed)):
        echo(f"reusing the corpus in {corpus_dir}")
    else:
        summary = build_corpus(preset, corpus_dir, seed=config.seed,
                               jobs=config.jobs, resume=corpus_dir.exists(),
                               progress=config.progress)
        echo(f"built {summary.n_utterances} utterances "
             f"({summary.hours:.2f} h, {summary.utterances_per_second:.1f} utt/s) in {corpus_dir}")
    corpus = load_corpus(corpus_dir)
    done()

    # 2. train --------------------------------------------------------------------------
    done = _stage("train", timings, echo)
    exp = out / "exp"
    checkpoint = exp / "averaged.pt"
    if checkpoint.exists():
        echo(f"reusing the trained model {checkpoint}")
    else:
        sets = _train_overrides(config, corpus_dir)
        recipe = config.recipe or default_recipe()
        if config.nproc > 1:
            _train_distributed(recipe, sets, exp, config.nproc, config.progress)
        else:
            train(load_config(recipe, sets), out_dir=exp, resume=True, progress=config.progress)
        if not checkpoint.exists():
            raise TrainingError(f"training finished without writing {checkpoint}")
    training = read_training_record(checkpoint)
    echo(training.describe())
    warning = training.warning()
    if warning is not None:
        echo(warning)
    done()

    with _torch_threads(config.threads):  # batch-1 streaming: threads only contend
        # 3. decode -------------------------------------------------------------------------
        done = _stage("decode", timings, echo)
        results_path = out / "results.parquet"
        baseline_path = out / "results_greedy.parquet"
        decoded: dict[str, pd.DataFrame] = {}
        loaded = None
        for name, path in (("greedy", baseline_path), ("recipe", results_path)):
            if path.exists() and path.stat().st_mtime >= checkpoint.stat().st_mtime:
                echo(f"reusing {path}")
                decoded[name], _ = read_results(path)
                continue
            loaded = loaded or load_transducer(checkpoint)
            search, lm, meta = (SearchConfig(), None, {"method": "greedy"}) if name == "greedy" \
                else _recipe_search(loaded, corpus, echo)
            if name == "recipe" and search.method == "greedy" and \
                    search.max_symbols_per_frame == SearchConfig().max_symbols_per_frame:
                # a greedy recipe: the baseline is its result
                decoded[name] = decoded["greedy"]
                write_results(decoded[name], path, {"checkpoint": str(checkpoint),
                                                    "streaming": True,
                                                    "chunk_ms": config.chunk_ms, **meta})
                continue
            df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, corpus.cuts("test"),
                             search=search, lm=lm, streaming=True, chunk_ms=config.chunk_ms,
                             speakers=corpus.speakers, split="test", progress=config.progress)
            write_results(df, path, {"checkpoint": str(checkpoint), "streaming": True,
                                     "chunk_ms": config.chunk_ms, **meta})
            decoded[name] = df
        audited_split, audited_results = "test", results_path
        if AUDIT_SPLIT in corpus.splits:
            # greedy search, the headline and the decode CLI's default: the audit sees the
            # acoustic model's own errors, which an LM partly hides (benchmarks/discovery.py
            # audits both searches)
            audited_split, audited_results = AUDIT_SPLIT, out / "results_audit.parquet"
            if _fresh_greedy(audited_results, checkpoint):
                echo(f"reusing {audited_results}")
            else:
                loaded = loaded or load_transducer(checkpoint)
                audit_df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn,
                                       corpus.cuts(AUDIT_SPLIT), search=SearchConfig(),
                                       streaming=True, chunk_ms=config.chunk_ms,
                                       speakers=corpus.speakers, split=AUDIT_SPLIT,
                                       progress=config.progress)
                write_results(audit_df, audited_results,
                              {"checkpoint": str(checkpoint), "streaming": True,
                               "chunk_ms": config.chunk_ms, "method": "greedy"})
                echo(f"audit split: {summarize_wer(audit_df, by=()).iloc[0]['wer']:.2%} WER "
                     f"with greedy search ({audit_df['speaker_id'].nunique()} speakers) -> "
                     f"{audited_results}")
        df = decoded["recipe"]
        by_accent = summarize_wer(df, by=["accent"])
        baseline = summarize_wer(decoded["greedy"], by=["accent"])
        by_accent = by_accent.assign(greedy_wer=baseline.set_index("accent")["wer"]
                                     .reindex(by_accent["accent"]).to_numpy())
        for row in by_accent.itertuples():
            echo(f"  WER {row.accent:>16}: {100 * row.wer:6.2f}%  (greedy, no LM: "
                 f"{100 * row.greedy_wer:6.2f}%; {row.speakers} speakers, {row.ref_words} words)")
        test_text = summarize_test_text(corpus, decoded)
        echo(f"  {test_text.describe()}")
        done()

        # 4. speaker embeddings ------------------------------------------------------------
        embeddings: Path | None = None
        if config.speaker_model:
            done = _stage("speaker", timings, echo)
            embeddings = _speaker_embeddings(out, corpus, audited_split, config, echo)
            done()

        # 5. audit --------------------------------------------------------------------------
        done = _stage("audit", timings, echo)
        audit_dir = out / "audit"
        echo(f"auditing the {audited_split} split ({audited_results.name})")
        audit = run_audit(audited_results, corpus_dir=corpus_dir, out_dir=audit_dir,
                          embeddings=embeddings,
                          config=AuditConfig(n_boot=config.n_boot, seed=config.seed),
                          progress=config.progress)
        echo(f"audit report: {audit_dir / 'report.html'}")
        done()

        # 6. mitigate -----------------------------------------------------------------------
        mitigation_md = None
        if config.mitigate and audited_split != "test":
            done = _stage("mitigate", timings, echo)
            mitigation_md = _mitigate(out, corpus, checkpoint, audit_dir, config, echo)
            done()

    summary_path = _write_summary(out, corpus.planted, by_accent, audit.methods, timings,
                                  checkpoint, results_path, audit_dir, training, test_text,
                                  audited_split, audit.overall, mitigation_md)
    return DemoResult(corpus_dir=corpus_dir, checkpoint=checkpoint, results=results_path,
                      audit_dir=audit_dir, summary=summary_path, wer_by_accent=by_accent,
                      audit_methods=audit.methods, timings=timings, training=training)


def _mitigate(out: Path, corpus: Corpus, checkpoint: Path, audit_dir: Path,
              config: DemoConfig, echo: Callable[[str], None]) -> str | None:
    """EWC on the audit's strongest bottom cohort, measured on the test split, then the audit
    run again on the test speakers before and after; the comparison's Markdown for the summary
    (None when there is nothing to mitigate)."""
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.errors import InputDataError
    from fairstream.mitigation.report import add_to_report, mitigation_section
    from fairstream.mitigation.run import MitigationConfig, mitigate

    cfg = MitigationConfig(method="ewc", steps=config.mitigate_steps, seed=config.seed,
                           threads=config.threads)
    try:
        result = mitigate(checkpoint, corpus.root, audit_dir / "cohorts.json",
                          out / "mitigate", cfg, eval_split="test", n_boot=config.n_boot,
                          progress=config.progress, echo=echo)
    except InputDataError as exc:  # no tested bottom cohort, or too few training speakers
        echo(f"mitigation skipped: {exc}")
        return None
    # audit again: the same methods on the test speakers, before and after
    embeddings = (_speaker_embeddings(out, corpus, "test", config, echo)
                  if config.speaker_model else None)
    again = {}
    for tag, results in (("before", result.before), ("after", result.after)):
        audit = run_audit(results, corpus_dir=corpus.root, embeddings=embeddings,
                          out_dir=out / "mitigate" / f"audit_{tag}",
                          config=AuditConfig(n_boot=config.n_boot, seed=config.seed),
                          progress=config.progress)
        again[tag] = audit.methods
    add_to_report(audit_dir / "report.html",
                  mitigation_section(result, cfg, audit_again=(again["before"], again["after"])))
    s = result.comparison.summary
    echo(f"EWC on {result.cohort.name}: cohort WER {s['bottom_before']:.2%} -> "
         f"{s['bottom_after']:.2%}, overall {s['overall_before']:.2%} -> "
         f"{s['overall_after']:.2%} (test speakers); audit again: "
         f"{out / 'mitigate' / 'audit_after' / 'report.html'}; before/after in "
         f"{audit_dir / 'report.html'}")
    return (f"EWC (λ = {cfg.lam:g}, {cfg.steps} steps) on `{result.cohort.name}` (found by "
            f"`{result.cohort.method}` on the audited speakers; {len(result.train_speakers)} "
            "training speakers), measured on the test speakers:\n\n"
            + result.comparison.markdown())


def _recipe_search(loaded: LoadedModel, corpus: Corpus, echo: Callable[[str], None]
                   ) -> tuple[SearchConfig, NgramLM | None, JsonObject]:
    """The search stored in the checkpoint (the recipe's ``decode`` section) and its token
    n-gram LM, fitted on the training transcripts and stored beside the checkpoint (where
    ``fairstream decode --search recipe`` finds it) when the search asks for one."""
    from fairstream.inference import lm_beside, recipe_search
    from fairstream.lm import NgramLM

    search = recipe_search(loaded.config, loaded.path)
    meta: JsonObject = {"method": search.method, "decode": dataclasses.asdict(search)}
    lm = None
    if search.method == "beam" and search.lm_order > 0:
        texts = [s.text for cut in corpus.cuts("train") for s in cut.supervisions if s.text]
        lm = NgramLM.fit_texts(texts, loaded.tokenizer, order=search.lm_order)
        path = lm.save(lm_beside(loaded.path))
        echo(f"fitted {lm} on {len(texts)} training transcripts -> {path}")
        meta["lm"] = str(path)
    return search, lm, meta


def _speaker_embeddings(out: Path, corpus: Corpus, split: str, config: DemoConfig,
                        echo: Callable[[str], None]) -> Path:
    """Train (or reuse) the speaker extractor; embed ``split``; per-speaker means path."""
    from fairstream.sv.embed import embed_split, speakers_path
    from fairstream.sv.train import load_sv_config, train_speaker_model

    sv_dir = out / "sv"
    checkpoint = sv_dir / "final.pt"
    if checkpoint.exists():
        echo(f"reusing the speaker model {checkpoint}")
    else:
        n_train = int((corpus.speakers["split"] == "train").sum())
        sets = [f"data.corpus={corpus.root}", f"seed={config.seed}",
                f"data.speakers_per_batch={min(32, n_train)}"]  # small corpora: fewer per batch
        if config.speaker_steps is not None:
            sets.append(f"schedule.max_steps={config.speaker_steps}")
        sv_cfg = load_sv_config(None, sets, arw=False)
        with _torch_threads(os.cpu_count() or 1):  # PyTorch's default, for training
            result = train_speaker_model(sv_cfg, sv_dir, resume=True, progress=config.progress)
        echo(f"speaker model: {result.steps} steps in {result.elapsed_s / 60:.1f} min")
    path = out / ("embeddings.parquet" if split == "test" else f"embeddings_{split}.parquet")
    per_speaker = speakers_path(path)
    if per_speaker.exists() and per_speaker.stat().st_mtime >= checkpoint.stat().st_mtime:
        echo(f"reusing {per_speaker}")
        return per_speaker
    per_speaker = embed_split(checkpoint, corpus, split, path, progress=config.progress)
    echo(f"{len(corpus.cuts(split))} {split} utterances embedded -> {per_speaker}")
    return per_speaker


def _train_distributed(recipe: Path, sets: list[str], exp: Path, nproc: int,
                       progress: bool) -> None:
    """Run ``fairstream train`` under ``torchrun`` with ``nproc`` processes (DDP, gloo)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "fairstream", "train", "--config", str(recipe),
           "--out", str(exp)]
    for item in sets:
        cmd += ["--set", item]
    if not progress:
        cmd.append("--no-progress")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0:
        raise TrainingError(f"distributed training exited with status {done.returncode}: "
                            f"{' '.join(cmd)}")


def _fresh_greedy(results: Path, checkpoint: Path) -> bool:
    """True when ``results`` is newer than ``checkpoint`` and was decoded with greedy search."""
    from fairstream.results import read_results

    if not results.exists() or results.stat().st_mtime < checkpoint.stat().st_mtime:
        return False
    _, meta = read_results(results)
    return meta.get("method") == "greedy"


def _corpus_complete(corpus_dir: Path, fingerprint: str) -> bool:
    """True when ``corpus_dir`` holds the finished corpus of ``fingerprint``.

    A missing or unreadable ``corpus.json`` means the corpus is (re)built; another fingerprint
    means it is extended (an older build of the preset without its audit split) or refused by
    the build (another preset or seed).

    Raises:
        CorpusVersionError: the corpus was written with a layout this release cannot read.
    """
    try:
        info = read_corpus_json(corpus_dir)
        return bool(info.get("complete")) and info.get("fingerprint") == fingerprint
    except CorpusVersionError:
        raise
    except CorpusError:
        return False


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_summary(out: Path, planted: JsonObject, by_accent: pd.DataFrame,
                   methods: pd.DataFrame, timings: dict[str, float], checkpoint: Path,
                   results: Path, audit_dir: Path, training: TrainingRecord,
                   test_text: TextReport, audited_split: str,
                   audited: Mapping[str, float], mitigation_md: str | None = None) -> Path:
    wer = by_accent.assign(wer_percent=(100 * by_accent["wer"]).round(2),
                           greedy_wer_percent=(100 * by_accent["greedy_wer"]).round(2))[
        ["accent", "speakers", "utterances", "ref_words", "errors", "wer_percent",
         "greedy_wer_percent"]]
    under = ", ".join(planted.get("under_represented_accents", []))
    warning = training.warning()
    text = "\n".join([
        "# fairstream demo summary",
        "",
        f"Model: `{checkpoint}`; results: `{results}`; audit: `{audit_dir / 'report.html'}`.",
        "",
        "## Training",
        "",
        f"The model {training.describe()}; the recipe stops at a fixed number of optimizer "
        "steps, its wall-clock budget is only a safety cap.",
        *(["", f"**{warning}**", ""] if warning is not None else [""]),
        "## WER on the test split (streaming decode, speakers unseen in training)",
        "",
        "WER = Σ errors / Σ reference words. `wer_percent`: the recipe's search (its `decode`",
        "section; by default beam search fused with a token n-gram LM fitted on the training",
        "transcripts). `greedy_wer_percent`: greedy search, no LM, same model and audio.",
        f"Planted under-represented accents: {under}.",
        "",
        _table(wer),
        "",
        f"Test text: {test_text.describe()}.",
        "",
        "## Audit: methods side by side",
        "",
        f"Audited: the {audited_split} split, {int(audited['n_speakers'])} speakers unseen in "
        f"training, {int(audited['ref_words'])} reference words, WER "
        f"{100 * audited['wer']:.2f} % "
        + ("(greedy search, the headline: the acoustic model's own errors)."
           if audited_split != "test" else "(the recipe's search)."),
        "",
        _table(methods),
        "",
        *(["## Mitigation: before and after", "", mitigation_md, ""]
          if mitigation_md is not None else []),
        "## Stage timings (s)",
        "",
        _table(pd.DataFrame([timings])),
        "",
    ])
    path = out / "summary.md"
    _atomic_write(path, text)
    payload = {"wer_by_accent": wer.to_dict(orient="records"),
               "audit_methods": json.loads(methods.to_json(orient="records")),
               "timings": timings, "checkpoint": str(checkpoint),
               "training": training.as_dict(), "test_text": test_text.as_dict(),
               "audited_split": audited_split,
               "audited": {k: audited[k] for k in ("n_speakers", "ref_words", "wer")}}
    _atomic_write(out / "summary.json", json.dumps(payload, indent=2, default=str))
    return path
