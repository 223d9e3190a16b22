"""The one training loop: every model and every mitigation trains through :func:`fit`.

What varies between models is an :class:`Objective` (``objective(model, batch) ->
LossOutput``) and a :class:`DataSource` (batches of an epoch, resumable at any batch);
what varies between mitigations is an objective wrapper or a :class:`TrainHook`
(``extra_loss`` terms such as an EWC penalty, ``after_step`` callbacks such as an
adversary update). Everything else lives here once:

* one batch: :func:`compute_loss` gathers the objective's loss and the hooks' terms
  (:class:`LossTerms`, the one place where the training objective is summed), and a step
  reports what it did as a :class:`StepResult`;
* AdamW with linear warm-up and a constant / Noam / cosine / exponential schedule,
  weight decay on matrices only, global gradient-norm clipping;
* a NaN/inf loss or gradient skips the batch (counted); ``max_consecutive_nonfinite`` of
  them in a row stop training with :class:`~fairstream.errors.TrainingError`;
* periodic and end-of-epoch checkpoints (atomic), the last ``keep_last_n`` kept, a final
  model and the average of the last ``average_last_n`` checkpoints;
* exact resume: model, optimizer, step counters, the position inside the epoch, random
  generator states and hook states are restored, so a run killed and resumed produces the
  same per-step losses as an uninterrupted one (data pipelines must be deterministic given
  the epoch and batch index; their own random draws are kept off the global generators);
* a wall-clock budget that stops cleanly and still writes the final and averaged models
  (a safety cap when ``max_steps`` is the stopping rule: stopping before it is logged as a
  warning); the stop reason is in the log's ``stop`` event and in the final models'
  progress (``stop_reason``);
* validation loss (plus whatever hooks add, such as a greedy WER);
* a JSONL metrics log and a tqdm progress bar;
* single process or DDP under ``torchrun`` (gloo on CPU): ranks agree on every stop and skip
  decision, only rank 0 writes.

:mod:`fairstream.training.transducer` wires transducers (corpus, tokenizer, data loaders,
objective) into this loop; other models call :func:`fit` the same way.

Output directory layout::

    OUT/config.yaml                 resolved config
    OUT/metrics.jsonl               one JSON record per log interval / validation / event
    OUT/checkpoints/step-<N>.pt     resumable checkpoints (last keep_last_n)
    OUT/final.pt                    final model (model + config + extras, no optimizer)
    OUT/averaged.pt                 average of the last average_last_n checkpoints
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from fairstream._io import atomic_write_text
from fairstream.checkpoint import (
    Checkpoint,
    average_checkpoints,
    capture_rng_state,
    check_compatible,
    config_differences,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from fairstream.errors import CheckpointError, TrainingError
from fairstream.training.config import OptimConfig, ScheduleConfig

__all__ = [
    "DataSource",
    "DistInfo",
    "LossOutput",
    "LossTerms",
    "Objective",
    "StepInfo",
    "StepResult",
    "TrainHook",
    "TrainResult",
    "compute_loss",
    "fit",
    "init_distributed",
    "lr_factor",
    "unwrap",
]

logger = logging.getLogger(__name__)

StopReason = Literal["max_steps", "max_epochs", "budget"]
#: A batch is opaque to the loop: whatever the :class:`DataSource` yields and the
#: :class:`Objective` reads (a speech batch, speaker pairs, ...).
OpaqueBatch = Any  # Any: the loop never looks inside a batch
#: Plain data as stored in checkpoints and the metrics log (JSON-like values and tensors of
#: any shape).
PlainData = Any  # Any: JSON-like values and tensors of any shape


# --------------------------------------------------------------------------- interfaces


@dataclass(frozen=True)
class LossOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: scalar tensor to minimize (mean over the batch's items).
        num_items: items the loss averages over (utterances, pairs, ...); weights validation
            means and throughput.
        metrics: extra scalars to log (averaged over the log interval).
    """

    loss: Tensor
    num_items: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """``objective(model, batch) -> LossOutput``; ``model`` may be DDP-wrapped, so call it."""

    def __call__(self, model: nn.Module, batch: OpaqueBatch) -> LossOutput: ...


