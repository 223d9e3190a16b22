"""Transducer training on a corpus directory, through the one loop of :mod:`.loop`.

:func:`train` opens the corpus, prepares the tokenizer and features, builds the model and the
bucketing data loaders, and calls :func:`fairstream.training.loop.fit` with
:class:`TransducerObjective` (plus :class:`GreedyWerHook` when a validation WER is asked for).
With ``init`` set it starts from a trained checkpoint instead (fine-tuning); with
``data.select`` it trains on, or oversamples, chosen speakers
(:mod:`fairstream.training.selection`). ``data.max_duration`` is the global batch: each of the
processes takes an equal share (:func:`rank_batch_duration`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from lhotse import CutSet
from torch import Tensor, nn

from fairstream.checkpoint import config_differences
from fairstream.data.corpus import Corpus, load_corpus
from fairstream.errors import CheckpointError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.tokenizer import Tokenizer
from fairstream.training.config import TokenizerConfig, TrainConfig
from fairstream.training.data import Batch, BatchLoader, per_rank_duration
from fairstream.training.loop import (
    DistInfo,
    LossOutput,
    Objective,
    TrainHook,
    TrainResult,
    fit,
    init_distributed,
    unwrap,
)

if TYPE_CHECKING:
    from fairstream.inference import LoadedModel

__all__ = [
    "GreedyWerHook", "LoaderSource", "TransducerObjective", "rank_batch_duration", "train",
]

logger = logging.getLogger(__name__)


class TransducerObjective:
    """RNN-T loss (plus the model's auxiliary terms) of a :class:`~.data.Batch`.

    The model computes its own loss (``Transducer.forward``); the options that shape it
    (``ctc_weight``, ``fastemit_lambda``) are part of the model config.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        out = model(batch.features, batch.feature_lens, batch.tokens, batch.token_lens)
        metrics = {"rnnt_loss": float(out.rnnt_loss)}
        if unwrap(model).ctc_head is not None:
            metrics["ctc_loss"] = float(out.ctc_loss)
        # the encoder's auxiliary losses (already in out.loss) and statistics, logged
        metrics.update({f"aux_{k}": float(v) for k, v in out.aux_losses.items()})
        metrics.update({f"encoder_{k}": v for k, v in out.stats.items()})
        return LossOutput(out.loss, int(out.num_utterances), metrics)


class LoaderSource:
    """:class:`DataSource` over a :class:`~fairstream.training.data.BatchLoader`.

    Skipped batches are replayed by the sampler only (no audio or features are loaded).
    """

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader

    def batches(self, epoch: int, *, skip: int = 0) -> Iterable[Batch]:
        state = dict(self.loader.state_dict())
        state.update(epoch=epoch, batches_done=skip)
        self.loader.load_state_dict(state)
        return iter(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        """Epoch 0 from its start (for validation sets)."""
        return iter(self.batches(0))


class GreedyWerHook(TrainHook):
    """Adds ``valid_wer`` (greedy search, Σerrors/Σwords over all ranks) to every validation.

    Args:
        batches: re-iterable validation batches of this process.
        tokenizer: turns token ids back into text.
    """

    def __init__(self, batches: Iterable[Batch], tokenizer: Tokenizer) -> None:
        self.batches = batches
        self.tokenizer = tokenizer

    def on_validation(self, model: nn.Module, step: int) -> Mapping[str, float]:
        from fairstream.decoding.greedy import greedy_search
        from fairstream.metrics.wer import score_pairs

        errors = words = 0
        for batch in self.batches:
            enc, enc_lens = model.encode(batch.features, batch.feature_lens)  # type: ignore[operator]
            hyps = greedy_search(model, enc, enc_lens)  # type: ignore[arg-type]
            texts = [self.tokenizer.decode(list(h.tokens)) for h in hyps]
            for c in score_pairs(batch.texts, texts):
                errors += c.errors
                words += c.ref_words
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([errors, words], dtype=torch.float64)
            dist.all_reduce(t)
            errors, words = int(t[0]), int(t[1])
        return {"valid_wer": errors / words if words else float("nan")}


def _spread_subset(cuts: CutSet, n: int | None) -> CutSet:
    """At most ``n`` cuts spread evenly over the (id-sorted) cut set, for a stable subset."""
    items = sorted(cuts, key=lambda c: c.id)
    if n is None or n >= len(items):
        return CutSet.from_cuts(items)
    step = len(items) / n
    return CutSet.from_cuts(items[int(k * step)] for k in range(n))


def _tokenizer_files(directory: Path) -> dict[str, Tensor]:
    return {
        p.name: torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.startswith("tokenizer.")
    }


def _prepare_tokenizer(config: TrainConfig, corpus: Corpus, out_dir: Path, d: DistInfo,
                       resume: bool, reuse: Tokenizer | None) -> Tokenizer:
    """Train (rank 0), copy ``reuse`` into, or reuse ``OUT/tokenizer``; every rank returns the
    loaded tokenizer."""
    tok_dir = out_dir / "tokenizer"
    want = config.tokenizer
    if d.is_main:
        existing = None
        if resume and (tok_dir / "tokenizer.json").exists():
            existing = Tokenizer.load(tok_dir)
            if reuse is not None:
                differs = (existing.model_type != reuse.model_type
                           or existing.vocab_size != reuse.vocab_size)
            else:
                differs = existing.model_type != want.kind or (
                    want.kind != "char" and existing.vocab_size != want.vocab_size
                )
            if differs:
                raise CheckpointError(
                    f"{tok_dir} holds a {existing.model_type} tokenizer of "
                    f"{existing.vocab_size} symbols, the config asks for {want.kind} with "
                    f"vocab_size {want.vocab_size}; use another output directory or --no-resume"
                )
        if existing is None and reuse is not None:
            reuse.save(tok_dir)
        elif existing is None:
            texts = [s.text for c in corpus.cuts(config.data.train_split) for s in c.supervisions
                     if s.text]
            Tokenizer.train(texts, tok_dir, vocab_size=want.vocab_size, model_type=want.kind)
    if d.world_size > 1:
        dist.barrier()
    return Tokenizer.load(tok_dir)


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    objective: Objective | None = None,
    hooks: Sequence[TrainHook] = (),
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a transducer on a corpus directory as ``config`` describes.

    Steps: join the DDP group if launched by ``torchrun``; open ``config.data.corpus``; train
    (or reuse) the tokenizer in ``OUT/tokenizer`` and set ``model.vocab_size`` from it;
    build the model (seeded); pre-compute features once if ``data.feature_cache`` is set
    (a relative path is taken inside the corpus directory); build the bucketing data loaders
    with SpecAugment; then :func:`fit`. Checkpoints also store the tokenizer files and the
    CMVN statistics, so a checkpoint alone is enough to decode.

    Starting from a checkpoint (``config.init``, ``fairstream train --init CKPT``): its
    tokenizer is copied to ``OUT/tokenizer`` (and its ``tokenizer`` config section replaces the
    recipe's), its CMVN statistics replace the corpus's, and its weights are loaded into the
    model the recipe describes (:func:`~fairstream.training.warm_start.load_state_dict`:
    parameters the checkpoint lacks keep their fresh initialization and are logged). The
    optimizer, the step counter and the learning-rate schedule start anew. A run that finds
    its own checkpoints in ``OUT`` resumes from them instead.

    Training-data selection (``config.data.select``) is applied to the training split only;
    see :func:`~fairstream.training.selection.select_cuts`.

    Args:
        config: the resolved :class:`~fairstream.training.config.TrainConfig`.
        out_dir: experiment directory.
        objective: defaults to :class:`TransducerObjective`.
        hooks: mitigation hooks (see :class:`TrainHook`).
        resume: continue from ``OUT/checkpoints`` when possible.
        progress: progress bars.

    Raises:
        InputDataError: no corpus directory in the config, or a bad ``data.select``.
        CheckpointError: the ``init`` checkpoint is not a transducer checkpoint or does not fit
            the model.
        CorpusError, TrainingError: see :func:`fit`.
    """
    corpus_dir = config.data.corpus
    if not corpus_dir:
        raise InputDataError("config data.corpus is not set (pass --corpus DIR)")
    d = init_distributed()
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, load_corpus(corpus_dir), Path(out_dir), d, objective, hooks,
                      resume, progress)
    finally:
        torch.set_num_threads(threads_before)
        if d.created and dist.is_initialized():
            dist.destroy_process_group()


def _with_init_tokenizer(config: TrainConfig, init: LoadedModel) -> TrainConfig:
    """``config`` with the tokenizer section of the checkpoint it starts from."""
    from dataclasses import replace

    from fairstream.config_parse import from_dict

    stored = init.config.get("tokenizer")
    if stored is None:
        return config
    try:
        section = from_dict(TokenizerConfig, stored, path="tokenizer")
    except InputDataError as exc:
        raise CheckpointError(f"{init.path}: stored tokenizer config is unusable: {exc}") from exc
    if section != config.tokenizer:
        logger.warning("init: the tokenizer of %s is reused (%s), not the recipe's (%s)",
                       init.path, section, config.tokenizer)
    return replace(config, tokenizer=section)


def _cached_features(config: TrainConfig, corpus: Corpus, train_cuts: CutSet,
                     valid_cuts: CutSet, d: DistInfo, progress: bool) -> tuple[CutSet, CutSet]:
    """The cuts with their features computed once into ``data.feature_cache``."""
    from fairstream.training.data import precompute_features

    assert config.data.feature_cache is not None
    cache = Path(config.data.feature_cache)
    if not cache.is_absolute():
        cache = corpus.root / cache
    jobs = max(1, min(os.cpu_count() or 1, 8))
    # rank 0 computes the arrays once (in parallel); the others then find them
    for rank_turn in ((0, 1) if d.world_size > 1 else (0,)):
        if (rank_turn == 0) == d.is_main:
            train_cuts = precompute_features(train_cuts, cache, num_jobs=jobs,
                                             progress=progress and d.is_main)
            valid_cuts = precompute_features(valid_cuts, cache, num_jobs=jobs,
                                             progress=progress and d.is_main)
        if d.world_size > 1:
            dist.barrier()
    return train_cuts, valid_cuts


def rank_batch_duration(config: TrainConfig, train_cuts: CutSet, world_size: int) -> float:
    """Seconds of training audio per batch on each of ``world_size`` processes.

    ``data.max_duration`` is the global batch of one optimizer step, summed over the
    processes (:func:`~fairstream.training.data.per_rank_duration`), so a run trains the same
    batches per step whatever the number of processes.

    Raises:
        InputDataError: the longest training cut does not fit in one process's batch (the
            message names the global and the per-process value).
    """
    total = config.data.max_duration
    batch_s = per_rank_duration(total, world_size)
    longest = max((c.duration for c in train_cuts), default=0.0)
    if longest > batch_s:
        raise InputDataError(
            f"data.max_duration={total:g} s over {world_size} process(es) gives "
            f"{batch_s:g} s per process, shorter than the longest training cut "
            f"({longest:.2f} s)"
        )
    return batch_s


def _train(config: TrainConfig, corpus: Corpus, out_dir: Path, d: DistInfo,
           objective: Objective | None, hooks: Sequence[TrainHook], resume: bool,
           progress: bool) -> TrainResult:
    from dataclasses import replace

    from fairstream.inference import load_transducer
    from fairstream.models.factory import build_model
    from fairstream.training.config import config_to_dict, save_config
    from fairstream.training.data import make_dataloader
    from fairstream.training.selection import select_cuts
    from fairstream.training.warm_start import load_state_dict

    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    init = load_transducer(config.init) if config.init else None
    if init is not None:
        config = _with_init_tokenizer(config, init)
    tokenizer = _prepare_tokenizer(config, corpus, out_dir, d, resume,
                                   init.tokenizer if init is not None else None)
    config = replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))
    run_config = config_to_dict(config)
    if d.is_main:
        save_config(config, out_dir / "config.yaml")
    if init is not None:
        cmvn = init.cmvn
    else:
        mean, std = corpus.cmvn
        cmvn = Cmvn(mean=mean, std=std)

    train_cuts = corpus.cuts(config.data.train_split)
    if config.data.select.active:
        train_cuts = select_cuts(train_cuts, config.data.select, corpus.speakers)
    valid_cuts = _spread_subset(corpus.cuts(config.data.valid_split),
                                config.data.max_valid_utterances)
    if config.data.feature_cache:
        train_cuts, valid_cuts = _cached_features(config, corpus, train_cuts, valid_cuts, d,
                                                  progress)

    batch_s = rank_batch_duration(config, train_cuts, d.world_size)
    common: dict[str, Any] = {  # Any: keyword arguments of several types for make_dataloader
        "tokenizer": tokenizer, "cmvn": cmvn, "seed": config.seed, "rank": d.rank,
        "world_size": d.world_size,  # cached cuts carry their features manifest
    }
    train_loader = make_dataloader(
        train_cuts, max_duration=batch_s, shuffle=True,
        spec_augment=config.spec_augment, num_workers=config.data.num_workers, **common,
    )
    valid_max = max(batch_s, max((c.duration for c in valid_cuts), default=1.0))
    valid_data = LoaderSource(make_dataloader(
        valid_cuts, max_duration=valid_max, shuffle=False, spec_augment=None, **common,
    )) if len(valid_cuts) else None
    all_hooks = list(hooks)
    n_wer = config.schedule.valid_wer_utterances
    if n_wer > 0 and len(valid_cuts):
        wer_cuts = _spread_subset(valid_cuts, n_wer)
        all_hooks.append(GreedyWerHook(LoaderSource(make_dataloader(
            wer_cuts, max_duration=valid_max, shuffle=False, spec_augment=None, **common,
        )), tokenizer))

    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if init is not None:
        for key, old, new in config_differences(init.config.get("model", {}),
                                                run_config["model"]):
            logger.info("init: model.%s is %r in %s, %r here", key, old, init.path, new)
        report = load_state_dict(model, init.model.state_dict(), source=init.path)
        logger.info("init from %s: %s", init.path, report)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2f M parameters, vocabulary %d", n_params / 1e6, tokenizer.vocab_size)
    extra = {
        "kind": "transducer",  # stored as the checkpoint's kind
        "tokenizer_files": _tokenizer_files(out_dir / "tokenizer"),
        "cmvn_mean": torch.from_numpy(cmvn.mean.copy()),
        "cmvn_std": torch.from_numpy(cmvn.std.copy()),
        "num_parameters": n_params,
    }
    return fit(
        model=model, objective=objective or TransducerObjective(),
        train_data=LoaderSource(train_loader), valid_data=valid_data,
        optim=config.optim, schedule=config.schedule, out_dir=out_dir,
        run_config=run_config, hooks=all_hooks, extra=extra, resume=resume,
        progress=progress, dist_info=d,
    )
