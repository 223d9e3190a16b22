"""The one training loop: every model and every mitigation trains through :func:`fit`.

What varies between models is an :class:`Objective` (``objective(model, batch) ->
LossOutput``) and a :class:`DataSource` (batches of an epoch, resumable at any batch);
what varies between mitigations is an objective wrapper or a :class:`TrainHook`
(``extra_loss`` terms such as an EWC penalty, ``after_step`` callbacks such as an
adversary update). Everything else lives here once:

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
* a wall-clock budget that stops cleanly and still writes the final and averaged models;
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
    "Objective",
    "StepInfo",
    "TrainHook",
    "TrainResult",
    "fit",
    "init_distributed",
    "lr_factor",
    "unwrap",
]

logger = logging.getLogger(__name__)

StopReason = Literal["max_steps", "max_epochs", "budget"]


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

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput: ...


@runtime_checkable
class DataSource(Protocol):
    """Batches of one epoch, deterministic given the epoch, resumable at any batch.

    ``batches(epoch, skip=k)`` must yield exactly what ``batches(epoch)`` yields after its
    first ``k`` batches (each process yields its own shard under DDP). Random draws (shuffling,
    augmentation) must come from generators seeded by the epoch/batch, never the global ones.
    """

    def batches(self, epoch: int, *, skip: int = 0) -> Iterable[Any]: ...


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
    batch: Any


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

    def extra_loss(self, model: nn.Module, batch: Any) -> Tensor | None:
        """A scalar added to the objective's loss, or ``None``."""
        return None

    def after_step(self, info: StepInfo) -> None:
        """Called after every batch (also skipped ones; see ``info.skipped``)."""

    def on_validation(self, model: nn.Module, step: int) -> Mapping[str, float]:
        """Extra validation metrics (called on every rank; the model is in eval mode)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (tensors and plain data)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
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
        return factor * max(floor, 0.5 ** (after / span))
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

    def add(self, loss_sum: float, items: int, norm: float, skipped: bool,
            metrics: Mapping[str, float]) -> None:
        self.steps += 1
        if skipped:
            self.skipped += 1
            return
        self.loss_sum += loss_sum
        self.items += items
        self.norm_sum += norm
        for k, v in metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + float(v)


class _Run:
    """State and helpers of one :func:`fit` call."""

    def __init__(
        self,
        *,
        model: nn.Module,
        objective: Objective,
        train_data: DataSource,
        valid_data: Iterable[Any] | None,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        out_dir: Path,
        run_config: Mapping[str, Any],
        hooks: Sequence[TrainHook],
        extra: Mapping[str, Any],
        progress: bool,
        dist_info: DistInfo,
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
        self.extra = dict(extra)
        self.show_progress = progress
        self.d = dist_info
        self.optimizer = _make_optimizer(model, optim)
        self.ddp_model: nn.Module = model
        if self.d.world_size > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(model)
        self.p = _Progress()
        self.last_saved_step = -1
        self.last_valid_step = -1

    # ---------------------------------------------------------------- collective helpers
    def _all_reduce(self, values: list[float], op: Any = None) -> list[float]:
        if self.d.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)
        return t.tolist()

    def _barrier(self) -> None:
        if self.d.world_size > 1:
            dist.barrier()

    # ---------------------------------------------------------------- logging
    def _log(self, record: Mapping[str, Any]) -> None:
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
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    # ---------------------------------------------------------------- checkpoints
    def _progress_dict(self) -> dict[str, Any]:
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

    def _hook_states(self) -> dict[str, Any]:
        states = {k: h.state_dict() for k, h in zip(self._hook_keys(), self.hooks)}
        return {k: v for k, v in states.items() if v}

    def _rng_state(self) -> dict[str, Any]:
        """This process's generator states; under DDP also every rank's (``by_rank``)."""
        state = capture_rng_state()
        if self.d.world_size > 1:
            gathered: list[Any] = [None] * self.d.world_size
            dist.all_gather_object(gathered, state)
            state = {**state, "by_rank": gathered}
        return state

    def restore_rng(self, state: Mapping[str, Any]) -> None:
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

    def try_resume(self) -> tuple[Path | None, dict[str, Any] | None]:
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
        saved_hooks: dict[str, Any] = dict(ck.hooks)
        for key, hook in zip(self._hook_keys(), self.hooks):
            if key in saved_hooks:
                hook.load_state_dict(saved_hooks.pop(key))
        for key in saved_hooks:
            logger.warning("%s holds the state of hook %s, which this run does not have",
                           ck.path, key)
        self.last_saved_step = self.p.step
        self._truncate_log(self.p.step)
        logger.info("resumed from %s (step %d, epoch %d)", ck.path, self.p.step, self.p.epoch)
        return ck.path, ck.rng

    def finalize(self) -> tuple[Path, Path]:
        """Write ``final.pt`` and ``averaged.pt`` (rank 0)."""
        final = self.out_dir / "final.pt"
        averaged = self.out_dir / "averaged.pt"
        if self.d.is_main:
            progress = self._progress_dict()
            save_checkpoint(final, config=self.run_config, model=self.model.state_dict(),
                            progress=progress, extra=self.extra)
            paths = list_checkpoints(self.ckpt_dir)[-max(self.schedule.average_last_n, 1):]
            state = average_checkpoints(paths) if paths else self.model.state_dict()
            save_checkpoint(averaged, config=self.run_config, model=state, progress=progress,
                            extra=self.extra | {"averaged_from": [p.name for p in paths]})
            logger.info("final model %s, average of %d checkpoints %s", final, len(paths), averaged)
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

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: Any) -> tuple[float, int, float, bool, dict[str, float], float]:
        """Forward, backward, all-reduce, clip, update. Returns loss sum, items, norm, ..."""
        lr = self.optim_cfg.lr * lr_factor(self.p.step + 1, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self.objective(self.ddp_model, batch)
        loss = out.loss
        for hook in self.hooks:
            term = hook.extra_loss(self.model, batch)
            if term is not None:
                loss = loss + term
        loss.backward()
        local = float(loss.detach())
        finite = math.isfinite(local)
        loss_sum, items, nonfinite = self._all_reduce(
            [local * out.num_items if finite else 0.0, float(out.num_items), 0.0 if finite else 1.0]
        )
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        skipped = nonfinite > 0 or not math.isfinite(norm)
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {k: float(v) for k, v in out.metrics.items()}
        return loss_sum, int(items), norm, skipped, metrics, lr

    def step_info(self, batch: Any, loss: float, lr: float, norm: float, skipped: bool) -> StepInfo:
        return StepInfo(self.p.step, self.p.epoch, loss, lr, norm, skipped, self.model,
                        self.optimizer, batch)


def fit(
    *,
    model: nn.Module,
    objective: Objective,
    train_data: DataSource,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    out_dir: str | Path,
    run_config: Mapping[str, Any],
    valid_data: Iterable[Any] | None = None,
    hooks: Sequence[TrainHook] = (),
    extra: Mapping[str, Any] | None = None,
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
        extra=extra or {}, progress=progress, dist_info=d,
    )
    resumed_from, pending_rng = run.try_resume() if resume else (None, None)
    if not resume and d.is_main:
        for old in list_checkpoints(run.ckpt_dir):
            old.unlink()
        run.metrics_path.unlink(missing_ok=True)
    run._barrier()
    for hook in hooks:
        hook.on_train_start(model, run.optimizer)

    p = run.p
    budget_s = schedule.budget_minutes * 60.0 if schedule.budget_minutes is not None else None
    t0 = clock()
    elapsed_at_start = p.elapsed_s
    meter = _Meter()
    meter.reset(clock())
    bar = tqdm(total=schedule.max_steps, initial=p.step, unit="step", desc="train",
               disable=not (progress and d.is_main), dynamic_ncols=True)
    stop: StopReason | None = None
    model.train()
    try:
        while stop is None:
            if p.epoch >= schedule.max_epochs:
                stop = "max_epochs"
                break
            with torch.random.fork_rng(devices=[]):
                it: Iterator[Any] = iter(train_data.batches(p.epoch, skip=p.batch_in_epoch))
            if pending_rng is not None:
                run.restore_rng(pending_rng)
                pending_rng = None
            while True:
                if schedule.max_steps is not None and p.step >= schedule.max_steps:
                    stop = "max_steps"
                    break
                p.elapsed_s = elapsed_at_start + (clock() - t0)
                over_budget = budget_s is not None and p.elapsed_s >= budget_s
                with torch.random.fork_rng(devices=[]):
                    batch = next(it, None)
                exhausted, over = run._all_reduce(
                    [float(batch is None), float(over_budget)], op=dist.ReduceOp.MAX
                    if d.world_size > 1 else None,
                )
                if over > 0:
                    stop = "budget"
                    break
                if exhausted > 0:
                    break
                loss_sum, items, norm, skipped, metrics, lr = run.train_step(batch)
                p.step += 1
                p.batch_in_epoch += 1
                mean_loss = loss_sum / items if items and not skipped else float("nan")
                if skipped:
                    p.skipped_total += 1
                    p.consecutive_skipped += 1
                    cut_ids = getattr(batch, "cut_ids", None)
                    logger.warning("step %d: non-finite loss or gradient, batch skipped%s",
                                   p.step, f" (cuts {list(cut_ids)[:5]})" if cut_ids else "")
                    run._log({"step": p.step, "epoch": p.epoch, "event": "skipped_batch",
                              "cut_ids": list(cut_ids)[:20] if cut_ids else None})
                    if p.consecutive_skipped >= schedule.max_consecutive_nonfinite:
                        raise TrainingError(
                            f"loss or gradient was not finite for {p.consecutive_skipped} "
                            f"batches in a row (steps {p.step - p.consecutive_skipped + 1}"
                            f"..{p.step}, last batch cuts "
                            f"{list(cut_ids)[:5] if cut_ids else 'unknown'}); "
                            "lower the learning rate or check the data"
                        )
                else:
                    p.consecutive_skipped = 0
                meter.add(loss_sum, items, norm, skipped, metrics)
                for hook in hooks:
                    hook.after_step(run.step_info(batch, mean_loss, lr, norm, skipped))
                bar.update(1)
                if schedule.log_interval > 0 and p.step % schedule.log_interval == 0:
                    now = clock()
                    p.elapsed_s = elapsed_at_start + (now - t0)
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
                    run._log(rec)
                    if rec["loss"] is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
                    meter.reset(now)
                if schedule.valid_interval > 0 and p.step % schedule.valid_interval == 0:
                    run.validate()
                if (schedule.checkpoint_interval > 0
                        and p.step % schedule.checkpoint_interval == 0):
                    p.elapsed_s = elapsed_at_start + (clock() - t0)
                    run.save()
            if stop is not None:
                break
            # end of epoch
            logger.info("epoch %d done at step %d", p.epoch, p.step)
            p.epoch += 1
            p.batch_in_epoch = 0
            run.validate()
            p.elapsed_s = elapsed_at_start + (clock() - t0)
            run.save()
    finally:
        bar.close()
    p.elapsed_s = elapsed_at_start + (clock() - t0)
    if run.last_saved_step != p.step or stop == "budget":
        run.save()
    if run.last_valid_step != p.step:  # the final model's numbers close the log
        run.validate()
    run._log({"step": p.step, "epoch": p.epoch, "event": "stop", "reason": stop,
              "elapsed_s": round(p.elapsed_s, 3), "skipped_total": p.skipped_total})
    final, averaged = run.finalize()
    logger.info("training stopped (%s) at step %d after %.1f s", stop, p.step, p.elapsed_s)
    assert stop is not None
    return TrainResult(
        out_dir=out_dir,
        final_checkpoint=final,
        averaged_checkpoint=averaged,
        steps=p.step,
        epochs=p.epoch,
        stop_reason=stop,
        skipped_batches=p.skipped_total,
        elapsed_s=p.elapsed_s,
        valid_loss=p.last_valid_loss,
        resumed_from=resumed_from,
    )


_TRANSDUCER_NAMES = ("train", "TransducerObjective", "LoaderSource", "GreedyWerHook")


def __getattr__(name: str) -> Any:
    """``from fairstream.training.loop import train`` keeps working: the transducer glue lives
    in :mod:`fairstream.training.transducer` (imported lazily, it depends on this module)."""
    if name in _TRANSDUCER_NAMES:
        from fairstream.training import transducer

        return getattr(transducer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
