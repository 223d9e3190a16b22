"""Adversarial reweighting (ARW) of a pairwise metric-learning loss for speaker verification.

After Lahoti et al., "Fairness without demographics through adversarially reweighted learning"
(ARL, NeurIPS 2020), adapted to pairs as Jin et al., "Adversarial reweighting for speaker
verification fairness" (Interspeech 2022) do with their best variant, *pairwise weighting*:

* An adversary network ``f_φ`` maps each training sample ``i`` — its (detached, length
  normalized) embedding concatenated with the one-hot of its k-means cluster in embedding space —
  to a score ``w_i = sigmoid(f_φ(x_i)) ∈ (0, 1)``.
* ARL normalization: ``λ_i = 1 + n · w_i / Σ_j w_j`` over the ``n`` samples of the batch, so
  every sample keeps at least weight 1 and the adversary can only redistribute the rest
  (``Σ_i λ_i = 2n``).
* A pair's weight is the sum of its two sample weights: ``Λ_ij = λ_i + λ_j``.
* The pairwise loss is a binary cross-entropy on a learned affine map of the cosine,
  ``s_ij = α · cos(e_i, e_j) + β`` (α > 0 and β learned, as in GE2E), over every pair of the
  batch, target 1 for same-speaker pairs. Positive and negative pairs are balanced, each side a
  Λ-weighted mean::

      L(θ, φ) = ½ Σ_pos Λ_ij ℓ_ij / Σ_pos Λ_ij  +  ½ Σ_neg Λ_ij ℓ_ij / Σ_neg Λ_ij

  With all ``λ`` equal this is the plain balanced mean: the baseline.
* Min–max, alternating: the extractor θ takes a step to minimize ``L`` with Λ fixed (detached);
  the adversary φ takes a step to maximize ``L`` with the pair losses fixed (detached), which
  moves weight toward the pairs the extractor currently gets wrong.

Dimension letters: N samples in the batch, E embedding size, K k-means clusters.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdversarialReweighting",
    "Adversary",
    "ArwConfig",
    "EmbeddingClusters",
    "PairLosses",
    "PairwiseLoss",
    "arl_normalize",
    "pair_weights",
    "weighted_pair_loss",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArwConfig:
    """Settings of the adversary.

    Attributes:
        n_clusters: K, k-means clusters of the embedding space (0: no cluster input).
        hidden_dim: hidden width of the adversary MLP (0: a linear adversary, as ARL's).
        lr: Adam learning rate of the adversary.
        recluster_every: refit k-means every this many adversary steps.
        memory_size: recent embeddings kept for k-means.
        warmup_steps: extractor steps with uniform weights before the adversary starts
            (lets the embedding space form first).
        seed: seed of the k-means fits.
    """

    n_clusters: int = 8
    hidden_dim: int = 64
    lr: float = 1e-3
    recluster_every: int = 50
    memory_size: int = 2048
    warmup_steps: int = 0
    seed: int = 0


@dataclass(frozen=True)
class PairLosses:
    """Per-pair losses of a batch.

    Attributes:
        losses: (N, N) binary cross-entropy of every ordered pair (only ``valid`` entries count).
        positive: (N, N) bool, same speaker.
        valid: (N, N) bool, the upper triangle ``i < j`` (each unordered pair once).
        cosine: (N, N) cosine similarities.
    """

    losses: Tensor
    positive: Tensor
    valid: Tensor
    cosine: Tensor


class PairwiseLoss(nn.Module):
    """Pairwise binary cross-entropy on ``α · cos + β`` with learned α (> 0) and β."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -5.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, emb: Tensor, speakers: Tensor) -> PairLosses:
        """emb (N, E), speakers (N,) int -> :class:`PairLosses`."""
        z = F.normalize(emb, dim=-1)
        cos = z @ z.t()
        logits = self.scale.clamp_min(1e-3) * cos + self.bias
        positive = speakers[:, None] == speakers[None, :]
        losses = F.binary_cross_entropy_with_logits(
            logits, positive.to(logits.dtype), reduction="none"
        )
        n = emb.shape[0]
        valid = torch.ones(n, n, dtype=torch.bool, device=emb.device).triu(diagonal=1)
        return PairLosses(losses, positive, valid, cos)


def arl_normalize(w: Tensor) -> Tensor:
    """ARL normalization ``λ_i = 1 + n · w_i / Σ_j w_j``.

    Args:
        w: (N,) non-negative adversary scores (not all zero).

    Returns:
        (N,) weights, each >= 1, summing to 2N.
    """
    n = w.shape[0]
    return 1.0 + n * w / w.sum().clamp_min(1e-12)


def pair_weights(lam: Tensor) -> Tensor:
    """Pair weights ``Λ_ij = λ_i + λ_j``: (N,) -> (N, N)."""
    return lam[:, None] + lam[None, :]


def weighted_pair_loss(pairs: PairLosses, weights: Tensor | None = None) -> Tensor:
    """Balanced, Λ-weighted mean of the pair losses (see the module docstring).

    Args:
        pairs: per-pair losses of the batch.
        weights: (N, N) pair weights Λ; ``None`` = uniform (the baseline).

    Returns:
        Scalar loss. A side with no pairs (e.g. a batch without same-speaker pairs) is left out.
    """
    w = torch.ones_like(pairs.losses) if weights is None else weights
    terms = []
    for side in (pairs.positive, ~pairs.positive):
        m = (side & pairs.valid).to(pairs.losses.dtype)
        if m.sum() > 0:
            terms.append((m * w * pairs.losses).sum() / (m * w).sum())
    return torch.stack(terms).mean()


class Adversary(nn.Module):
    """``w = sigmoid(f(x))``, ``x`` = [normalized embedding, one-hot cluster]: (N, E+K) -> (N,)."""

    def __init__(self, input_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        if hidden_dim > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
            )
        else:
            self.net = nn.Linear(input_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x)).squeeze(-1)