@runtime_checkable
class DataSource(Protocol):
    """Batches of one epoch, deterministic given the epoch, resumable at any batch.

    ``batches(epoch, skip=k)`` must yield exactly what ``batches(epoch)`` yields after its
    first ``k`` batches (each process yields its own shard under DDP). Random draws (shuffling,
    augmentation) must come from generators seeded by the epoch/batch, never the global ones.
    """

    def batches(self, epoch: int, *, skip: int = 0) -> Iterable[OpaqueBatch]: ...


@dataclass(frozen=True)
class StepInfo:
    """Passed to :meth:`TrainHook.after_step` after every batch.

    Attributes:
        step: optimizer steps so far (including this batch, skipped or not).
        epoch: current epoch (0-based).
        loss: this process's loss on the batch (``nan`` if not finite).
        lr: learning rate used.
        grad_norm: global gradient norm before clipping.
        skipped: the update was skipped (non-finite loss or gradient).
        model: the unwrapped model.
        optimizer: the optimizer.
        batch: the batch.
    """

    step: int
    epoch: int
    loss: float
    lr: float
    grad_norm: float
    skipped: bool
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: OpaqueBatch


class TrainHook:
    """Extension points of the loop; subclass and override what you need.

    * :meth:`extra_loss` adds a term to the loss before the backward pass (e.g. EWC);
    * :meth:`after_step` runs after the optimizer step (e.g. an adversary update);
    * :meth:`on_validation` returns extra validation metrics (e.g. greedy WER);
    * :meth:`state_dict` / :meth:`load_state_dict` make the hook resumable (its state is
      stored in every checkpoint under :attr:`state_key`; tensors and plain data only).
    """

    @property
    def state_key(self) -> str:
        """Name of this hook's state in checkpoints (default: the class name)."""
        return type(self).__name__

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first step (after any resume)."""

    def extra_loss(self, model: nn.Module, batch: OpaqueBatch) -> Tensor | None:
        """A scalar added to the objective's loss, or ``None``."""
        return None

    def after_step(self, info: StepInfo) -> None:
        """Called after every batch (also skipped ones; see ``info.skipped``)."""

    def on_validation(self, model: nn.Module, step: int) -> Mapping[str, float]:
        """Extra validation metrics (called on every rank; the model is in eval mode)."""
        return {}

    def state_dict(self) -> dict[str, PlainData]:
        """Resumable state (tensors and plain data)."""
        return {}

    def load_state_dict(self, state: Mapping[str, PlainData]) -> None:
        """Restore what :meth:`state_dict` returned."""


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes:
        out_dir: the output directory.
        final_checkpoint: ``OUT/final.pt``.
        averaged_checkpoint: ``OUT/averaged.pt``.
        steps: optimizer steps taken in total (over resumed runs).
        epochs: completed epochs.
        stop_reason: ``max_steps``, ``max_epochs`` or ``budget``.
        skipped_batches: batches skipped for a non-finite loss or gradient.
        elapsed_s: training wall-clock time over resumed runs.
        valid_loss: last validation loss (``None`` if never validated).
        resumed_from: checkpoint the run resumed from, if any.
    """

    out_dir: Path
    final_checkpoint: Path
    averaged_checkpoint: Path
    steps: int
    epochs: int
    stop_reason: StopReason
    skipped_batches: int
    elapsed_s: float
    valid_loss: float | None
    resumed_from: Path | None


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts: rank, world size, and whether this code created the group."""

    rank: int = 0
    world_size: int = 1
    created: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0


