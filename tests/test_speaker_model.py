"""Speaker extractor, AAM-softmax, speaker batches, a few training steps through the one loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from fairstream.features.fbank import Cmvn
from fairstream.losses.arw import AdversarialReweighting, ArwConfig
from fairstream.models.speaker import AAMSoftmax, EcapaTdnn, SpeakerModelConfig
from fairstream.sv.data import SpeakerBatches, SvDataConfig
from fairstream.sv.objective import ArwHook, SpeakerObjective, SpeakerTrainingModel, SvLossConfig
from fairstream.training.config import OptimConfig, ScheduleConfig
from fairstream.training.loop import fit

TINY = SpeakerModelConfig(channels=32, embedding_dim=16, se_bottleneck=8, attention_dim=8)


def speaker_cuts(root: Path, n_speakers: int = 6, n_utts: int = 4) -> CutSet:
    """Harmonic 'voices': each speaker has its own fundamental and formant-like emphasis."""
    recs, sups = [], []
    for s in range(n_speakers):
        f0 = 90.0 + 35.0 * s
        for u in range(n_utts):
            rng = np.random.default_rng(100 * s + u)
            t = np.arange(int(16000 * rng.uniform(1.0, 1.6))) / 16000
            f = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
            phase = 2 * np.pi * np.cumsum(f) / 16000
            x = sum(np.sin(k * phase) / k ** (0.5 + 0.2 * s % 1.5) for k in range(1, 12))
            x = 0.1 * x / np.abs(x).max() + 0.003 * rng.standard_normal(t.size)
            path = root / f"spk{s}" / f"spk{s}-{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), x.astype(np.float32), 16000)
            rec = Recording.from_file(path, recording_id=f"spk{s}-{u}")
            recs.append(rec)
            sups.append(SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0,
                                           duration=rec.duration, speaker=f"spk{s}", text="x"))
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs),
        supervisions=SupervisionSet.from_segments(sups),
    ).trim_to_supervisions().to_eager()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions run far faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cuts(tmp_path_factory: pytest.TempPathFactory) -> CutSet:
    return speaker_cuts(tmp_path_factory.mktemp("voices"))


IDENTITY = Cmvn(np.full(80, 0.0), np.full(80, 5.0))
DATA = SvDataConfig(speakers_per_batch=6, utterances_per_speaker=2, crop_frames=60,
                    batches_per_epoch=4)


def test_extractor_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    model = EcapaTdnn(TINY).eval()
    x = torch.randn(2, 90, 80)
    with torch.no_grad():
        both = model(x, torch.tensor([90, 60]))
        alone = model(x[1:, :60], torch.tensor([60]))
    assert both.shape == (2, 16)
    torch.testing.assert_close(both[1], alone[0], atol=1e-4, rtol=1e-4)


def test_default_extractor_is_192_dimensional() -> None:
    model = EcapaTdnn(SpeakerModelConfig()).eval()
    assert model(torch.randn(1, 50, 80), torch.tensor([50])).shape == (1, 192)


def test_aam_margin_penalizes_the_true_class() -> None:
    torch.manual_seed(0)
    head = AAMSoftmax(4, 3, margin=0.3, scale=10.0)
    emb = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        plain = head.logits(emb)
        margin = head.logits(emb, labels)
        rows = torch.arange(5)
        cos = plain[rows, labels] / 10.0
        theta = torch.acos(cos.clamp(-1, 1))
        expected = torch.where(theta + 0.3 < math.pi, 10.0 * torch.cos(theta + 0.3),
                               margin[rows, labels])
    torch.testing.assert_close(margin[rows, labels], expected, atol=1e-4, rtol=1e-4)
    assert bool((margin[rows, labels] < plain[rows, labels]).all())
    off = torch.ones_like(plain, dtype=torch.bool)
    off[rows, labels] = False
    torch.testing.assert_close(margin[off], plain[off])


def test_speaker_batches_are_balanced_and_deterministic(cuts: CutSet) -> None:
    data = SpeakerBatches(cuts, IDENTITY, DATA, seed=3)
    first = list(data.batches(0))
    assert len(first) == 4
    b = first[0]
    assert b.features.shape == (12, 60, 80)
    counts = np.bincount(b.speaker_index.numpy(), minlength=6)
    assert counts.tolist() == [2] * 6
    resumed = list(data.batches(0, skip=2))
    torch.testing.assert_close(resumed[0].features, first[2].features)
    other_epoch = next(iter(data.batches(1)))
    assert (other_epoch.cut_ids != first[0].cut_ids
            or not torch.equal(other_epoch.features, first[0].features))


def test_ranks_take_disjoint_shares_of_the_epoch(cuts: CutSet) -> None:
    single = [b.cut_ids for b in SpeakerBatches(cuts, IDENTITY, DATA, seed=3).batches(0)]
    shards = [
        [b.cut_ids for b in SpeakerBatches(cuts, IDENTITY, DATA, seed=3, rank=r,
                                            world_size=2).batches(0)]
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 2
    assert shards[0] == single[0::2] and shards[1] == single[1::2]


def test_noise_augmentation_adds_power() -> None:
    speech = np.log(np.full((60, 80), 1.0, dtype=np.float32))
    data = SpeakerBatches.__new__(SpeakerBatches)  # only the augmentation under test
    data.config = SvDataConfig(crop_frames=60, noise_prob=1.0, snr_db=(10.0, 10.0))
    data.noises = [np.full((100, 80), 2.0)]
    data.feats = [speech.astype(np.float16)] * 4
    for seed in range(6):  # colored noise or babble: the added total is 10 % of the speech power
        out = data._augment(speech, np.random.default_rng(seed), 0)
        assert np.exp(out).sum() == pytest.approx(1.1 * np.exp(speech).sum(), rel=1e-4)


def _train(cuts: CutSet, out: Path, arw: bool, steps: int = 24) -> list[float]:
    torch.manual_seed(0)
    data = SpeakerBatches(cuts, IDENTITY, DATA, seed=0)
    model = SpeakerTrainingModel(EcapaTdnn(TINY), data.num_speakers,
                                 SvLossConfig(aam_margin=0.1, aam_scale=10.0))
    adversary = None
    if arw:
        adversary = AdversarialReweighting(TINY.embedding_dim,
                                           ArwConfig(n_clusters=2, hidden_dim=8, lr=1e-2))
    objective = SpeakerObjective(SvLossConfig(), adversary)
    hooks = [ArwHook(objective)] if arw else []
    fit(model=model, objective=objective, train_data=data,
        optim=OptimConfig(lr=3e-3, warmup_steps=2, schedule="constant", weight_decay=0.0),
        schedule=ScheduleConfig(max_steps=steps, log_interval=4, checkpoint_interval=0,
                                average_last_n=1),
        out_dir=out, run_config={"kind": "speaker-test"}, hooks=hooks, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if arw:
        assert adversary is not None and adversary.steps == steps
        assert any("lambda_max" in r for r in records)
    return [r["loss"] for r in records if r.get("loss") is not None]


@pytest.mark.parametrize("arw", [False, True], ids=["baseline", "arw"])
def test_a_few_training_steps_reduce_the_loss(cuts: CutSet, tmp_path: Path, arw: bool) -> None:
    losses = _train(cuts, tmp_path / "exp", arw)
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
