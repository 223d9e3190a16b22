"""Training configuration: nested frozen dataclasses, loaded from YAML with strict checking.

YAML is storage only. :func:`load_config` reads a file with ``yaml.safe_load``, applies
``a.b=c`` overrides, and builds the dataclasses; an unknown key anywhere is an
:class:`~fairstream.errors.InputDataError` naming its full key path (``optim.lrr``), and every
value is checked (and, where unambiguous, coerced: ``"1e-3"`` for a float) against its field's
type. :func:`config_to_dict` goes back to plain JSON/YAML-friendly data; the resolved config is
stored in every checkpoint and results file.

The generic machinery (:func:`from_dict`, :func:`to_dict`, :func:`apply_overrides`) works for
any nested dataclass, so other training set-ups (for example a speaker-embedding model) can
define their own top-level config and reuse it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from fairstream.errors import InputDataError
from fairstream.models.factory import ModelConfig, model_config_from_dict, model_config_to_dict
from fairstream.training.data import SpecAugmentConfig

__all__ = [
    "DataConfig",
    "DecodeConfig",
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

T = TypeVar("T")


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
        max_duration: seconds of audio per batch (per process under DDP).
        max_valid_utterances: cap on validation utterances (``None``: the whole split).
        num_workers: data-loader worker processes.
        feature_cache: directory for pre-computed fbank features (``None``: compute on the fly).
    """

    corpus: str | None = None
    train_split: str = "train"
    valid_split: str = "dev"
    max_duration: float = 200.0
    max_valid_utterances: int | None = 400
    num_workers: int = 0
    feature_cache: str | None = None


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

    Attributes:
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
class DecodeConfig:
    """How models of this recipe are decoded by default (``make demo``,
    ``fairstream decode --method recipe``). Training does not use it; it travels with the
    checkpoint so a model and its recommended search stay together.

    Attributes:
        method: ``greedy`` or ``beam`` (frame-synchronous beam search).
        beam: beam width.
        max_symbols_per_frame: tokens per encoder frame in beam search (the demo's greedy
            baseline always allows 3, the streaming recognizer's default).
        lm_order: order of the token n-gram LM fitted on the training transcripts for
            shallow fusion (``0``: no LM). Only with ``beam``.
        lm_weight: weight of the LM log-probability.
        token_bonus: score added per emitted token (offsets the LM's bias to short outputs).
    """

    method: Literal["greedy", "beam"] = "greedy"
    beam: int = 4
    max_symbols_per_frame: int = 3
    lm_order: int = 0
    lm_weight: float = 0.0
    token_bonus: float = 0.0

    def __post_init__(self) -> None:
        if self.beam < 1 or self.max_symbols_per_frame < 1:
            raise InputDataError(
                f"decode.beam and decode.max_symbols_per_frame must be >= 1, got {self.beam} "
                f"and {self.max_symbols_per_frame}"
            )
        if self.lm_order == 1 or self.lm_order < 0:
            raise InputDataError(f"decode.lm_order must be 0 (no LM) or >= 2, got {self.lm_order}")
        if self.lm_weight < 0:
            raise InputDataError(f"decode.lm_weight must be >= 0, got {self.lm_weight}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved (resolved) in every checkpoint.

    ``model.vocab_size`` is set from the trained tokenizer when the run starts. ``threads``
    sets ``torch.set_num_threads`` for the run (``None``: PyTorch's default, one per core;
    1 is much faster when other processes compete for the cores). The
    transducer's objective options (``model.ctc_weight``, ``model.fastemit_lambda``) belong to
    the model config because they decide which heads the model has.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    seed: int = 0
    threads: int | None = None


# --------------------------------------------------------------------------- generic machinery


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _fail(path: str, expected: Any, value: Any) -> InputDataError:
    return InputDataError(
        f"config key {path or '<root>'}: expected {_type_name(expected)}, got {value!r}"
    )


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and coerce it where unambiguous."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_union(tp):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            if type(None) in args:
                return None
            raise _fail(path, tp, value)
        dataclass_arms = [a for a in non_none if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(dataclass_arms) == 1:
            return _coerce(dataclass_arms[0], value, path)
        for arm in non_none:
            try:
                return _coerce(arm, value, path)
            except InputDataError:
                continue
        raise _fail(path, tp, value)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(a is value for a in args)):
            return value
        raise InputDataError(
            f"config key {path}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return from_dict(tp, value, path=path)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise _fail(path, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputDataError(
                f"config key {path}: expected {len(args)} values, got {len(value)} ({value!r})"
            )
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (list, Sequence):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise _fail(path, tp, value)
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, f"{path}.{k}"): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise _fail(path, tp, value)
    if tp is int:
        if isinstance(value, bool):
            raise _fail(path, tp, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise _fail(path, tp, value)
    if tp is float:
        if isinstance(value, bool):
            raise _fail(path, tp, value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _fail(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(path, tp, value)
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _fail(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _fail(path, tp, value)
    return value


def from_dict(cls: type[T], data: Any, *, path: str = "") -> T:
    """Build the dataclass ``cls`` (recursively) from plain data, checking keys and types.

    Args:
        cls: a dataclass type; nested dataclass fields are built from nested mappings.
        data: a mapping (``None`` means "all defaults").
        path: key path of ``data`` inside the whole config, used in error messages.

    Raises:
        InputDataError: an unknown key, a missing required key or a value of the wrong type;
            the message names the full key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputDataError(
            f"config key {path or '<root>'}: expected a mapping for {cls.__name__}, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputDataError(
            f"unknown config key {prefix}{unknown[0]} "
            f"(known keys of {path or '<root>'}: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if not f.init:
            continue
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputDataError(f"config key {prefix}{name} is required")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"config key {path or '<root>'}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Turn nested dataclasses into plain JSON/YAML data (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InputDataError(f"config value {obj!r} is not finite")
    return obj


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied.

    Values are parsed with ``yaml.safe_load`` (``null``, ``true``, numbers, ``[1, 2]``); a
    value that does not parse is taken as a string. Missing intermediate sections are created.

    Raises:
        InputDataError: an override without ``=`` or one that descends into a non-mapping.
    """
    out: dict[str, Any] = json.loads(json.dumps(dict(data)))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputDataError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node: dict[str, Any] = out
        for k, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise InputDataError(
                    f"override {item!r}: {'.'.join(parts[: k + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- TrainConfig API


def config_from_dict(data: Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig` from plain data plus ``a.b=c`` overrides."""
    merged = apply_overrides(data or {}, overrides)
    config = from_dict(TrainConfig, merged)
    try:  # the model's own checks: encoder options, vocabulary, ...
        model_config_from_dict(model_config_to_dict(config.model))
    except InputDataError as exc:
        raise InputDataError(f"config section model: {exc}") from exc
    return config


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply overrides and build the :class:`TrainConfig`.

    Args:
        path: YAML file (``None``: start from the defaults).
        overrides: ``key.path=value`` strings, applied in order after the file.

    Raises:
        InputDataError: unreadable/invalid YAML, an unknown key or a bad value (the message
            names the file and the key path).
    """
    data: Any = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputDataError(f"cannot read config {path}: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputDataError(f"config {path} is not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InputDataError(f"config {path} must hold a mapping at the top level")
    try:
        return config_from_dict(data, overrides)
    except InputDataError as exc:
        if path is None:
            raise
        raise InputDataError(f"{path}: {exc}") from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a (nested dataclass) config, suitable for JSON and YAML."""
    out = to_dict(config)
    assert isinstance(out, dict)
    if isinstance(config, TrainConfig):  # store the encoder options resolved (defaults filled)
        out["model"] = to_dict(model_config_to_dict(config.model))
    return out


def config_to_json(config: Any) -> str:
    """Canonical JSON of a config (sorted keys), as stored in checkpoints and results files."""
    return json.dumps(config_to_dict(config), sort_keys=True)


def save_config(config: Any, path: str | Path) -> Path:
    """Write ``config`` as YAML, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
