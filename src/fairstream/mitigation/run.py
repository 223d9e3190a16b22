"""``fairstream mitigate``: fine-tune a recognizer for the cohort an audit found, then measure.

Steps (each written to ``OUT`` so a killed run resumes where it stopped):

1. the cohort: read ``cohorts.json`` (``fairstream audit`` writes it), pick the cohort
   (default: the bottom cohort with the strongest selection-corrected evidence across methods,
   :func:`~fairstream.audit.cohorts.choose_cohort`) and map its definition onto the corpus's
   training speakers (``cohort_speakers.txt``); fewer than :data:`MIN_COHORT_SPEAKERS`
   matching speakers is an error that says how many matched;
2. training from the checkpoint for exactly ``steps`` optimizer steps with the checkpoint's own
   recipe (batch, SpecAugment) and a fine-tuning schedule (``lr``, short warm-up, cosine
   decay over the steps), by method:

   * ``finetune``: the cohort's training cuts only (the forgetting baseline);
   * ``ewc``: the same data plus ``λ/2 Σ F_i (θ_i − θ*_i)²`` with the diagonal empirical Fisher
     of general training data (:mod:`fairstream.mitigation.penalty`; stored next to the
     checkpoint and reused);
   * ``l2sp``: the same penalty with F ≡ 1;
   * ``oversample``: all training data, the cohort's cuts ``oversample`` times per epoch;
   * ``cohort-input``: all training data, with a learned cohort vector added to the encoder's
     input features (cohort vs the rest, from the speaker's metadata;
     :mod:`fairstream.mitigation.cohort_input`), applied at test time too;

   ``general_share`` mixes that share of general training cuts into the cohort data of
   ``finetune``, ``ewc`` and ``l2sp``;
3. decode ``eval_split`` (default ``test``: speakers disjoint from the audited ones and from
   training) with greedy search, before (cached per checkpoint) and after;
4. compare, cohort by cohort, with paired speaker-bootstrap intervals
   (:func:`~fairstream.mitigation.compare.compare_results`) over the cohorts of the method that
   found the cohort, mapped onto the evaluation speakers the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fairstream._io import atomic_write_text
from fairstream.audit.cohorts import Cohort, assign_cohort, choose_cohort, load_cohorts
from fairstream.errors import InputDataError
from fairstream.mitigation.compare import Comparison, compare_results

__all__ = [
    "METHODS", "MIN_COHORT_SPEAKERS", "MitigationConfig", "MitigationResult",
    "cohort_labels", "cohort_training_speakers", "decode_split", "ensure_fisher",
    "fine_tune", "mitigate",
]

logger = logging.getLogger(__name__)

METHODS = ("ewc", "finetune", "l2sp", "oversample", "cohort-input")
#: fewer matching training speakers than this is refused: a handful of voices is not a
#: cohort to fine-tune on (the bootstrap and the audit's privacy minimum work in the same units)
MIN_COHORT_SPEAKERS = 3
#: the learned cohort-input offsets, beside the fine-tuned checkpoint
COHORT_INPUT_FILE = "cohort_input.pt"
#: what a mitigation directory is for (written first, completed at the end)
RUN_FILE = "mitigation.json"


@dataclass(frozen=True)
class MitigationConfig:
    """How ``fairstream mitigate`` fine-tunes (the same ``steps`` for every method).

    The defaults of ``lr`` and ``lam`` are what ``benchmarks/mitigation.py`` chose on the demo
    corpus's dev split (docs/mitigation.md): the learning rate from {5e-5, 1.5e-4, 5e-4} with
    ``finetune``, then λ of ``ewc`` from {0.01, 0.1, 1, 10, 100, 1000} at that rate.

    The defaults of ``lr`` and ``lam`` are what ``benchmarks/mitigation.py`` chose on the demo
    corpus's dev split (docs/mitigation.md): lr from {5e-5, 1.5e-4, 5e-4} with ``finetune``,
    then λ of ``ewc`` from {0.01, ..., 1000} at that lr.

    Attributes:
        method: one of :data:`METHODS`.
        steps: optimizer steps.
        lr: peak learning rate (``warmup_steps`` linear warm-up, then cosine to 2 % of it).
        warmup_steps: warm-up steps.
        lam: λ of ``ewc`` and ``l2sp`` (the Fisher has mean 1, so the same λ is the same
            average pull for both).
        fisher_batches: general training batches the Fisher is estimated from.
        oversample: how many times ``oversample`` shows each cohort cut per epoch.
        cohort_lr: learning rate of the ``cohort-input`` vectors (Adam; they start at zero).
        general_share: share of general training cuts mixed into the cohort data (``None``:
            none).
        seed: data order, augmentation and dropout seed.
        threads: PyTorch threads.
    """

    method: str = "ewc"
    steps: int = 150
    lr: float = 5e-5
    warmup_steps: int = 10
    lam: float = 100.0
    fisher_batches: int = 30
    oversample: int = 4
    cohort_lr: float = 0.01
    general_share: float | None = None
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputDataError(f"unknown mitigation method {self.method!r}; "
                                 f"choose from {', '.join(METHODS)}")
        if self.steps < 1:
            raise InputDataError(f"steps must be >= 1, got {self.steps}")
        if self.lam < 0:
            raise InputDataError(f"lam must be >= 0, got {self.lam}")
        if self.oversample < 1:
            raise InputDataError(f"oversample must be >= 1, got {self.oversample}")


@dataclass(frozen=True)
class MitigationResult:
    """What :func:`mitigate` returns: the cohort, its training speakers, the new checkpoint,
    the before/after results and their comparison."""

    cohort: Cohort
    train_speakers: list[str]
    checkpoint: Path
    before: Path
    after: Path
    comparison: Comparison
    out_dir: Path


def _read_embeddings(path: str | Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    from fairstream.audit.inputs import read_embeddings

    ids, vectors = read_embeddings(path)
    return pd.DataFrame(vectors, index=pd.Index([str(i) for i in ids], name="speaker_id"))


def _read_zip_table(path: str | Path | None, cohort: Cohort) -> pd.DataFrame | None:
    from fairstream.audit.inputs import read_zip_demographics

    path = path or cohort.definition.get("zip_table")
    return read_zip_demographics(path) if path else None


def cohort_training_speakers(cohort: Cohort, speakers: pd.DataFrame, *, split: str = "train",
                             zip_table: pd.DataFrame | None = None,
                             embeddings: pd.DataFrame | None = None,
                             minimum: int = MIN_COHORT_SPEAKERS) -> list[str]:
    """The ``split`` speakers of ``speakers.csv`` in the cohort (sorted ids).

    Raises:
        InputDataError: fewer than ``minimum`` match (the message says how many did).
    """
    pool = speakers[speakers["split"].astype(str) == split] if "split" in speakers else speakers
    mask = assign_cohort(cohort, pool.reset_index(drop=True), zip_table=zip_table,
                         embeddings=embeddings)
    ids = sorted(pool.reset_index(drop=True).loc[mask, "speaker_id"].astype(str))
    if len(ids) < minimum:
        raise InputDataError(
            f"cohort {cohort.name!r} matches {len(ids)} of the {len(pool)} {split} speakers; "
            f"fine-tuning needs at least {minimum}")
    return ids


def cohort_labels(cohorts: Sequence[Cohort], method: str, speakers: pd.DataFrame, *,
                  zip_table: pd.DataFrame | None = None,
                  embeddings: pd.DataFrame | None = None) -> pd.Series:
    """speaker id → label of the ``method``'s cohort it falls in (first match wins)."""
    table = speakers.reset_index(drop=True)
    out = pd.Series(index=table["speaker_id"].astype(str), dtype=object)
    for c in (c for c in cohorts if c.method == method):
        mask = assign_cohort(c, table, zip_table=zip_table, embeddings=embeddings)
        free = out.isna().to_numpy()
        out.iloc[mask & free] = c.label
    return out.dropna()