def init_distributed(backend: str = "gloo") -> DistInfo:
    """Join the process group ``torchrun`` set up through the environment, if any.

    Returns the rank/world size; a single process without ``WORLD_SIZE`` gets rank 0 of 1.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- schedule


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (1-based); see :class:`OptimConfig`."""
    step = max(step, 1)
    warm = max(optim.warmup_steps, 0)
    factor = min(1.0, step / warm) if warm > 0 else 1.0
    after = max(step - warm, 0)
    if optim.schedule == "constant":
        return factor
    if optim.schedule == "noam":
        return factor * (math.sqrt(warm / step) if warm > 0 and step > warm else 1.0)
    floor = optim.min_lr_ratio
    span = max(optim.decay_steps, 1)
    if optim.schedule == "cosine":
        t = min(after / span, 1.0)
        return factor * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
    if optim.schedule == "exponential":
        return factor * max(floor, float(0.5 ** (after / span)))
    raise ValueError(f"unknown learning-rate schedule {optim.schedule!r}")


def _make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=optim.lr, betas=optim.betas, eps=optim.eps
    )


# --------------------------------------------------------------------------- one batch


@dataclass(frozen=True)
class LossTerms:
    """The training objective of one batch, term by term.

    Attributes:
        objective: what the :class:`Objective` returned (its loss, item count and metrics).
        extra: the terms :meth:`TrainHook.extra_loss` added, by hook state key, in hook order.
    """

    objective: LossOutput
    extra: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """The scalar the optimizer minimizes: the objective's loss plus every extra term."""
        loss = self.objective.loss
        for term in self.extra.values():
            loss = loss + term
        return loss