class EmbeddingClusters:
    """k-means over a memory of recent embeddings; assigns one-hot clusters.

    Before the first fit (fewer than K embeddings seen) every sample gets an all-zero row.
    """

    def __init__(self, n_clusters: int, memory_size: int, seed: int = 0) -> None:
        self.n_clusters = n_clusters
        self.memory_size = memory_size
        self.seed = seed
        self.memory: Tensor | None = None
        self.centroids: Tensor | None = None

    def remember(self, z: Tensor) -> None:
        """Add (N, E) normalized, detached embeddings to the memory (oldest dropped)."""
        z = z.detach().cpu().float()
        self.memory = z if self.memory is None else torch.cat([self.memory, z])[-self.memory_size :]

    def refit(self) -> None:
        """Fit k-means on the memory (no-op with fewer than K remembered embeddings)."""
        if self.n_clusters == 0 or self.memory is None or self.memory.shape[0] < self.n_clusters:
            return
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(self.n_clusters, n_init=3, random_state=self.seed).fit(
                self.memory.numpy().astype(np.float64)
            )
        self.centroids = torch.from_numpy(km.cluster_centers_).float()

    def one_hot(self, z: Tensor) -> Tensor:
        """(N, E) -> (N, K) one-hot of the nearest centroid (zeros before the first fit)."""
        if self.n_clusters == 0:
            return z.new_zeros(z.shape[0], 0)
        if self.centroids is None:
            return z.new_zeros(z.shape[0], self.n_clusters)
        c = self.centroids.to(z.device, z.dtype)
        idx = torch.cdist(z, c).argmin(dim=1)
        return F.one_hot(idx, self.n_clusters).to(z.dtype)

    # Any: tensors or None, as torch's state_dict()
    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory, "centroids": self.centroids}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # Any: as state_dict()
        self.memory = state.get("memory")
        self.centroids = state.get("centroids")


class AdversarialReweighting:
    """The adversary, its optimizer and the embedding clusters.

    Use: ``lam = arw.sample_weights(emb)`` to weight the extractor's loss (no gradient to the
    adversary), then ``arw.adversary_step(emb, pairs)`` to move the adversary uphill on the same
    batch with the pair losses detached.

    Args:
        embedding_dim: E.
        config: :class:`ArwConfig`.
    """

    def __init__(self, embedding_dim: int, config: ArwConfig | None = None) -> None:
        self.config = config or ArwConfig()
        self.clusters = EmbeddingClusters(
            self.config.n_clusters, self.config.memory_size, self.config.seed
        )
        self.adversary = Adversary(embedding_dim + self.config.n_clusters, self.config.hidden_dim)
        self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=self.config.lr)
        self.steps = 0

    def _inputs(self, emb: Tensor) -> Tensor:
        z = F.normalize(emb.detach(), dim=-1)
        return torch.cat([z, self.clusters.one_hot(z)], dim=1)

    def sample_weights(self, emb: Tensor) -> Tensor:
        """(N, E) embeddings -> (N,) ARL-normalized weights λ (detached; all 1 during warm-up)."""
        if self.steps < self.config.warmup_steps:
            return torch.ones(emb.shape[0], device=emb.device, dtype=emb.dtype)
        with torch.no_grad():
            return arl_normalize(self.adversary(self._inputs(emb)))

    def adversary_loss(self, emb: Tensor, pairs: PairLosses) -> Tensor:
        """The weighted loss as a function of the adversary only (pair losses detached)."""
        lam = arl_normalize(self.adversary(self._inputs(emb)))
        detached = PairLosses(
            pairs.losses.detach(), pairs.positive, pairs.valid, pairs.cosine.detach()
        )
        return weighted_pair_loss(detached, pair_weights(lam))

    def adversary_step(self, emb: Tensor, pairs: PairLosses) -> float:
        """One gradient-ascent step of the adversary; updates the clusters as scheduled.

        Args:
            emb: (N, E) embeddings of the batch (detached inside).
            pairs: the batch's pair losses (detached inside).

        Returns:
            The weighted loss before the step.
        """
        self.clusters.remember(F.normalize(emb.detach(), dim=-1))
        if self.steps % max(self.config.recluster_every, 1) == 0 or self.clusters.centroids is None:
            self.clusters.refit()
        self.steps += 1
        if self.steps <= self.config.warmup_steps:
            return float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.adversary_loss(emb, pairs)
        (-loss).backward()
        self.optimizer.step()
        return float(loss.detach())

    # Any: nested state dicts of tensors and plain data, as torch's
    def state_dict(self) -> dict[str, Any]:
        """Adversary, optimizer, clusters and step counter (tensors and plain data)."""
        return {
            "adversary": self.adversary.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "clusters": self.clusters.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # Any: as state_dict()
        """Restore :meth:`state_dict`."""
        self.adversary.load_state_dict(state["adversary"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.clusters.load_state_dict(state["clusters"])
        self.steps = int(state["steps"])
