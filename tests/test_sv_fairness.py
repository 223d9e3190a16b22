"""Group-balancing baselines of speaker-embedding training: balanced sampling, inverse weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet
from test_speaker_model import IDENTITY, TINY, speaker_cuts

from fairstream.errors import InputDataError
from fairstream.losses.arw import pair_weights, weighted_pair_loss
from fairstream.models.speaker import EcapaTdnn
from fairstream.sv.data import SpeakerBatches, SvDataConfig, inverse_group_weights
from fairstream.sv.objective import SpeakerObjective, SpeakerTrainingModel, SvLossConfig
from fairstream.sv.train import load_sv_config, method_name

# speakers spk0..spk5: group "a" has 4 of them, "b" only 2 (the under-represented group)
GROUPS = {"spk0": "a", "spk1": "a", "spk2": "a", "spk3": "a", "spk4": "b", "spk5": "b"}


@pytest.fixture(scope="module")
def cuts(tmp_path_factory: pytest.TempPathFactory) -> CutSet:
    return speaker_cuts(tmp_path_factory.mktemp("voices"))


def _config(balance: str, batches: int = 4) -> SvDataConfig:
    return SvDataConfig(speakers_per_batch=2, utterances_per_speaker=2, crop_frames=40,
                        batches_per_epoch=batches, noise_prob=0.0, balance=balance)  # type: ignore[arg-type]


def test_inverse_group_weights() -> None:
    w = inverse_group_weights(["a", "a", "a", "b"])
    assert w.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert w.mean() == pytest.approx(1.0)
    assert inverse_group_weights(["x", "y"]).tolist() == [1.0, 1.0]


def test_balanced_sampling_evens_out_groups(cuts: CutSet) -> None:
    plain = SpeakerBatches(cuts, IDENTITY, _config("none", 600), seed=0)
    balanced = SpeakerBatches(cuts, IDENTITY, _config("sampling", 600), seed=0, groups=GROUPS)

    def share_b(data: SpeakerBatches) -> float:
        count = Counter(GROUPS[s] for b in data._plan(0) for s in
                        (data.speakers[data.speaker_of_cut[i]] for i in b))
        return count["b"] / sum(count.values())

    assert share_b(plain) == pytest.approx(1 / 3, abs=0.03)
    # each group drawn with equal probability per draw (without replacement within a batch)
    assert share_b(balanced) > 0.42
    batch = next(balanced.batches(0))
    assert len(set(batch.speaker_ids)) == 2 and batch.weights is None
    again = SpeakerBatches(cuts, IDENTITY, _config("sampling", 600), seed=0, groups=GROUPS)
    assert [b.cut_ids for b in again.batches(0)][:5] == [b.cut_ids for b in balanced.batches(0)][:5]


def test_baseline_order_is_unchanged_by_the_balance_option(cuts: CutSet) -> None:
    plain = SpeakerBatches(cuts, IDENTITY, _config("none"), seed=1)
    weighted = SpeakerBatches(cuts, IDENTITY, _config("weights"), seed=1, groups=GROUPS)
    assert [b.cut_ids for b in plain.batches(0)] == [b.cut_ids for b in weighted.batches(0)]
    batch = next(weighted.batches(0))
    assert batch.weights is not None
    expected = [{"a": 0.75, "b": 1.5}[GROUPS[s]] for s in batch.speaker_ids]
    assert batch.weights.tolist() == pytest.approx(expected)
    assert next(plain.batches(0)).weights is None


def test_balance_needs_groups_for_every_speaker(cuts: CutSet) -> None:
    with pytest.raises(InputDataError, match="needs the training speakers' 'accent'"):
        SpeakerBatches(cuts, IDENTITY, _config("sampling"), seed=0)
    partial = {k: v for k, v in GROUPS.items() if k != "spk5"}
    with pytest.raises(InputDataError, match="1 training speaker.*'spk5'"):
        SpeakerBatches(cuts, IDENTITY, _config("weights"), seed=0, groups=partial)


def test_inverse_weights_weight_both_loss_terms(cuts: CutSet) -> None:
    torch.manual_seed(0)
    data = SpeakerBatches(cuts, IDENTITY, _config("weights"), seed=0, groups=GROUPS)
    batch = next(data.batches(0))
    assert batch.weights is not None
    model = SpeakerTrainingModel(EcapaTdnn(TINY), data.num_speakers, SvLossConfig())
    objective = SpeakerObjective(SvLossConfig())
    loss = objective(model.train(), batch).loss
    out = model(batch.features, batch.feature_lens, batch.speaker_index)
    per = torch.nn.functional.cross_entropy(model.head.logits(out.embeddings, batch.speaker_index),
                                            batch.speaker_index, reduction="none")
    w = batch.weights
    expected = (per * w).sum() / w.sum() + weighted_pair_loss(out.pairs, pair_weights(w))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # evaluation ignores the weights
        plain = objective(model.eval(), batch).loss
        ref = model(batch.features, batch.feature_lens, batch.speaker_index)
    torch.testing.assert_close(plain, ref.aam_loss + weighted_pair_loss(ref.pairs))


def test_config_and_method_names(tmp_path: Path) -> None:
    assert method_name(load_sv_config()) == "baseline"
    assert method_name(load_sv_config(arw=True)) == "arw"
    cfg = load_sv_config(overrides=["data.balance=sampling"])
    assert method_name(cfg) == "balanced_sampling" and cfg.data.balance_by == "accent"
    assert method_name(load_sv_config(overrides=["data.balance=weights"])) == "inverse_weights"
    with pytest.raises(InputDataError, match="balance"):
        load_sv_config(overrides=["data.balance=often"])


def test_weights_mean_one_over_speakers() -> None:
    rng = np.random.default_rng(0)
    groups = rng.choice(["x", "y", "z"], size=50, p=[0.8, 0.15, 0.05]).tolist()
    w = inverse_group_weights(groups)
    assert w.mean() == pytest.approx(1.0)
    sums = {g: w[np.asarray(groups) == g].sum() for g in set(groups)}
    assert all(v == pytest.approx(50 / 3) for v in sums.values())


def test_degradation_crops_and_adds_noise_deterministically() -> None:
    from fairstream.sv.embed import Degradation, degrade_features

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(300, 80)).astype(np.float32),
             rng.normal(size=(50, 80)).astype(np.float32)]
    keys = ["test/a.flac", "test/b.flac"]
    crop = list(degrade_features(feats, keys, Degradation(crop_seconds=1.0)))
    assert [x.shape[0] for x in crop] == [100, 50]  # shorter utterances stay whole
    assert any(np.array_equal(crop[0], feats[0][s:s + 100]) for s in range(201))
    noisy = list(degrade_features(feats, keys, Degradation(crop_seconds=1.0, snr_db=0.0)))
    again = list(degrade_features(feats, keys, Degradation(crop_seconds=1.0, snr_db=0.0)))
    assert all(np.array_equal(a, b) for a, b in zip(noisy, again))
    speech = np.exp(crop[0].astype(np.float64)).sum()
    assert np.exp(noisy[0].astype(np.float64)).sum() == pytest.approx(2 * speech, rel=1e-4)
    other = list(degrade_features(feats, keys, Degradation(crop_seconds=1.0, seed=1)))
    assert not np.array_equal(other[0], crop[0])
    with pytest.raises(InputDataError, match="crop_seconds"):
        Degradation(crop_seconds=0.0)


def test_paired_min_dcf_difference() -> None:
    from fairstream.sv.compare import bootstrap_min_dcf_difference

    rng = np.random.default_rng(0)
    n_spk, per = 30, 20
    spk_a = np.repeat(np.arange(n_spk), per)
    labels = (rng.random(spk_a.size) < 0.3).astype(int)
    spk_b = np.where(labels == 1, spk_a, (spk_a + 1 + rng.integers(0, n_spk - 1, spk_a.size))
                     % n_spk)
    a = rng.normal(size=spk_a.size) + 2.0 * labels
    same = bootstrap_min_dcf_difference(a, a, labels, spk_a, spk_b, n_boot=50)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    better = bootstrap_min_dcf_difference(a, a + 2.0 * labels, labels, spk_a, spk_b,
                                          p_target=0.05, n_boot=200)
    assert better.estimate < 0 and better.high < 0
