"""Adversarial reweighting: ARL normalization, the pair-weight rule, the min-max directions."""

from __future__ import annotations

import pytest
import torch

from fairstream.losses.arw import (
    AdversarialReweighting,
    ArwConfig,
    EmbeddingClusters,
    PairLosses,
    PairwiseLoss,
    arl_normalize,
    pair_weights,
    weighted_pair_loss,
)

NORMALIZE_CASES = [
    ([1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]),
    ([1.0, 0.0, 0.0, 0.0], [5.0, 1.0, 1.0, 1.0]),
    ([0.2, 0.6], [1.5, 2.5]),
]


@pytest.mark.parametrize(("w", "expected"), NORMALIZE_CASES)
def test_arl_normalization(w, expected) -> None:
    lam = arl_normalize(torch.tensor(w))
    assert lam.tolist() == pytest.approx(expected)
    n = len(w)
    assert float(lam.sum()) == pytest.approx(2 * n)  # 1 + n*w/Σw sums to 2n
    assert bool((lam >= 1).all())


def test_pair_weight_is_sum_of_sample_weights() -> None:
    lam = torch.tensor([1.0, 2.0, 4.0])
    w = pair_weights(lam)
    for i in range(3):
        for j in range(3):
            assert float(w[i, j]) == float(lam[i] + lam[j])


def test_uniform_weights_give_the_plain_balanced_mean() -> None:
    torch.manual_seed(0)
    emb = torch.randn(6, 8)
    spk = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        pairs = PairwiseLoss()(emb, spk)
    upper = pairs.valid
    pos = pairs.losses[pairs.positive & upper].mean()
    neg = pairs.losses[~pairs.positive & upper].mean()
    assert float(weighted_pair_loss(pairs)) == pytest.approx(float((pos + neg) / 2), rel=1e-6)
    # constant λ is the same as no weights
    uniform = pair_weights(torch.full((6,), 2.0))
    unweighted = float(weighted_pair_loss(pairs))
    assert float(weighted_pair_loss(pairs, uniform)) == pytest.approx(unweighted)


def test_weighted_loss_by_hand() -> None:
    # 3 samples: pairs (0,1) positive with loss 1, (0,2) negative loss 2, (1,2) negative loss 4
    losses = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]])
    positive = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    valid = torch.ones(3, 3, dtype=torch.bool).triu(1)
    pairs = PairLosses(losses, positive, valid, torch.zeros(3, 3))
    lam = torch.tensor([1.0, 3.0, 2.0])  # Λ01 = 4, Λ02 = 3, Λ12 = 5
    expected = 0.5 * 1.0 + 0.5 * (3 * 2.0 + 5 * 4.0) / (3 + 5)
    assert float(weighted_pair_loss(pairs, pair_weights(lam))) == pytest.approx(expected)


def _hard_and_easy_batch(seed: int = 0):
    """Speakers 0-3 well separated; speakers 4-5 share a direction (hard impostors)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(8)[:6].clone()
    centers[5] = centers[4] + 0.05 * torch.randn(8, generator=g)
    spk = torch.arange(6).repeat_interleave(3)
    emb = centers[spk] + 0.02 * torch.randn(18, 8, generator=g)
    return emb, spk


def test_adversary_ascends_and_upweights_hard_samples() -> None:
    torch.manual_seed(0)
    emb, spk = _hard_and_easy_batch()
    with torch.no_grad():
        pairs = PairwiseLoss()(emb, spk)
    arw = AdversarialReweighting(8, ArwConfig(n_clusters=3, hidden_dim=16, lr=0.05))
    before = arw.adversary_loss(emb, pairs).item()
    lam0 = arw.sample_weights(emb)
    for _ in range(30):
        arw.adversary_step(emb, pairs)
    after = arw.adversary_loss(emb, pairs).item()
    assert after > before, "the adversary maximizes the weighted loss"
    lam = arw.sample_weights(emb)
    hard = spk >= 4
    assert float(lam[hard].mean()) > float(lam[~hard].mean())
    assert float(lam[hard].mean()) > float(lam0[hard].mean())
    assert float(lam.sum()) == pytest.approx(2 * len(lam), rel=1e-5)


def test_extractor_gradient_descends_the_weighted_loss() -> None:
    torch.manual_seed(0)
    emb, spk = _hard_and_easy_batch()
    emb = emb.clone().requires_grad_(True)
    loss_fn = PairwiseLoss()
    arw = AdversarialReweighting(8, ArwConfig(n_clusters=0, hidden_dim=0))
    lam = arw.sample_weights(emb)
    assert not lam.requires_grad, "weights are constants for the extractor"
    loss = weighted_pair_loss(loss_fn(emb, spk), pair_weights(lam))
    loss.backward()
    with torch.no_grad():
        stepped = emb - 0.05 * emb.grad
        assert float(weighted_pair_loss(loss_fn(stepped, spk), pair_weights(lam))) < loss.item()


def test_warmup_keeps_uniform_weights_and_state_round_trips() -> None:
    emb, spk = _hard_and_easy_batch()
    with torch.no_grad():
        pairs = PairwiseLoss()(emb, spk)
    arw = AdversarialReweighting(8, ArwConfig(n_clusters=2, warmup_steps=2))
    assert arw.sample_weights(emb).tolist() == [1.0] * 18
    for _ in range(4):
        arw.adversary_step(emb, pairs)
    other = AdversarialReweighting(8, ArwConfig(n_clusters=2, warmup_steps=2))
    other.load_state_dict(arw.state_dict())
    assert torch.equal(other.sample_weights(emb), arw.sample_weights(emb))
    assert other.steps == 4


def test_clusters_one_hot() -> None:
    c = EmbeddingClusters(2, memory_size=100)
    z = torch.cat([torch.ones(5, 2) + 0.01 * torch.randn(5, 2), -torch.ones(5, 2)])
    assert c.one_hot(z).sum() == 0  # before any fit
    c.remember(z)
    c.refit()
    oh = c.one_hot(z)
    assert oh.sum(1).tolist() == [1.0] * 10
    assert (oh[:5].argmax(1) == oh[0].argmax()).all() and oh[5].argmax() != oh[0].argmax()
