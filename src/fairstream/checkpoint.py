"""Checkpoints: atomic writes, safe loads, compatibility checks and averaging.

Training writes checkpoints and inference reads them, so this module belongs to neither.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python values, so that
it loads with ``torch.load(weights_only=True)`` (no arbitrary code runs on load)::

    {
      "format": "fairstream-checkpoint", "version": 1,
      "kind": "transducer" | "speaker" | None,  # what the model is (see CHECKPOINT_KINDS)
      "config": "<resolved config as JSON>",
      "model": state_dict,
      "optimizer": state_dict | None,         # training checkpoints only
      "progress": {"step": int, "epoch": int, "batch_in_epoch": int, "elapsed_s": float, ...},
      "rng": {"torch": ByteTensor, "python": tuple, "numpy": tuple} | None,
      "hooks": {hook name: state dict of that training hook},
      "extra": {...}                          # e.g. tokenizer model bytes, CMVN tensors
    }

Files are written through :func:`fairstream._io.atomic_path` (a temporary name in the same
directory, flushed to disk, then moved into place), so a process killed mid-write never leaves
a half-written checkpoint behind.

Files written before ``kind`` existed still load: a transducer's said ``extra["task"]``, a
speaker model's ``config["kind"]``; :attr:`Checkpoint.kind` reads either.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairstream._io import atomic_path
from fairstream.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KINDS",
    "Checkpoint",
    "average_checkpoints",
    "capture_rng_state",
    "check_compatible",
    "config_differences",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "fairstream-checkpoint"
CHECKPOINT_VERSION = 1
#: Values of the ``kind`` field: what model a checkpoint holds.
CHECKPOINT_KINDS = ("transducer", "speaker", "multitalker")
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: file it was read from.
        kind: what the model is (one of :data:`CHECKPOINT_KINDS`), ``None`` when the writer
            did not say (generic files, such as those of the tests).
        config: the resolved config (plain data, as saved).
        model: model ``state_dict``.
        optimizer: optimizer ``state_dict`` (``None`` in model-only files such as averages).
        progress: step counters (``step``, ``epoch``, ``batch_in_epoch``, ``elapsed_s``, ...).
        rng: random-number-generator states (see :func:`capture_rng_state`).
        hooks: state dicts of the training hooks, by hook name.
        extra: anything else stored by the writer (tokenizer bytes, CMVN, ...).
    """

    path: Path
    # Any: the resolved config as plain JSON data; each reader checks the keys it uses
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    kind: str | None = None
    # Any: the optimizer's own state layout (tensors, numbers, nested dicts)
    optimizer: dict[str, Any] | None = None
    # Any: counters and flags as the training loop stored them
    progress: dict[str, Any] = field(default_factory=dict)
    # Any: generator states of torch, Python and numpy, each of its own shape
    rng: dict[str, Any] | None = None
    # Any: each hook's own state dict
    hooks: dict[str, Any] = field(default_factory=dict)
    # Any: whatever the writer added (tokenizer bytes, CMVN, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """Optimizer steps taken when the checkpoint was written (0 if unknown)."""
        return int(self.progress.get("step", 0))


