"""A tiny model, objective and data source that exercise the training loop without speech.

Imported by tests/test_training_loop.py and run as a script by its subprocess tests
(``python tests/_fake_training.py OUT ...``, also under ``torchrun``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from fairstream.training.config import OptimConfig, ScheduleConfig
from fairstream.training.loop import LossOutput, StepInfo, TrainHook, fit, init_distributed

FEATURES = 8


@dataclass(frozen=True)
class FakeBatch:
    x: Tensor  # (B, F)
    y: Tensor  # (B,)
    cut_ids: list[str] = field(default_factory=list)


class FakeData:
    """``n_batches`` batches per epoch, each a pure function of (seed, epoch, index)."""

    def __init__(self, *, n_batches: int = 7, batch_size: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, nan_batches: frozenset[int] = frozenset()):
        self.n_batches = n_batches
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.nan_batches = nan_batches

    def make(self, epoch: int, index: int) -> FakeBatch:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 1009 + index)
        size = self.batch_size + index % 3  # uneven sizes: ranks draw dropout masks unevenly
        x = torch.randn(size, FEATURES, generator=g)
        y = x[:, 0] * 2.0 - x[:, 1] + 0.1 * torch.randn(size, generator=g)
        if index in self.nan_batches:
            x = torch.full_like(x, float("nan"))
        ids = [f"e{epoch}-b{index}-u{k}" for k in range(size)]
        return FakeBatch(x, y, ids)

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[FakeBatch]:
        mine = [i for i in range(self.n_batches) if i % self.world_size == self.rank]
        for i in mine[skip:]:
            yield self.make(epoch, i)


class FakeModel(nn.Module):
    """Two linear layers with dropout in between (dropout makes RNG restore matter)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(FEATURES, hidden)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.tanh(self.inp(x)))).squeeze(-1)


def fake_objective(model: nn.Module, batch: FakeBatch) -> LossOutput:
    pred = model(batch.x)
    loss = ((pred - batch.y) ** 2).mean()
    return LossOutput(loss, int(batch.y.shape[0]), {"mse": float(loss.detach())})


class Interrupted(Exception):
    """Raised by :class:`KillAt` to simulate a crash inside the loop."""


class KillAt(TrainHook):
    """Stops the process the hard way (SIGKILL) or with an exception after ``step``."""

    def __init__(self, step: int, hard: bool) -> None:
        self.step = step
        self.hard = hard

    def after_step(self, info: StepInfo) -> None:
        if info.step == self.step:
            if self.hard:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted(f"stopped at step {info.step}")


class CountingHook(TrainHook):
    """Resumable state: counts steps seen; adds a tiny L2 term through ``extra_loss``."""

    def __init__(self, weight: float = 1e-3) -> None:
        self.seen = 0
        self.weight = weight

    def extra_loss(self, model: nn.Module, batch: FakeBatch) -> Tensor:
        return self.weight * sum((p**2).sum() for p in model.parameters())  # type: ignore[return-value]

    def after_step(self, info: StepInfo) -> None:
        self.seen += 1

    def state_dict(self) -> dict[str, int]:
        return {"seen": self.seen}

    def load_state_dict(self, state) -> None:  # type: ignore[no-untyped-def]
        self.seen = int(state["seen"])


OPTIM = OptimConfig(lr=0.05, warmup_steps=3, schedule="cosine", decay_steps=20, grad_clip=1.0)
SCHEDULE = ScheduleConfig(max_epochs=5, max_steps=12, log_interval=1, checkpoint_interval=5,
                          keep_last_n=2, average_last_n=2, valid_interval=0)
RUN_CONFIG = {"model": {"name": "fake", "hidden": 16}, "tokenizer": {}, "seed": 0}


def run(out_dir: Path, *, kill_at: int | None = None, hard: bool = False, resume: bool = True,
        schedule: ScheduleConfig = SCHEDULE, nan_batches: frozenset[int] = frozenset(),
        run_config: dict | None = None, hooks: tuple[TrainHook, ...] = (), **kw):  # type: ignore[no-untyped-def]
    """Build the fake set-up (same seed every time) and call :func:`fit`."""
    d = init_distributed()
    torch.manual_seed(0)
    model = FakeModel()
    data = FakeData(rank=d.rank, world_size=d.world_size, nan_batches=nan_batches)
    valid = [FakeData(seed=99, n_batches=2).make(0, i) for i in range(2)]
    all_hooks = list(hooks)
    if kill_at is not None:
        all_hooks.append(KillAt(kill_at, hard))
    return fit(
        model=model, objective=fake_objective, train_data=data, valid_data=valid,
        optim=OPTIM, schedule=schedule, out_dir=out_dir,
        run_config=run_config or RUN_CONFIG, hooks=all_hooks, resume=resume,
        progress=False, dist_info=d, **kw,
    ), model


def step_losses(out_dir: Path) -> dict[int, float]:
    """Per-step training loss from ``metrics.jsonl`` (the last record of each step)."""
    out: dict[int, float] = {}
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec and rec.get("event") is None:
            out[int(rec["step"])] = rec["loss"]
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--kill-at", type=int)
    ap.add_argument("--max-steps", type=int, default=SCHEDULE.max_steps)
    args = ap.parse_args(argv)
    import torch.distributed as dist

    result, model = run(args.out, kill_at=args.kill_at, hard=True,
                        schedule=replace(SCHEDULE, max_steps=args.max_steps))
    d = init_distributed()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    if d.world_size > 1:
        gathered = [torch.zeros_like(flat) for _ in range(d.world_size)]
        dist.all_gather(gathered, flat)
        same = all(torch.equal(gathered[0], g) for g in gathered)
    else:
        same = True
    if d.rank == 0:
        (args.out / "summary.json").write_text(json.dumps({
            "world_size": d.world_size, "steps": result.steps, "epochs": result.epochs,
            "params_equal_across_ranks": same, "stop_reason": result.stop_reason,
        }))
    if d.created:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
