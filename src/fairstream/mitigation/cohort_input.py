"""Cohort-membership input (Dheram et al. 2022): a learned vector per cohort added to the
encoder's input features.

Each utterance's speaker belongs to the mitigated cohort (index 1) or not (index 0); a learned
offset ``b_c`` (one per cohort, the size of a feature frame, initialized to zero so training
starts from the audited model exactly) is added to every valid frame of its CMVN-normalized
features. The cohort comes from the speaker's metadata, through the cohort's definition, at
training and at test time.

Because the offset is added after normalization, ``(x − μ)/σ + b = (x − (μ − b·σ))/σ``: at
inference a cohort's offset **is** a per-cohort CMVN mean. The checkpoint stays a plain
transducer checkpoint, and every decoder (offline, streaming, exported) applies the cohort
input by decoding each cohort's speakers with its own :class:`~fairstream.features.fbank.Cmvn`
(:func:`cohort_cmvn`). The offsets are stored in ``cohort_input.pt`` beside the checkpoint.

Training: the offsets have their own Adam optimizer (:class:`CohortInputHook`; learning rate
``cohort_lr``, larger than the network's because they start at zero and are few), stepped
after every optimizer step of the loop; the network trains as usual on all training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fairstream._io import atomic_path
from fairstream.errors import CheckpointError
from fairstream.features.fbank import Cmvn
from fairstream.training.data import Batch
from fairstream.training.loop import LossOutput, Objective, PlainData, StepInfo, TrainHook

__all__ = [
    "CohortInputHook", "CohortInputObjective", "cohort_cmvn", "load_offsets", "save_offsets",
]


class CohortInputObjective:
    """Wraps an objective: adds ``offsets[cohort(speaker)]`` to each utterance's valid frames.

    Args:
        base: the transducer objective.
        offsets: (n_cohorts, F) trainable parameter.
        cohort_of: speaker id → cohort index (absent: 0).
    """

    def __init__(self, base: Objective, offsets: nn.Parameter,
                 cohort_of: Mapping[str, int]) -> None:
        self.base = base
        self.offsets = offsets
        self.cohort_of = dict(cohort_of)

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput:
        feats, lens = batch.features, batch.feature_lens
        ids = torch.tensor([self.cohort_of.get(s, 0) for s in batch.speaker_ids])
        valid = (torch.arange(feats.shape[1])[None, :] < lens[:, None]).to(feats.dtype)
        shifted = feats + self.offsets[ids][:, None, :] * valid[:, :, None]
        return self.base(model, replace(batch, features=shifted))


class CohortInputHook(TrainHook):
    """Steps the offsets' own optimizer after every loop step (resumable)."""

    def __init__(self, offsets: nn.Parameter, lr: float) -> None:
        self.offsets = offsets
        self.opt = torch.optim.Adam([offsets], lr=lr)

    @property
    def state_key(self) -> str:
        return "cohort_input"

    def after_step(self, info: StepInfo) -> None:
        if not info.skipped and self.offsets.grad is not None:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, PlainData]:
        return {"offsets": self.offsets.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: Mapping[str, PlainData]) -> None:
        with torch.no_grad():
            self.offsets.copy_(state["offsets"])
        self.opt.load_state_dict(state["opt"])


def cohort_cmvn(cmvn: Cmvn, offset: np.ndarray) -> Cmvn:
    """The CMVN that applies ``offset`` after normalization: mean − offset · std."""
    off = np.asarray(offset, dtype=np.float32).reshape(-1)
    if off.shape != cmvn.mean.shape:
        raise CheckpointError(f"cohort offset has {off.shape[0]} dims, the features "
                              f"{cmvn.mean.shape[0]}")
    return Cmvn(mean=cmvn.mean - off * cmvn.std, std=cmvn.std, frames=cmvn.frames)


def save_offsets(path: str | Path, offsets: Tensor, labels: list[str], cohort: str) -> Path:
    """Write ``cohort_input.pt`` (offsets, the label of each row, the cohort's name)."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "cohort_input", "offsets": offsets.detach().cpu(),
                    "labels": labels, "cohort": cohort}, tmp)
    return Path(path)


def load_offsets(path: str | Path) -> tuple[np.ndarray, list[str], str]:
    """(offsets (n, F), labels, cohort name) of a ``cohort_input.pt``.

    Raises:
        CheckpointError: unreadable or not a cohort-input file.
    """
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "cohort_input":
        raise CheckpointError(f"{path} is not a cohort-input file")
    return data["offsets"].numpy(), list(data["labels"]), str(data["cohort"])
