"""Elastic weight consolidation and L2-SP: a pull towards the starting weights, as a loss term.

Fine-tuning on a cohort moves every weight towards what that cohort's data wants and forgets
the rest. EWC (Kirkpatrick et al. 2017; used for worst-region fine-tuning by Trinh et al.,
Interspeech 2022) adds

    λ/2 · Σ_i F_i (θ_i − θ*_i)²

to the loss, where θ* are the weights fine-tuning starts from and F is the diagonal of the
Fisher information of the general task at θ*: weights the general data depends on are held
firmly, the others are free to move. L2-SP (Li et al. 2018) is the same term with F ≡ 1.

Here F is the **empirical Fisher** of the transducer loss (RNN-T + the auxiliary CTC term,
what training minimizes), estimated from ``n_batches`` batches of general training data:
``F_i = mean over batches of (∂L_batch/∂θ_i)²`` with ``L_batch`` the batch's mean
per-utterance loss. The squared *batch* gradient is a cheaper, lower-variance-per-batch
approximation of the per-example squares (it loses the within-batch variance); it is what
the estimate costs at most ``n_batches`` backward passes. F is stored **normalized to mean 1
over all weights**, so λ has the same meaning (the average pull per weight) for EWC and L2-SP
and the grid of λ values chosen on dev is shared.

The Fisher file is stored next to the checkpoint (``<checkpoint>.fisher.pt``) with a
fingerprint of the weights it was computed for; a file computed for other weights is refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from fairstream._io import atomic_path
from fairstream.errors import CheckpointError
from fairstream.training.loop import Objective, OpaqueBatch, PlainData, TrainHook

__all__ = [
    "AnchorPenalty", "fisher_meta", "fisher_path", "load_fisher", "parameter_fingerprint",
    "estimate_fisher", "save_fisher",
]

logger = logging.getLogger(__name__)


def parameter_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the trainable parameters' names, shapes and values."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def fisher_path(checkpoint: str | Path) -> Path:
    """Where the Fisher of a checkpoint is kept: ``<checkpoint>.fisher.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.name + ".fisher.pt")


def estimate_fisher(model: nn.Module, objective: Objective, batches: Iterable[OpaqueBatch],
                    n_batches: int, *, progress: bool = False) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of ``objective`` at the model's weights, mean 1.

    The model is put in eval mode (no dropout: the Fisher of the function fine-tuning starts
    from); the loss is differentiated batch by batch. See the module docstring.
    """
    from tqdm.auto import tqdm

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    seen = 0
    try:
        bar = tqdm(total=n_batches, desc="Fisher", unit="batch", disable=not progress,
                   leave=False)
        for batch in batches:
            if seen >= n_batches:
                break
            model.zero_grad(set_to_none=True)
            out = objective(model, batch)
            if not torch.isfinite(out.loss):
                continue
            out.loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    acc[n] += p.grad.detach() ** 2
            seen += 1
            bar.update(1)
        bar.close()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if seen == 0:
        raise CheckpointError("no finite batch to estimate the Fisher information from")
    total = sum(float(a.sum()) for a in acc.values())
    count = sum(a.numel() for a in acc.values())
    mean = total / seen / max(count, 1)
    if mean <= 0:
        raise CheckpointError("the Fisher information is zero: the loss has no gradient")
    logger.info("Fisher from %d batches: mean %.3g before normalization", seen, mean)
    return {n: a / seen / mean for n, a in acc.items()}


def save_fisher(path: str | Path, fisher: Mapping[str, Tensor], fingerprint: str,
                meta: Mapping[str, object]) -> Path:
    """Write a Fisher file atomically."""
    with atomic_path(path) as tmp:
        torch.save({"kind": "fisher", "fingerprint": fingerprint, "meta": dict(meta),
                    "fisher": dict(fisher)}, tmp)
    return Path(path)


def fisher_meta(path: str | Path) -> dict[str, object]:
    """The settings a Fisher file was estimated with (``{}`` if unreadable)."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # an unreadable file has no settings; load_fisher names the problem
        return {}
    return dict(data.get("meta", {})) if isinstance(data, dict) else {}


def load_fisher(path: str | Path, model: nn.Module) -> dict[str, Tensor]:
    """The Fisher of ``path``, checked against ``model``'s current weights.

    Raises:
        CheckpointError: unreadable, not a Fisher file, or computed for other weights (the
            message names the mismatch).
    """
    p = Path(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file; all mean "unreadable"
        raise CheckpointError(f"cannot read the Fisher file {p}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "fisher":
        raise CheckpointError(f"{p} is not a Fisher file")
    fisher = data["fisher"]
    shapes = {n: tuple(q.shape) for n, q in model.named_parameters() if q.requires_grad}
    theirs = {n: tuple(t.shape) for n, t in fisher.items()}
    if shapes != theirs:
        diff = sorted(set(shapes.items()) ^ set(theirs.items()))[:3]
        raise CheckpointError(f"the Fisher file {p} belongs to another model: parameters "
                              f"differ, e.g. {diff}")
    if data.get("fingerprint") != parameter_fingerprint(model):
        raise CheckpointError(f"the Fisher file {p} was computed for other weights than the "
                              "checkpoint being fine-tuned; delete it to recompute")
    return dict(fisher)


class AnchorPenalty(TrainHook):
    """``λ/2 · Σ F_i (θ_i − θ*_i)²`` as a loss term of the training loop (EWC; ``fisher=None``
    gives L2-SP, F ≡ 1).

    The anchor θ* is the model's weights when training starts (``on_train_start``, after any
    resume; a resumed run re-reads the anchor from the hook's stored state).

    Args:
        lam: λ.
        fisher: name → F (mean 1, :func:`estimate_fisher`), or None for F ≡ 1.
    """

    def __init__(self, lam: float, fisher: Mapping[str, Tensor] | None = None) -> None:
        self.lam = float(lam)
        self.fisher = dict(fisher) if fisher is not None else None
        self.anchor: dict[str, Tensor] | None = None

    @property
    def state_key(self) -> str:
        return "ewc" if self.fisher is not None else "l2sp"

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.anchor is None:
            self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()
                           if p.requires_grad}

    def extra_loss(self, model: nn.Module, batch: OpaqueBatch) -> Tensor | None:
        if self.lam == 0.0 or self.anchor is None:
            return None
        total: Tensor | None = None
        for n, p in model.named_parameters():
            a = self.anchor.get(n)
            if a is None:
                continue
            d2 = (p - a) ** 2
            term = (self.fisher[n] * d2).sum() if self.fisher is not None else d2.sum()
            total = term if total is None else total + term
        return None if total is None else 0.5 * self.lam * total

    def state_dict(self) -> dict[str, PlainData]:
        return {"anchor": dict(self.anchor or {}), "lam": self.lam}

    def load_state_dict(self, state: Mapping[str, PlainData]) -> None:
        anchor = state.get("anchor")
        if isinstance(anchor, dict) and anchor:
            self.anchor = {str(k): v for k, v in anchor.items()}