def compute_loss(
    objective: Objective, model: nn.Module, batch: OpaqueBatch, hooks: Mapping[str, TrainHook]
) -> LossTerms:
    """The objective of one training batch: the one place where its terms are gathered.

    Args:
        objective: computes the model's own loss; called with ``model`` as given (it may be
            DDP-wrapped).
        model: the model.
        batch: one training batch.
        hooks: the run's hooks by state key; each may add a term (called with the unwrapped
            model).

    Returns:
        :class:`LossTerms`; back-propagate :attr:`LossTerms.total`.
    """
    out = objective(model, batch)
    extra: dict[str, Tensor] = {}
    for key, hook in hooks.items():
        term = hook.extra_loss(unwrap(model), batch)
        if term is not None:
            extra[key] = term
    return LossTerms(out, extra)


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did (values agreed on by all ranks unless noted).

    Attributes:
        loss_sum: item-weighted sum of the batch loss over all ranks (0 for ranks whose loss
            was not finite).
        num_items: items of the batch over all ranks.
        grad_norm: global gradient norm before clipping (this rank's view).
        skipped: the update was skipped (a loss or gradient was not finite).
        lr: learning rate used.
        metrics: this rank's objective metrics for the batch.
    """

    loss_sum: float
    num_items: int
    grad_norm: float
    skipped: bool
    lr: float
    metrics: Mapping[str, float]

    @property
    def mean_loss(self) -> float:
        """Item-weighted mean loss of the batch, ``nan`` when it was skipped or empty."""
        if self.num_items and not self.skipped:
            return self.loss_sum / self.num_items
        return float("nan")


# --------------------------------------------------------------------------- the loop


@dataclass
class _Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0
    skipped_total: int = 0
    consecutive_skipped: int = 0
    last_valid_loss: float | None = None


class _Meter:
    """Sums over one log interval."""

    def __init__(self) -> None:
        self.reset(time.monotonic())

    def reset(self, now: float) -> None:
        self.start = now
        self.loss_sum = 0.0
        self.items = 0
        self.steps = 0
        self.norm_sum = 0.0
        self.skipped = 0
        self.metrics: dict[str, float] = {}

    def add(self, result: StepResult) -> None:
        self.steps += 1
        if result.skipped:
            self.skipped += 1
            return
        self.loss_sum += result.loss_sum
        self.items += result.num_items
        self.norm_sum += result.grad_norm
        for k, v in result.metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + float(v)


class _Run:
    """State and steps of one :func:`fit` call.

    :meth:`start` (resume or start over), then :meth:`train` (epochs of :meth:`train_step`
    with :meth:`after_step` bookkeeping), then :meth:`finish` (last checkpoint, validation,
    final and averaged models).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        objective: Objective,
        train_data: DataSource,
        valid_data: Iterable[OpaqueBatch] | None,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        out_dir: Path,
        run_config: Mapping[str, PlainData],
        hooks: Sequence[TrainHook],
        extra: Mapping[str, PlainData],
        progress: bool,
        dist_info: DistInfo,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.objective = objective
        self.train_data = train_data
        self.valid_data = valid_data
        self.optim_cfg = optim
        self.schedule = schedule
        self.out_dir = out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.metrics_path = out_dir / "metrics.jsonl"
        self.run_config = dict(run_config)
        self.hooks = list(hooks)
        self.named_hooks = dict(zip(self._hook_keys(), self.hooks))
        self.extra = dict(extra)
        self.show_progress = progress
        self.d = dist_info
        self.clock = clock
        self.optimizer = _make_optimizer(model, optim)
        self.ddp_model: nn.Module = model
        if self.d.world_size > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(model)
        self.p = _Progress()
        self.last_saved_step = -1
        self.last_valid_step = -1
        self.resumed_from: Path | None = None
        self.pending_rng: dict[str, PlainData] | None = None
        self.t0 = 0.0
        self.elapsed_at_start = 0.0
        self.budget_s = (
            schedule.budget_minutes * 60.0 if schedule.budget_minutes is not None else None
        )
        self.meter = _Meter()
        self.bar: tqdm[None] | None = None

    # ---------------------------------------------------------------- collective helpers
    # Any: the reduce op is a torch.distributed.ReduceOp, whose type the stubs do not export
    def _all_reduce(self, values: list[float], op: Any = None) -> list[float]:
        if self.d.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def _barrier(self) -> None:
        if self.d.world_size > 1:
            dist.barrier()

    def _update_elapsed(self, now: float | None = None) -> None:
        """Set the training time so far (over resumed runs) from the clock."""
        now = self.clock() if now is None else now
        self.p.elapsed_s = self.elapsed_at_start + (now - self.t0)

    # ---------------------------------------------------------------- logging
    def _log(self, record: Mapping[str, PlainData]) -> None:
        if not self.d.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), allow_nan=True) + "\n")
            fh.flush()

    def _truncate_log(self, step: int) -> None:
        """Drop log records after ``step`` (written by a run that was killed after it)."""
        if not self.d.is_main or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if int(rec.get("step", 0)) <= step:
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    # ---------------------------------------------------------------- checkpoints
    def _progress_dict(self) -> dict[str, PlainData]:
        p = self.p
        return {
            "step": p.step,
            "epoch": p.epoch,
            "batch_in_epoch": p.batch_in_epoch,
            "elapsed_s": p.elapsed_s,
            "skipped_total": p.skipped_total,
            "consecutive_skipped": p.consecutive_skipped,
            "last_valid_loss": p.last_valid_loss,
            "world_size": self.d.world_size,
        }

    def _hook_keys(self) -> list[str]:
        keys: list[str] = []
        for hook in self.hooks:
            key = hook.state_key
            n = sum(1 for k in keys if k == key or k.startswith(f"{key}#"))
            keys.append(key if n == 0 else f"{key}#{n}")
        return keys

    def _hook_states(self) -> dict[str, PlainData]:
        states = {k: h.state_dict() for k, h in self.named_hooks.items()}
        return {k: v for k, v in states.items() if v}

    def _rng_state(self) -> dict[str, PlainData]:
        """This process's generator states; under DDP also every rank's (``by_rank``)."""
        state = capture_rng_state()
        if self.d.world_size > 1:
            gathered: list[PlainData] = [None] * self.d.world_size
            dist.all_gather_object(gathered, state)
            state = {**state, "by_rank": gathered}
        return state

    def restore_rng(self, state: Mapping[str, PlainData]) -> None:
        """Restore this rank's generator states (rank 0's if the world size changed)."""
        by_rank = state.get("by_rank")
        if by_rank is not None and len(by_rank) == self.d.world_size:
            restore_rng_state(by_rank[self.d.rank])
        else:
            restore_rng_state(state)

    def save(self) -> None:
        """Write ``checkpoints/step-N.pt`` (rank 0) and prune old ones (call on every rank)."""
        self.last_saved_step = self.p.step
        rng = self._rng_state()
        if not self.d.is_main:
            return
        path = self.ckpt_dir / f"step-{self.p.step:08d}.pt"
        save_checkpoint(
            path,
            config=self.run_config,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            progress=self._progress_dict(),
            rng=rng,
            hooks=self._hook_states(),
            extra=self.extra,
        )
        keep = max(self.schedule.keep_last_n, self.schedule.average_last_n, 1)
        for old in list_checkpoints(self.ckpt_dir)[:-keep]:
            old.unlink(missing_ok=True)
        logger.info("checkpoint %s written", path)

    def try_resume(self) -> tuple[Path | None, dict[str, PlainData] | None]:
        """Load the newest readable checkpoint of ``out_dir``; return its path and RNG state."""
        candidates = list_checkpoints(self.ckpt_dir)
        ck: Checkpoint | None = None
        for path in reversed(candidates):
            try:
                ck = load_checkpoint(path)
                break
            except CheckpointError as exc:
                logger.warning("skipping unreadable checkpoint: %s", exc)
        if ck is None:
            if candidates:
                raise CheckpointError(
                    f"no readable checkpoint in {self.ckpt_dir} "
                    f"({len(candidates)} found, all corrupt); use resume=False to start over"
                )
            return None, None
        check_compatible(ck.config, self.run_config, source=ck.path)
        for key, old, new in config_differences(ck.config, self.run_config):
            logger.warning("resuming with a changed setting %s: %r -> %r", key, old, new)
        try:
            self.model.load_state_dict(ck.model)
        except RuntimeError as exc:
            raise CheckpointError(f"{ck.path} does not fit the model: {exc}") from exc
        if ck.optimizer is None:
            raise CheckpointError(f"{ck.path} has no optimizer state; it cannot be resumed")
        self.optimizer.load_state_dict(ck.optimizer)
        pr = ck.progress
        saved_world = int(pr.get("world_size", 1))
        if saved_world != self.d.world_size:
            logger.warning(
                "%s was written with %d processes, resuming with %d: the data order changes",
                ck.path, saved_world, self.d.world_size,
            )
        self.p = _Progress(
            step=int(pr["step"]),
            epoch=int(pr["epoch"]),
            batch_in_epoch=int(pr["batch_in_epoch"]),
            elapsed_s=float(pr["elapsed_s"]),
            skipped_total=int(pr.get("skipped_total", 0)),
            consecutive_skipped=int(pr.get("consecutive_skipped", 0)),
            last_valid_loss=pr.get("last_valid_loss"),
        )
        saved_hooks: dict[str, PlainData] = dict(ck.hooks)
        for key, hook in self.named_hooks.items():
            if key in saved_hooks:
                hook.load_state_dict(saved_hooks.pop(key))
        for key in saved_hooks:
            logger.warning("%s holds the state of hook %s, which this run does not have",
                           ck.path, key)
        self.last_saved_step = self.p.step
        self._truncate_log(self.p.step)
        logger.info("resumed from %s (step %d, epoch %d)", ck.path, self.p.step, self.p.epoch)
        return ck.path, ck.rng

    def finalize(self, stop: StopReason) -> tuple[Path, Path]:
        """Write ``final.pt`` and ``averaged.pt`` (rank 0); their progress records ``stop``."""
        final = self.out_dir / "final.pt"
        averaged = self.out_dir / "averaged.pt"
        if self.d.is_main:
            progress = self._progress_dict() | {"stop_reason": stop}
            save_checkpoint(final, config=self.run_config, model=self.model.state_dict(),
                            progress=progress, extra=self.extra)
            paths = list_checkpoints(self.ckpt_dir)[-max(self.schedule.average_last_n, 1):]
            state = average_checkpoints(paths) if paths else self.model.state_dict()
            save_checkpoint(averaged, config=self.run_config, model=state, progress=progress,
                            extra=self.extra | {"averaged_from": [p.name for p in paths]})
            logger.info("final model %s, average of %d checkpoints %s",
                        final, len(paths), averaged)
        self._barrier()
        return final, averaged

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        """Validation loss (item-weighted mean over all ranks) plus hook metrics."""
        out: dict[str, float] = {}
        self.last_valid_step = self.p.step
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if self.valid_data is not None:
                loss_sum, items = 0.0, 0
                for batch in self.valid_data:
                    lo = self.objective(self.model, batch)
                    value = float(lo.loss)
                    if math.isfinite(value):
                        loss_sum += value * lo.num_items
                        items += lo.num_items
                loss_sum, items_f = self._all_reduce([loss_sum, float(items)])
                if items_f > 0:
                    out["valid_loss"] = loss_sum / items_f
                    self.p.last_valid_loss = out["valid_loss"]
            for hook in self.hooks:
                out.update(hook.on_validation(self.model, self.p.step))
        self.model.train(was_training)
        if out:
            self._log({"step": self.p.step, "epoch": self.p.epoch, "event": "validation", **out})
            logger.info("step %d validation: %s", self.p.step,
                        ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
        return out

    # ---------------------------------------------------------------- start
    def start(self, resume: bool) -> None:
        """Resume from the newest checkpoint (or clear ``out_dir`` of an old run's files)."""
        if resume:
            self.resumed_from, self.pending_rng = self.try_resume()
        elif self.d.is_main:
            for old in list_checkpoints(self.ckpt_dir):
                old.unlink()
            self.metrics_path.unlink(missing_ok=True)
        self._barrier()
        for hook in self.hooks:
            hook.on_train_start(self.model, self.optimizer)

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: OpaqueBatch) -> StepResult:
        """Forward, backward, all-reduce, clip, update (or skip when not finite)."""
        lr = self.optim_cfg.lr * lr_factor(self.p.step + 1, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms = compute_loss(self.objective, self.ddp_model, batch, self.named_hooks)
        loss = terms.total
        torch.autograd.backward(loss)
        num_items = terms.objective.num_items
        local = float(loss.detach())
        finite = math.isfinite(local)
        loss_sum, items, nonfinite = self._all_reduce(
            [local * num_items if finite else 0.0, float(num_items), 0.0 if finite else 1.0]
        )
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        skipped = nonfinite > 0 or not math.isfinite(norm)
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {k: float(v) for k, v in terms.objective.metrics.items()}
        return StepResult(loss_sum, int(items), norm, skipped, lr, metrics)

    def after_step(self, batch: OpaqueBatch, result: StepResult) -> None:
        """Count the step, handle a skip, feed the meter and the hooks, log, validate, save."""
        p = self.p
        p.step += 1
        p.batch_in_epoch += 1
        if result.skipped:
            self._record_skip(batch)
        else:
            p.consecutive_skipped = 0
        self.meter.add(result)
        info = StepInfo(p.step, p.epoch, result.mean_loss, result.lr, result.grad_norm,
                        result.skipped, self.model, self.optimizer, batch)
        for hook in self.hooks:
            hook.after_step(info)
        if self.bar is not None:
            self.bar.update(1)
        sched = self.schedule
        if sched.log_interval > 0 and p.step % sched.log_interval == 0:
            self._log_interval(result.lr)
        if sched.valid_interval > 0 and p.step % sched.valid_interval == 0:
            self.validate()
        if sched.checkpoint_interval > 0 and p.step % sched.checkpoint_interval == 0:
            self._update_elapsed()
            self.save()

    def _record_skip(self, batch: OpaqueBatch) -> None:
        """Count a skipped batch; too many in a row stop training."""
        p = self.p
        p.skipped_total += 1
        p.consecutive_skipped += 1
        cut_ids = getattr(batch, "cut_ids", None)
        logger.warning("step %d: non-finite loss or gradient, batch skipped%s",
                       p.step, f" (cuts {list(cut_ids)[:5]})" if cut_ids else "")
        self._log({"step": p.step, "epoch": p.epoch, "event": "skipped_batch",
                   "cut_ids": list(cut_ids)[:20] if cut_ids else None})
        if p.consecutive_skipped >= self.schedule.max_consecutive_nonfinite:
            raise TrainingError(
                f"loss or gradient was not finite for {p.consecutive_skipped} "
                f"batches in a row (steps {p.step - p.consecutive_skipped + 1}"
                f"..{p.step}, last batch cuts "
                f"{list(cut_ids)[:5] if cut_ids else 'unknown'}); "
                "lower the learning rate or check the data"
            )

    def _log_interval(self, lr: float) -> None:
        """Write the means of the log interval to ``metrics.jsonl`` and restart the meter."""
        p, meter = self.p, self.meter
        now = self.clock()
        self._update_elapsed(now)
        dt = max(now - meter.start, 1e-9)
        n_ok = meter.steps - meter.skipped
        rec = {
            "step": p.step,
            "epoch": p.epoch,
            "loss": meter.loss_sum / meter.items if meter.items else None,
            "lr": lr,
            "grad_norm": meter.norm_sum / n_ok if n_ok else None,
            "utt_per_s": meter.items / dt,
            "elapsed_s": round(p.elapsed_s, 3),
            "skipped": meter.skipped,
            **{k: v / max(n_ok, 1) for k, v in meter.metrics.items()},
        }
        self._log(rec)
        if rec["loss"] is not None and self.bar is not None:
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
        meter.reset(now)

    # ---------------------------------------------------------------- epochs
    def next_batch(self, it: Iterator[OpaqueBatch]) -> tuple[OpaqueBatch, StopReason | None]:
        """The next batch of the epoch, with every rank agreeing.

        Returns:
            ``(batch, None)``; ``(None, None)`` at the end of the epoch (on any rank);
            ``(None, reason)`` when training must stop (step limit or time budget).
        """
        sched = self.schedule
        if sched.max_steps is not None and self.p.step >= sched.max_steps:
            return None, "max_steps"
        self._update_elapsed()
        over_budget = self.budget_s is not None and self.p.elapsed_s >= self.budget_s
        with torch.random.fork_rng(devices=[]):
            batch = next(it, None)
        exhausted, over = self._all_reduce(
            [float(batch is None), float(over_budget)],
            op=dist.ReduceOp.MAX if self.d.world_size > 1 else None,
        )
        if over > 0:
            return None, "budget"
        if exhausted > 0:
            return None, None
        return batch, None

    def train_epoch(self) -> StopReason | None:
        """Train on the rest of the current epoch; the stop reason if training must stop."""
        p = self.p
        with torch.random.fork_rng(devices=[]):
            it: Iterator[OpaqueBatch] = iter(
                self.train_data.batches(p.epoch, skip=p.batch_in_epoch)
            )
        if self.pending_rng is not None:
            self.restore_rng(self.pending_rng)
            self.pending_rng = None
        while True:
            batch, stop = self.next_batch(it)
            if batch is None:
                return stop
            self.after_step(batch, self.train_step(batch))

    def end_epoch(self) -> None:
        """Move on to the next epoch: validate and save a checkpoint."""
        p = self.p
        logger.info("epoch %d done at step %d", p.epoch, p.step)
        p.epoch += 1
        p.batch_in_epoch = 0
        self.validate()
        self._update_elapsed()
        self.save()

    def train(self) -> StopReason:
        """Epochs until a step, epoch or time limit; returns which one stopped training."""
        sched = self.schedule
        self.t0 = self.clock()
        self.elapsed_at_start = self.p.elapsed_s
        self.meter.reset(self.clock())
        self.bar = tqdm(total=sched.max_steps, initial=self.p.step, unit="step", desc="train",
                        disable=not (self.show_progress and self.d.is_main), dynamic_ncols=True)
        self.model.train()
        try:
            while True:
                if self.p.epoch >= sched.max_epochs:
                    return "max_epochs"
                stop = self.train_epoch()
                if stop is not None:
                    return stop
                self.end_epoch()
        finally:
            self.bar.close()
            self.bar = None

    # ---------------------------------------------------------------- finish
    def finish(self, stop: StopReason) -> TrainResult:
        """Last checkpoint and validation, the stop record, final and averaged models."""
        p = self.p
        self._update_elapsed()
        if self.last_saved_step != p.step or stop == "budget":
            self.save()
        if self.last_valid_step != p.step:  # the final model's numbers close the log
            self.validate()
        self._log({"step": p.step, "epoch": p.epoch, "event": "stop", "reason": stop,
                   "elapsed_s": round(p.elapsed_s, 3), "skipped_total": p.skipped_total})
        target = self.schedule.max_steps
        if stop == "budget" and target is not None and p.step < target and self.d.is_main:
            logger.warning(
                "the wall-clock safety cap (schedule.budget_minutes=%g) stopped training at "
                "step %d of schedule.max_steps=%d: this model is trained less than the "
                "recipe asks", self.schedule.budget_minutes, p.step, target,
            )
        final, averaged = self.finalize(stop)
        logger.info("training stopped (%s) at step %d after %.1f s", stop, p.step, p.elapsed_s)
        return TrainResult(
            out_dir=self.out_dir,
            final_checkpoint=final,
            averaged_checkpoint=averaged,
            steps=p.step,
            epochs=p.epoch,
            stop_reason=stop,
            skipped_batches=p.skipped_total,
            elapsed_s=p.elapsed_s,
            valid_loss=p.last_valid_loss,
            resumed_from=self.resumed_from,
        )


def fit(
    *,
    model: nn.Module,
    objective: Objective,
    train_data: DataSource,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    out_dir: str | Path,
    run_config: Mapping[str, PlainData],
    valid_data: Iterable[OpaqueBatch] | None = None,
    hooks: Sequence[TrainHook] = (),
    extra: Mapping[str, PlainData] | None = None,
    resume: bool = True,
    progress: bool = True,
    dist_info: DistInfo | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train ``model`` on ``objective`` until a step, epoch or time limit; see the module doc.

    Args:
        model: the model (unwrapped; it is wrapped in DDP here when the world size is > 1).
        objective: computes the loss of a batch.
        train_data: this process's training batches per epoch.
        optim: optimizer and learning-rate schedule.
        schedule: limits and intervals.
        out_dir: output directory (created).
        run_config: the resolved config as plain data; stored in every checkpoint and compared
            on resume (sections ``model`` and ``tokenizer`` must match).
        valid_data: re-iterable validation batches (this process's shard), or ``None``.
        hooks: mitigation hooks, in order.
        extra: more data stored in every checkpoint (tokenizer files, CMVN, ...).
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` if there is one.
        progress: show a tqdm progress bar (rank 0).
        dist_info: rank and world size (default: from :func:`init_distributed`).
        clock: seconds counter for the budget (tests substitute a fake one).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingError: the loss or gradient was not finite for
            ``schedule.max_consecutive_nonfinite`` batches in a row.
        CheckpointError: the checkpoint to resume from belongs to another model/tokenizer.
    """
    out_dir = Path(out_dir)
    d = dist_info if dist_info is not None else init_distributed()
    if d.is_main:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    run = _Run(
        model=model, objective=objective, train_data=train_data, valid_data=valid_data,
        optim=optim, schedule=schedule, out_dir=out_dir, run_config=run_config, hooks=hooks,
        extra=extra or {}, progress=progress, dist_info=d, clock=clock,
    )
    run.start(resume)
    stop = run.train()
    return run.finish(stop)
