"""Train a speaker-embedding extractor (baseline or ARW) through the one training loop.

:func:`train_speaker_model` builds the model, the speaker-balanced data source, the objective
and — with ARW — the adversary hook, then calls :func:`fairstream.training.loop.fit`. The
baseline and ARW runs differ only in ``config.arw``: same model, data, optimizer and schedule;
the group-balancing baselines only in ``config.data.balance`` (``"sampling"``: group-balanced
speaker sampling, ``"weights"``: inverse group-frequency loss weights, groups = the training
speakers' ``config.data.balance_by`` metadata, the accent by default).

Checkpoints are the loop's (``OUT/final.pt``, ``OUT/averaged.pt``): the resolved
:class:`SvTrainConfig` under ``config`` and the CMVN and training-speaker list under ``extra``.
:func:`load_extractor` rebuilds the extractor from any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fairstream.checkpoint import load_checkpoint
from fairstream.config_parse import load_yaml_file, naming_file
from fairstream.data.corpus import load_corpus
from fairstream.errors import CheckpointError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.losses.arw import AdversarialReweighting, ArwConfig
from fairstream.models.speaker import EcapaTdnn, SpeakerModelConfig
from fairstream.sv.data import SpeakerBatches, SvDataConfig
from fairstream.sv.objective import ArwHook, SpeakerObjective, SpeakerTrainingModel, SvLossConfig
from fairstream.training.config import (
    OptimConfig,
    ScheduleConfig,
    apply_overrides,
    from_dict,
    to_dict,
)
from fairstream.training.loop import TrainHook, TrainResult, fit, init_distributed

__all__ = [
    "LoadedExtractor",
    "SvTrainConfig",
    "load_extractor",
    "load_sv_config",
    "method_name",
    "speaker_groups",
    "train_speaker_model",
]

logger = logging.getLogger(__name__)


def _default_optim() -> OptimConfig:
    return OptimConfig(lr=2e-3, weight_decay=2e-5, warmup_steps=50, schedule="cosine",
                       decay_steps=400)


def _default_schedule() -> ScheduleConfig:
    return ScheduleConfig(max_epochs=100, max_steps=400, log_interval=10, checkpoint_interval=100,
                          keep_last_n=2, average_last_n=1)


@dataclass(frozen=True)
class SvTrainConfig:
    """Everything a speaker-embedding run needs; stored (resolved) in every checkpoint.

    ``arw`` set (a mapping, even empty, in YAML) turns adversarial reweighting on; ``None`` is
    the baseline.
    """

    model: SpeakerModelConfig = field(default_factory=SpeakerModelConfig)
    data: SvDataConfig = field(default_factory=SvDataConfig)
    loss: SvLossConfig = field(default_factory=SvLossConfig)
    optim: OptimConfig = field(default_factory=_default_optim)
    schedule: ScheduleConfig = field(default_factory=_default_schedule)
    arw: ArwConfig | None = None
    seed: int = 0


def load_sv_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, arw: bool | None = None
) -> SvTrainConfig:
    """Read an optional YAML file, apply ``a.b=c`` overrides, check every key and type.

    ``arw=True`` turns ARW on (default settings unless the file or overrides give some),
    ``False`` turns it off, ``None`` keeps what the file and overrides say.

    Raises:
        InputDataError: unreadable, non-UTF-8 or invalid YAML (see
            :func:`fairstream.config_parse.load_yaml_file`), unknown key or bad value (names
            the key path).
    """
    data: Any = {}  # Any: parsed YAML, checked key by key below
    if path is not None:
        data = load_yaml_file(path, "SV config")
    merged = apply_overrides(data, overrides)
    if arw is True and merged.get("arw") is None:
        merged["arw"] = {}
    elif arw is False:
        merged["arw"] = None
    with naming_file(path):
        return from_dict(SvTrainConfig, merged)


def method_name(config: SvTrainConfig) -> str:
    """``baseline``, ``balanced_sampling``, ``inverse_weights`` or ``arw`` (``+``-joined when
    combined)."""
    parts = {"sampling": ["balanced_sampling"], "weights": ["inverse_weights"], "none": []}[
        config.data.balance]
    if config.arw is not None:
        parts.append("arw")
    return "+".join(parts) or "baseline"


def speaker_groups(speakers: pd.DataFrame, column: str) -> dict[str, str]:
    """speaker id -> value of ``column`` of the corpus speaker table.

    Raises:
        InputDataError: the table has no such column.
    """
    if column not in speakers.columns or "speaker_id" not in speakers.columns:
        raise InputDataError(f"speakers.csv has no {column!r} column to balance by "
                             f"(has {list(speakers.columns)})")
    rows = speakers.dropna(subset=[column])
    return dict(zip(rows["speaker_id"].astype(str), rows[column].astype(str)))


def train_speaker_model(
    config: SvTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    extra_hooks: Sequence[TrainHook] = (),
) -> TrainResult:
    """Train the extractor on the corpus' training speakers.

    Args:
        config: the run; ``config.data.corpus`` must name a corpus directory.
        out_dir: output directory (the loop's layout).
        resume: continue from the newest checkpoint in ``out_dir``.
        progress: progress bars.
        extra_hooks: more loop hooks (after the ARW hook).
    """
    if config.data.corpus is None:
        raise InputDataError("data.corpus is not set: pass --corpus DIR")
    torch.manual_seed(config.seed)
    corpus = load_corpus(config.data.corpus)
    mean, std = corpus.cmvn
    cmvn = Cmvn(mean, std)
    dist_info = init_distributed()
    groups = None
    if config.data.balance != "none":
        groups = speaker_groups(corpus.speakers, config.data.balance_by)
    data = SpeakerBatches(corpus.cuts(config.data.train_split), cmvn, config.data, seed=config.seed,
                          progress=progress and dist_info.is_main, rank=dist_info.rank,
                          world_size=dist_info.world_size, groups=groups)
    extractor = EcapaTdnn(config.model)
    model = SpeakerTrainingModel(extractor, data.num_speakers, config.loss)
    arw = None
    if config.arw is not None:
        arw = AdversarialReweighting(config.model.embedding_dim, config.arw)
    objective = SpeakerObjective(config.loss, arw)
    hooks: list[TrainHook] = [ArwHook(objective)] if arw is not None else []
    hooks.extend(extra_hooks)
    logger.info("training %s extractor (%d parameters) on %d speakers", method_name(config),
                sum(p.numel() for p in extractor.parameters()),
                data.num_speakers)
    return fit(
        model=model,
        objective=objective,
        train_data=data,
        optim=config.optim,
        schedule=config.schedule,
        out_dir=out_dir,
        run_config=to_dict(config),
        hooks=hooks,
        extra={
            "kind": "speaker",  # stored as the checkpoint's kind
            "cmvn_mean": torch.from_numpy(np.asarray(mean, dtype=np.float32)),
            "cmvn_std": torch.from_numpy(np.asarray(std, dtype=np.float32)),
            "speakers": list(data.speakers),
        },
        resume=resume,
        progress=progress,
        dist_info=dist_info,
    )


@dataclass(frozen=True)
class LoadedExtractor:
    """An extractor ready to embed: the network (eval mode), its CMVN and its training config."""

    model: EcapaTdnn
    cmvn: Cmvn
    config: SvTrainConfig
    checkpoint: Path


def load_extractor(path: str | Path) -> LoadedExtractor:
    """Rebuild the extractor from a speaker checkpoint (``final.pt``, ``averaged.pt``, ...).

    Raises:
        CheckpointError: the file is not a speaker-embedding checkpoint.
    """
    ck = load_checkpoint(path)
    if ck.kind != "speaker":
        raise CheckpointError(f"{ck.path} is not a speaker-embedding checkpoint "
                              f"(its kind is {ck.kind!r}, not 'speaker')")
    cfg_data = dict(ck.config)
    cfg_data.pop("kind", None)  # where checkpoints written before the kind field said it
    try:
        config = from_dict(SvTrainConfig, cfg_data)
        cmvn = Cmvn(ck.extra["cmvn_mean"].numpy(), ck.extra["cmvn_std"].numpy())
    except (InputDataError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{ck.path}: unreadable speaker config or CMVN: {exc}") from exc
    model = EcapaTdnn(config.model)
    prefix = "extractor."
    state = {k[len(prefix):]: v for k, v in ck.model.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ck.path}: extractor weights do not match its config: {exc}") from exc
    model.eval()
    return LoadedExtractor(model, cmvn, config, ck.path)