def _fingerprint_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def decode_split(checkpoint: str | Path, corpus_dir: str | Path, split: str, out: Path, *,
                 cohort_input: tuple[Path, set[str]] | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """Greedy decode of ``split`` (offline; the streaming result is the same) into ``out``,
    reused when ``out`` was written from the same files.

    ``cohort_input`` = (``cohort_input.pt``, the cohort's speakers): decode the cohort's
    speakers with the cohort's offset and the others with the rest's, each as a per-cohort
    CMVN (:mod:`fairstream.mitigation.cohort_input`)."""
    from fairstream._threads import torch_threads
    from fairstream.data.corpus import load_corpus
    from fairstream.inference import SearchConfig, decode_cuts, load_transducer
    from fairstream.mitigation.cohort_input import cohort_cmvn, load_offsets
    from fairstream.results import read_results, write_results

    stamp = _fingerprint_file(Path(checkpoint))
    if cohort_input is not None:
        stamp += _fingerprint_file(cohort_input[0])
    if out.exists():
        df, cfg = read_results(out)
        if cfg.get("checkpoint_sha") == stamp:
            return df
    corpus = load_corpus(corpus_dir)
    loaded = load_transducer(checkpoint)
    cuts = corpus.cuts(split)
    groups = [(cuts, loaded.cmvn)]
    if cohort_input is not None:
        offsets, _, _ = load_offsets(cohort_input[0])
        members = cohort_input[1]
        groups = [(cuts.filter(lambda c, inside=inside: (c.supervisions[0].speaker in members)
                               == inside).to_eager(), cohort_cmvn(loaded.cmvn, offsets[index]))
                  for index, inside in ((1, True), (0, False))]
    parts = []
    with torch_threads(1):
        for subset, cmvn in groups:
            if len(subset):
                parts.append(decode_cuts(loaded.model.eval(), loaded.tokenizer, cmvn, subset,
                                         search=SearchConfig(method="greedy"),
                                         speakers=corpus.speakers, split=split,
                                         progress=progress))
    df = pd.concat(parts, ignore_index=True)
    config = {"checkpoint": str(checkpoint), "checkpoint_sha": stamp, "split": split,
              "search": "greedy"}
    if cohort_input is not None:
        config["cohort_input"] = str(cohort_input[0])
    write_results(df, out, config=config)
    return df


def ensure_fisher(checkpoint: str | Path, corpus_dir: str | Path, n_batches: int, *,
                  progress: bool = False) -> Path:
    """The Fisher file of ``checkpoint`` (``<checkpoint>.fisher.pt``), estimated from
    ``n_batches`` general training batches if missing or made for other weights."""
    from fairstream._threads import torch_threads
    from fairstream.data.corpus import load_corpus
    from fairstream.errors import CheckpointError
    from fairstream.inference import load_transducer
    from fairstream.mitigation.penalty import (
        estimate_fisher,
        fisher_meta,
        fisher_path,
        load_fisher,
        parameter_fingerprint,
        save_fisher,
    )
    from fairstream.training.config import config_from_dict
    from fairstream.training.data import make_dataloader, precompute_features
    from fairstream.training.transducer import TransducerObjective

    path = fisher_path(checkpoint)
    loaded = load_transducer(checkpoint)
    model = loaded.model
    if path.exists():
        try:
            load_fisher(path, model)
            if fisher_meta(path).get("n_batches") == n_batches:
                return path
            logger.info("%s was estimated from another number of batches; estimating it "
                        "again from %d", path, n_batches)
        except CheckpointError as exc:
            logger.warning("%s; estimating it again", exc)
    corpus = load_corpus(corpus_dir)
    cfg = config_from_dict(loaded.config, [f"data.corpus={corpus_dir}"])
    cuts = corpus.cuts(cfg.data.train_split)
    if cfg.data.feature_cache:
        cache = Path(cfg.data.feature_cache)
        cuts = precompute_features(cuts, cache if cache.is_absolute() else corpus.root / cache,
                                   progress=progress)
    loader = make_dataloader(cuts, tokenizer=loaded.tokenizer, cmvn=loaded.cmvn,
                             max_duration=cfg.data.max_duration, shuffle=True,
                             spec_augment=None, seed=12345)
    with torch_threads(1):
        fisher = estimate_fisher(model, TransducerObjective(), iter(loader), n_batches,
                                 progress=progress)
    return save_fisher(path, fisher, parameter_fingerprint(model),
                       {"n_batches": n_batches, "batch_seconds": cfg.data.max_duration,
                        "split": cfg.data.train_split, "kind": "empirical, batch gradients"})


def fine_tune(checkpoint: str | Path, corpus_dir: str | Path, speakers: Sequence[str],
              cfg: MitigationConfig, out_dir: Path, *, progress: bool = False,
              cohort_name: str = "cohort") -> Path:
    """Train from ``checkpoint`` as ``cfg`` says; returns the averaged checkpoint (and, for
    ``cohort-input``, writes the learned offsets to ``out_dir/cohort_input.pt``)."""
    import torch

    from fairstream.inference import load_transducer
    from fairstream.mitigation.penalty import AnchorPenalty, fisher_path, load_fisher
    from fairstream.training.config import config_from_dict
    from fairstream.training.loop import TrainHook
    from fairstream.training.transducer import train

    out_dir.mkdir(parents=True, exist_ok=True)
    spk_file = out_dir / "cohort_speakers.txt"
    atomic_write_text(spk_file, "".join(f"{s}\n" for s in speakers))
    loaded = load_transducer(checkpoint)
    sets = [
        f"init={Path(checkpoint).resolve()}", f"data.corpus={Path(corpus_dir).resolve()}",
        f"schedule.max_steps={cfg.steps}", "schedule.max_epochs=100000",
        f"schedule.checkpoint_interval={max(1, cfg.steps // 4)}",
        "schedule.valid_interval=0", "schedule.valid_wer_utterances=0",
        "data.max_valid_utterances=20", "schedule.budget_minutes=null",
        f"optim.lr={cfg.lr}", f"optim.warmup_steps={cfg.warmup_steps}",
        f"optim.decay_steps={cfg.steps}", f"seed={cfg.seed}", f"threads={cfg.threads}",
    ]
    if cfg.method != "cohort-input":  # it trains on all data, the cohort marked by its input
        sets.append(f"data.select.speakers_file={spk_file.resolve()}")
    if cfg.method == "oversample":
        sets.append(f"data.select.oversample={cfg.oversample}")
    elif cfg.general_share is not None and cfg.method != "cohort-input":
        sets.append(f"data.select.general_share={cfg.general_share}")
    config = config_from_dict(loaded.config, sets)
    hooks: list[TrainHook] = []
    objective = None
    offsets = None
    if cfg.method in ("ewc", "l2sp"):
        fisher = load_fisher(fisher_path(checkpoint), loaded.model) if cfg.method == "ewc" \
            else None
        hooks.append(AnchorPenalty(cfg.lam, fisher))
    if cfg.method == "cohort-input":
        from torch import nn

        from fairstream.mitigation.cohort_input import CohortInputHook, CohortInputObjective
        from fairstream.training.transducer import TransducerObjective

        offsets = nn.Parameter(torch.zeros(2, loaded.cmvn.mean.shape[0]))
        objective = CohortInputObjective(TransducerObjective(), offsets,
                                         {s: 1 for s in speakers})
        hooks.append(CohortInputHook(offsets, cfg.cohort_lr))
    result = train(config, out_dir=out_dir, objective=objective, hooks=hooks,
                   progress=progress)
    if offsets is not None:
        from fairstream.mitigation.cohort_input import save_offsets

        save_offsets(out_dir / COHORT_INPUT_FILE, offsets, ["rest", "cohort"], cohort_name)
    return Path(result.averaged_checkpoint)


def mitigate(checkpoint: str | Path, corpus_dir: str | Path, cohorts_path: str | Path,
             out_dir: str | Path, cfg: MitigationConfig, *, cohort: str | None = None,
             eval_split: str = "test", zip_table: str | Path | None = None,
             embeddings: str | Path | None = None, eval_embeddings: str | Path | None = None,
             before_results: str | Path | None = None, n_boot: int = 1000,
             progress: bool = False,
             echo: Callable[[str], None] = logger.info) -> MitigationResult:
    """Run the steps of the module docstring; see :class:`MitigationConfig`.

    Args:
        checkpoint: the recognizer to mitigate.
        corpus_dir: its corpus (training split to fine-tune on, ``eval_split`` to measure on).
        cohorts_path: ``cohorts.json`` of an audit.
        out_dir: experiment directory.
        cfg: method and settings.
        cohort: ``METHOD=LABEL`` (default: the strongest bottom cohort).
        eval_split: the split measured before and after.
        zip_table: zip demographics (for a geodemographic cohort; default: the audit's).
        embeddings: per-speaker embeddings of the training speakers (embedding cohorts).
        eval_embeddings: the same for the evaluation speakers.
        before_results: results of ``checkpoint`` on ``eval_split`` (default: decoded here
            into ``OUT/../before_<split>.parquet`` and reused).
        n_boot: bootstrap replicates of the comparison.
    """
    from fairstream.data.corpus import load_corpus
    from fairstream.mitigation.penalty import fisher_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cohorts = load_cohorts(cohorts_path)
    chosen = choose_cohort(cohorts, cohort)
    corpus = load_corpus(corpus_dir)
    ztab = _read_zip_table(zip_table, chosen)
    speakers = cohort_training_speakers(chosen, corpus.speakers, zip_table=ztab,
                                        embeddings=_read_embeddings(embeddings))
    echo(f"cohort {chosen.name} (found by {chosen.method}, corrected p = "
         f"{chosen.evidence.get('p_value')}): {len(speakers)} training speakers")
    _claim(out, {"cohort": chosen.name, "method": cfg.method, "config": asdict(cfg),
                 "checkpoint": str(Path(checkpoint).resolve()), "eval_split": eval_split})
    if cfg.method == "ewc":
        echo(f"Fisher information: {fisher_path(checkpoint)}")
        ensure_fisher(checkpoint, corpus_dir, cfg.fisher_batches, progress=progress)
    echo(f"{cfg.method}: {cfg.steps} steps from {checkpoint} -> {out}")
    new_ckpt = fine_tune(checkpoint, corpus_dir, speakers, cfg, out, progress=progress,
                         cohort_name=chosen.name)
    before_path = Path(before_results) if before_results else \
        out.parent / f"before_{eval_split}.parquet"
    echo(f"decoding {eval_split} before and after (greedy)")
    before = decode_split(checkpoint, corpus_dir, eval_split, before_path, progress=progress)
    after_path = out / f"results_{eval_split}.parquet"
    eval_speakers = corpus.speakers[corpus.speakers["split"].astype(str) == eval_split]
    eval_emb = _read_embeddings(eval_embeddings)
    if cfg.method == "cohort-input":  # the cohort from the test speakers' metadata
        inside = assign_cohort(chosen, eval_speakers.reset_index(drop=True), zip_table=ztab,
                               embeddings=eval_emb)
        members = set(eval_speakers.reset_index(drop=True).loc[inside, "speaker_id"].astype(str))
        after = decode_split(new_ckpt, corpus_dir, eval_split, after_path,
                             cohort_input=(out / COHORT_INPUT_FILE, members),
                             progress=progress)
    else:
        after = decode_split(new_ckpt, corpus_dir, eval_split, after_path, progress=progress)
    labels = cohort_labels(cohorts, chosen.method, eval_speakers, zip_table=ztab,
                           embeddings=eval_emb)
    comparison = compare_results(before, after, labels, bottom=chosen.label, n_boot=n_boot)
    comparison.write(out)
    atomic_write_text(out / RUN_FILE, json.dumps({
        "cohort": chosen.name, "method": cfg.method, "config": asdict(cfg),
        "checkpoint": str(Path(checkpoint).resolve()), "eval_split": eval_split,
        "train_speakers": len(speakers), "new_checkpoint": str(new_ckpt),
        "before": str(before_path), "after": str(after_path), "done": True,
    }, indent=1))
    return MitigationResult(cohort=chosen, train_speakers=speakers, checkpoint=new_ckpt,
                            before=before_path, after=after_path, comparison=comparison,
                            out_dir=out)


def _claim(out: Path, run: dict[str, Any]) -> None:
    """Record what ``out`` is for (``mitigation.json``), or refuse a directory that holds a
    run with other settings: resuming it would finish that run, not this one."""
    path = out / RUN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        diff = sorted(k for k in run if old.get(k) != run[k])
        if diff:
            raise InputDataError(
                f"{out} holds a mitigation run with other settings ({', '.join(diff)} "
                f"differ); choose another --out, or delete it to start over")
        return
    atomic_write_text(path, json.dumps({**run, "done": False}, indent=1))


def summary_row(result: MitigationResult) -> dict[str, Any]:
    """The comparison's headline numbers (the ``benchmarks/mitigation.py`` fields)."""
    s = result.comparison.summary
    return {"cohort": result.cohort.name, "bottom_wer_before": s.get("bottom_before"),
            "bottom_wer_after": s.get("bottom_after"), "bottom_diff": s.get("bottom_diff"),
            "bottom_diff_ci": s.get("bottom_diff_ci"), "overall_before": s["overall_before"],
            "overall_after": s["overall_after"], "overall_diff": s["overall_diff"],
            "overall_diff_ci": s["overall_diff_ci"], "variance_before": s.get("variance_before"),
            "variance_after": s.get("variance_after"),
            "variance_diff_ci": s.get("variance_diff_ci"), "gap_before": s.get("gap_pct_before"),
            "gap_after": s.get("gap_pct_after"), "forgetting_max": s.get("forgetting_max"),
            "forgetting_max_ci": s.get("forgetting_max_ci"),
            "forgetting_cohort": s.get("forgetting_cohort")}
