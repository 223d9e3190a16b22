"""What the one training loop optimizes for speaker embeddings, with and without ARW.

* :class:`SpeakerTrainingModel` wraps the extractor with its training heads (AAM-softmax over
  the training speakers and the pairwise loss's learned scale/bias), so the loop's optimizer
  sees every trainable parameter and ``model(...)`` works under DDP.
* :class:`SpeakerObjective` is the loop's objective: ``AAM-softmax + pair_weight · pairwise``.
  The pairwise term is the balanced pair loss of :mod:`fairstream.losses.arw`, uniformly
  weighted (baseline), ARW-weighted, or weighted by the batch's per-sample inverse
  group-frequency weights (``data.balance="weights"``: the AAM term becomes the weighted mean
  of the per-sample cross-entropies and the pair weights are ``w_i + w_j``; with ARW too, the
  sample weights are ``λ_i · w_i``).
* :class:`ArwHook` is the loop hook that runs the adversary's ascent step after every
  extractor step, on the batch the objective just saw, and checkpoints the adversary.

The adversary is *not* part of the model: the loop's optimizer descends, the adversary
ascends with its own optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.losses.arw import (
    AdversarialReweighting,
    PairLosses,
    PairwiseLoss,
    pair_weights,
    weighted_pair_loss,
)
from fairstream.models.speaker import AAMSoftmax, EcapaTdnn
from fairstream.sv.data import SpeakerBatch
from fairstream.training.loop import LossOutput, StepInfo, TrainHook

__all__ = ["ArwHook", "SpeakerForward", "SpeakerObjective", "SpeakerTrainingModel", "SvLossConfig"]


@dataclass(frozen=True)
class SvLossConfig:
    """Loss settings.

    Attributes:
        aam_margin: additive angular margin m (radians).
        aam_scale: logit scale s.
        pair_weight: weight of the pairwise metric-learning term.
    """

    aam_margin: float = 0.2
    aam_scale: float = 30.0
    pair_weight: float = 1.0


@dataclass(frozen=True)
class SpeakerForward:
    """Outputs of :meth:`SpeakerTrainingModel.forward`.

    Attributes:
        embeddings: (B, E).
        aam_loss: scalar mean AAM-softmax cross-entropy.
        accuracy: scalar training-speaker accuracy (margin-free logits).
        pairs: per-pair losses of the batch.
    """

    embeddings: Tensor
    aam_loss: Tensor
    accuracy: Tensor
    pairs: PairLosses


class SpeakerTrainingModel(nn.Module):
    """Extractor + AAM-softmax head + pairwise loss parameters.

    Args:
        extractor: the embedding network.
        num_speakers: training classes of the AAM head.
        loss: margins and scales.
    """

    def __init__(self, extractor: EcapaTdnn, num_speakers: int, loss: SvLossConfig) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = AAMSoftmax(extractor.embedding_dim, num_speakers, margin=loss.aam_margin,
                               scale=loss.aam_scale)
        self.pairwise = PairwiseLoss()

    def forward(self, features: Tensor, feature_lens: Tensor, speakers: Tensor,
                weights: Tensor | None = None) -> SpeakerForward:
        """features (B, T, F), feature_lens (B,), speakers (B,) class indices, optional (B,)
        sample weights of the AAM term (weighted mean of the per-sample cross-entropies)."""
        emb = self.extractor(features, feature_lens)
        if weights is None:
            aam, acc = self.head(emb, speakers)
        else:
            per = F.cross_entropy(self.head.logits(emb, speakers), speakers, reduction="none")
            aam = (per * weights).sum() / weights.sum()
            with torch.no_grad():
                acc = (self.head.logits(emb).argmax(-1) == speakers).float().mean()
        return SpeakerForward(emb, aam, acc, self.pairwise(emb, speakers))


class SpeakerObjective:
    """``objective(model, batch) -> LossOutput`` for :class:`SpeakerTrainingModel`.

    Args:
        loss: loss settings.
        arw: the adversarial reweighting state, or ``None`` for the baseline.
    """

    def __init__(self, loss: SvLossConfig, arw: AdversarialReweighting | None = None) -> None:
        self.loss = loss
        self.arw = arw
        self.last: tuple[Tensor, PairLosses] | None = None

    def __call__(self, model: nn.Module, batch: SpeakerBatch) -> LossOutput:
        training = model.training and torch.is_grad_enabled()
        weights = batch.weights if training else None
        if weights is None:
            out: SpeakerForward = model(batch.features, batch.feature_lens, batch.speaker_index)
        else:
            out = model(batch.features, batch.feature_lens, batch.speaker_index, weights)
        plain = weighted_pair_loss(out.pairs)
        metrics: dict[str, float] = {
            "aam": float(out.aam_loss.detach()),
            "pair": float(plain.detach()),
            "acc": float(out.accuracy),
        }
        if self.arw is not None and training:
            lam = self.arw.sample_weights(out.embeddings)
            sample = lam if weights is None else lam * weights
            pair = weighted_pair_loss(out.pairs, pair_weights(sample))
            detached = PairLosses(
                out.pairs.losses.detach(), out.pairs.positive, out.pairs.valid,
                out.pairs.cosine.detach(),
            )
            self.last = (out.embeddings.detach(), detached)
            metrics["pair_weighted"] = float(pair.detach())
            metrics["lambda_max"] = float(lam.max())
        elif weights is not None:
            pair = weighted_pair_loss(out.pairs, pair_weights(weights))
            metrics["pair_weighted"] = float(pair.detach())
        else:
            pair = plain
        loss = out.aam_loss + self.loss.pair_weight * pair
        return LossOutput(loss=loss, num_items=int(batch.features.shape[0]), metrics=metrics)


class ArwHook(TrainHook):
    """Runs the adversary's ascent step after each extractor step (alternating min–max).

    Args:
        objective: the ARW objective whose last batch the adversary steps on.
    """

    def __init__(self, objective: SpeakerObjective) -> None:
        if objective.arw is None:
            raise ValueError("ArwHook needs an objective with ARW enabled")
        self.objective = objective
        self.arw: AdversarialReweighting = objective.arw
        self.last_adversary_loss = math.nan

    def after_step(self, info: StepInfo) -> None:
        last = self.objective.last
        self.objective.last = None
        if info.skipped or last is None:
            return
        emb, pairs = last
        self.last_adversary_loss = self.arw.adversary_step(emb, pairs)

    # Any: a state dict of tensors and plain values, as torch's state_dict()
    def state_dict(self) -> dict[str, Any]:
        return self.arw.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # Any: as state_dict()
        self.arw.load_state_dict(dict(state))