def save_checkpoint(
    path: str | Path,
    *,
    config: Mapping[str, object],
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, object] | None = None,
    progress: Mapping[str, object] | None = None,
    rng: Mapping[str, object] | None = None,
    hooks: Mapping[str, object] | None = None,
    # Any: plain data or tensors of any shape; a "kind" entry is read as the kind
    extra: Mapping[str, Any] | None = None,
    kind: str | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same directory + ``os.replace``).

    Args:
        path: destination file.
        config: resolved config as plain data (stored as canonical JSON).
        model: model ``state_dict``.
        optimizer: optimizer ``state_dict`` for resumable checkpoints.
        progress: step counters.
        rng: output of :func:`capture_rng_state`.
        hooks: state dicts of training hooks, by name.
        extra: more plain data or tensors to store. A ``"kind"`` entry is taken out and
            stored as the checkpoint's kind (so writers that hand ``extra`` through the
            training loop can say what they write).
        kind: what the model is, one of :data:`CHECKPOINT_KINDS` (default: ``extra["kind"]``).

    Returns:
        ``path``.

    Raises:
        CheckpointError: ``kind`` is not one of :data:`CHECKPOINT_KINDS`.
    """
    extra = dict(extra or {})
    stated = extra.pop("kind", None)
    kind = kind if kind is not None else stated
    if kind is not None and kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; one of {CHECKPOINT_KINDS}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "config": json.dumps(config, sort_keys=True),
        "model": {k: v.detach().cpu() for k, v in model.items()},
        "optimizer": optimizer,
        "progress": dict(progress or {}),
        "rng": dict(rng) if rng is not None else None,
        "hooks": dict(hooks or {}),
        "extra": extra,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, not a fairstream checkpoint, or holds
            objects other than tensors and plain data; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling arbitrary bytes fails in many types
        raise CheckpointError(_load_failure(path, exc)) from exc
    marker = raw.get("format") if isinstance(raw, dict) else None
    if not isinstance(marker, str) or marker != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a fairstream checkpoint (no format marker). "
                              f"{_WHAT_IS_A_CHECKPOINT}")
    version = raw.get("version")
    if type(version) is not int or version != CHECKPOINT_VERSION:  # a tensor or bool is not
        raise CheckpointError(
            f"checkpoint {path} has version {raw.get('version')!r}; "
            f"this fairstream reads version {CHECKPOINT_VERSION}"
        )
    try:
        config = json.loads(raw["config"])
        model = raw["model"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} has no readable config or model: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: 'config' is not a JSON object")
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state_dict of tensors")
    parts = {name: raw.get(name) for name in ("optimizer", "progress", "rng", "hooks", "extra")}
    for name, value in parts.items():
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(
                f"checkpoint {path}: {name!r} is a {type(value).__name__}, not a mapping"
            )
    progress = dict(parts["progress"] or {})
    for key in ("step", "epoch", "batch_in_epoch"):
        count = progress.get(key, 0)
        if type(count) is not int or count < 0:
            raise CheckpointError(f"checkpoint {path}: progress {key!r} is {count!r}, not a count")
    extra = dict(parts["extra"] or {})
    return Checkpoint(
        path=path,
        config=config,
        model=model,
        kind=_stored_kind(path, raw, config, extra),
        optimizer=parts["optimizer"],
        progress=progress,
        rng=parts["rng"],
        hooks=dict(parts["hooks"] or {}),
        extra=extra,
    )


_WHAT_IS_A_CHECKPOINT = (
    "A fairstream checkpoint is a file written by `fairstream train` or `fairstream sv train` "
    "(fairstream.checkpoint.save_checkpoint): tensors and plain data only."
)
#: PyTorch's reason for refusing an object on a weights-only load, without its advice.
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def _load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in fairstream's words.

    PyTorch's own message advises loading with ``weights_only=False``, which would run any code
    the file holds; it is not repeated here.
    """
    text = str(exc)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return (f"checkpoint {path} is not a safe fairstream checkpoint: it holds Python "
                f"objects other than tensors and plain data ({refused.group(1)}), which "
                f"fairstream never loads (unpickling them can run code). {_WHAT_IS_A_CHECKPOINT}")
    reason = _UNPICKLER_REASON.search(text)
    if reason:  # e.g. "Unsupported operand 103": bytes that are no pickle fairstream writes
        detail = reason.group(1).strip()
    elif "Weights only load failed" in text:
        detail = "unreadable pickle data"
    else:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return (f"checkpoint {path} is corrupt or not a safe fairstream checkpoint ({detail}). "
            f"{_WHAT_IS_A_CHECKPOINT}")


