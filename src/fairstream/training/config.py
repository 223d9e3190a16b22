"""Training configuration: nested frozen dataclasses, loaded from YAML with strict checking.

YAML is storage only. :func:`load_config` reads a file with ``yaml.safe_load``, applies
``a.b=c`` overrides, and builds the dataclasses; an unknown key anywhere is an
:class:`~fairstream.errors.InputDataError` naming its full key path (``optim.lrr``), and every
value is checked (and, where unambiguous, coerced: ``"1e-3"`` for a float) against its field's
type. :func:`config_to_dict` goes back to plain JSON/YAML-friendly data; the resolved config is
stored in every checkpoint and results file.

The generic machinery (:func:`from_dict`, :func:`to_dict`, :func:`apply_overrides`) lives in
:mod:`fairstream.config_parse` (re-exported here) and works for any nested dataclass, so other
set-ups (the model config, a speaker-embedding model) define their own configs and reuse it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fairstream._io import atomic_write_text
from fairstream.config_parse import (
    apply_overrides,
    from_dict,
    load_yaml_file,
    naming_file,
    to_dict,
)
from fairstream.decoding.search import SearchConfig
from fairstream.models.factory import ModelConfig, model_config_to_dict
from fairstream.training.data import SpecAugmentConfig
from fairstream.training.selection import SelectConfig

__all__ = [
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TokenizerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_to_json",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer to train on the training transcripts.

    Attributes:
        kind: ``char`` (one token per character), ``bpe`` or ``unigram`` (SentencePiece).
        vocab_size: vocabulary size including the blank (id 0); ignored by ``char``, whose
            vocabulary is the set of characters in the training text.
    """

    kind: Literal["char", "bpe", "unigram"] = "bpe"
    vocab_size: int = 256


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched.

    Attributes:
        corpus: corpus directory (``fairstream corpus build`` layout); the CLI's ``--corpus``
            sets it.
        train_split: split used for training.
        valid_split: split used for the validation loss (and the optional greedy WER).
        max_duration: seconds of audio per optimizer step, summed over all processes (the
            global batch); under DDP each of ``world_size`` processes takes
            ``max_duration / world_size`` seconds, so the batch, and what a number of
            steps trains, does not depend on the number of processes.
        max_valid_utterances: cap on validation utterances (``None``: the whole split).
        num_workers: data-loader worker processes.
        feature_cache: directory for pre-computed fbank features (``None``: compute on the fly).
        select: train on, or oversample, chosen speakers or cuts of the training split
            (:class:`~fairstream.training.selection.SelectConfig`; default: every cut once).
    """

    corpus: str | None = None
    train_split: str = "train"
    valid_split: str = "dev"
    max_duration: float = 200.0
    max_valid_utterances: int | None = 400
    num_workers: int = 0
    feature_cache: str | None = None
    select: SelectConfig = field(default_factory=SelectConfig)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a warm-up and a learning-rate schedule.

    The learning rate at optimizer step ``s`` (1-based) is ``lr * warmup(s) * decay(s)``:
    warm-up rises linearly from ``1/warmup_steps`` to 1 over ``warmup_steps``; the decay after
    warm-up is one of

    * ``constant``: 1;
    * ``noam``: ``sqrt(warmup_steps / s)`` (inverse square root);
    * ``cosine``: half a cosine from 1 to ``min_lr_ratio`` over ``decay_steps``, then flat;
    * ``exponential``: halves every ``decay_steps``, floored at ``min_lr_ratio``.

    Attributes:
        grad_clip: clip the global gradient norm to this value (``0`` disables clipping).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    warmup_steps: int = 500
    schedule: Literal["constant", "noam", "cosine", "exponential"] = "cosine"
    decay_steps: int = 10_000
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ScheduleConfig:
    """How long to train and how often to log, validate and checkpoint.

    Training stops at whichever comes first: ``max_epochs``, ``max_steps`` or the wall-clock
    ``budget_minutes`` (summed over resumed runs). Intervals are in optimizer steps; ``0``
    disables the periodic action (validation and a checkpoint still happen at every epoch end).
    Recipes stop at ``max_steps`` so that any machine trains the same model; ``budget_minutes``
    is then only a safety cap, and a run it stops early says so (a warning in the log, and
    ``stop_reason: budget`` in ``metrics.jsonl`` and in the progress of ``final.pt``).

    Attributes:
        max_steps: optimizer steps to train (``None``: no step limit).
        budget_minutes: wall-clock limit on training (``None``: none).
        keep_last_n: periodic checkpoints kept on disk (at least ``average_last_n`` are kept).
        average_last_n: checkpoints averaged into ``averaged.pt`` at the end (1: a copy of the
            last model).
        max_consecutive_nonfinite: stop with :class:`~fairstream.errors.TrainingError` after
            this many batches in a row with a NaN/inf loss or gradient.
        valid_wer_utterances: greedy-decode this many validation utterances at every
            validation to log a WER (``0``: loss only).
    """

    max_epochs: int = 30
    max_steps: int | None = None
    budget_minutes: float | None = None
    log_interval: int = 10
    valid_interval: int = 0
    checkpoint_interval: int = 200
    keep_last_n: int = 3
    average_last_n: int = 3
    max_consecutive_nonfinite: int = 10
    valid_wer_utterances: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved (resolved) in every checkpoint.

    ``model.vocab_size`` is set from the trained tokenizer when the run starts. ``threads``
    sets ``torch.set_num_threads`` for the run (``None``: PyTorch's default, one per core;
    1 is much faster when other processes compete for the cores). The
    transducer's objective options (``model.ctc_weight``, ``model.fastemit_lambda``) belong to
    the model config because they decide which heads the model has. ``init`` names a
    checkpoint to start from: its weights, tokenizer and CMVN statistics are reused (see
    :func:`fairstream.training.transducer.train`).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    decode: SearchConfig = field(default_factory=SearchConfig)  # the recipe's search
    seed: int = 0
    threads: int | None = None
    init: str | None = None


# --------------------------------------------------------------------------- TrainConfig API


def config_from_dict(
    data: Mapping[str, object] | None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Build a :class:`TrainConfig` from plain data plus ``a.b=c`` overrides."""
    merged = apply_overrides(data or {}, overrides)
    return from_dict(TrainConfig, merged)  # the model checks itself (encoder options, ...)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply overrides and build the :class:`TrainConfig`.

    Args:
        path: YAML file (``None``: start from the defaults).
        overrides: ``key.path=value`` strings, applied in order after the file.

    Raises:
        InputDataError: unreadable, non-UTF-8 or invalid YAML, a key repeated in a mapping,
            an unknown key or a bad value (NaN and infinity included); the message names the
            file and the line or key path.
    """
    data: Mapping[str, object] = {}
    if path is not None:
        path = Path(path)
        data = load_yaml_file(path)
    with naming_file(path):
        return config_from_dict(data, overrides)


def config_to_dict(config: object) -> dict[str, Any]:  # Any: plain JSON data
    """Plain-data view of a (nested dataclass) config, suitable for JSON and YAML."""
    out = to_dict(config)
    assert isinstance(out, dict)
    if isinstance(config, TrainConfig):  # store the encoder options resolved (defaults filled)
        out["model"] = to_dict(model_config_to_dict(config.model))
    return out


def config_to_json(config: object) -> str:
    """Canonical JSON of a config (sorted keys), as stored in checkpoints and results files."""
    return json.dumps(config_to_dict(config), sort_keys=True)


def save_config(config: object, path: str | Path) -> Path:
    """Write ``config`` as YAML, atomically."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