def _stored_kind(path: Path, raw: Mapping[str, object], config: Mapping[str, object],
                 extra: Mapping[str, object]) -> str | None:
    """The ``kind`` field, or where files written before it existed said the same thing."""
    kind = raw.get("kind")
    if kind is not None and not (isinstance(kind, str) and kind in CHECKPOINT_KINDS):
        raise CheckpointError(
            f"checkpoint {path} holds a model of kind {kind!r}; this fairstream "
            f"reads {', '.join(CHECKPOINT_KINDS)}"
        )
    for value in (kind, extra.get("task"), config.get("kind")):
        if isinstance(value, str) and value in CHECKPOINT_KINDS:
            return value
    return None


def config_differences(
    a: Mapping[str, object], b: Mapping[str, object], prefix: str = ""
) -> list[tuple[str, object, object]]:
    """Key paths where two plain-data configs differ, as ``(path, value_in_a, value_in_b)``.

    A key present on one side only is reported with ``<missing>`` on the other.
    """
    out: list[tuple[str, object, object]] = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va = a.get(key, "<missing>")
        vb = b.get(key, "<missing>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(config_differences(va, vb, f"{path}."))
        elif va != vb:
            out.append((path, va, vb))
    return out


def check_compatible(
    saved: Mapping[str, object],
    current: Mapping[str, object],
    *,
    sections: Sequence[str] = ("model", "tokenizer"),
    source: str | Path = "checkpoint",
) -> None:
    """Raise if ``saved`` and ``current`` differ in any of ``sections``.

    Args:
        saved: config stored in a checkpoint.
        current: config of the run that wants to use it.
        sections: top-level sections that must match exactly (the architecture and vocabulary).
        source: name of the checkpoint, for the message.

    Raises:
        CheckpointError: naming every differing key path with both values.
    """
    diffs: list[tuple[str, object, object]] = []
    for section in sections:
        a = saved.get(section, {})
        b = current.get(section, {})
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs.extend(config_differences(a, b, f"{section}."))
        elif a != b:
            diffs.append((section, a, b))
    if diffs:
        shown = "; ".join(f"{p}: {va!r} in checkpoint vs {vb!r} in config"
                          for p, va, vb in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise CheckpointError(f"{source} was written for another configuration: {shown}{more}")


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Average the model weights of several checkpoints of the same model.

    Floating-point tensors are averaged (in float64, cast back); integer tensors (such as
    batch-norm counters) are taken from the last checkpoint.

    Raises:
        CheckpointError: no paths, differing model configs, parameter names or shapes (named).
    """
    if not paths:
        raise CheckpointError("average_checkpoints needs at least one checkpoint")
    first = load_checkpoint(paths[0])
    acc: dict[str, torch.Tensor] = {}
    for k, v in first.model.items():
        acc[k] = v.to(torch.float64).clone() if v.is_floating_point() else v.clone()
    for p in paths[1:]:
        ck = load_checkpoint(p)
        check_compatible(first.config, ck.config, sections=("model",), source=ck.path)
        if set(ck.model) != set(acc):
            missing = sorted(set(acc) ^ set(ck.model))
            raise CheckpointError(
                f"cannot average {ck.path} with {first.path}: parameters differ ({missing[:5]})"
            )
        for k, v in ck.model.items():
            if v.shape != acc[k].shape:
                raise CheckpointError(
                    f"cannot average {ck.path}: {k} has shape {tuple(v.shape)}, "
                    f"{first.path} has {tuple(acc[k].shape)}"
                )
            if v.is_floating_point():
                acc[k] += v.to(torch.float64)
            else:
                acc[k] = v.clone()
    n = len(paths)
    return {
        k: (v / n).to(first.model[k].dtype) if first.model[k].is_floating_point() else v
        for k, v in acc.items()
    }


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Periodic checkpoints ``step-<N>.pt`` in ``directory``, oldest (smallest N) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def capture_rng_state() -> dict[str, object]:
    """States of the torch, Python and NumPy global generators, as weights-only-safe data."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
    }


# Any: the generator states, each restored by its own library's setter
def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generator states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
