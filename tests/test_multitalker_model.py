"""The separator-transducer-segmenter: loss, streaming parity of its two channels, turns."""

from __future__ import annotations

import pytest
import torch

from fairstream.decoding.hypothesis import Hypothesis
from fairstream.errors import InputDataError
from fairstream.metrics.multitalker import Segment
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)
from fairstream.multitalker import channel_targets
from fairstream.multitalker.model import MultiTalkerStream, MultiTalkerTransducer, turns_of

SOT, EOT, VOCAB = 10, 11, 12


def _model(channels: int = 2, eot_weight: float = 0.0, encoder: str = "lstm",
           seed: int = 0) -> MultiTalkerTransducer:
    kwargs = ({"conv_channels": 8, "num_layers": 2, "hidden_dim": 48, "output_dim": 40}
              if encoder == "lstm" else
              {"conv_channels": 8, "d_model": 32, "num_heads": 2, "ffn_dim": 64,
               "num_layers": 2, "left_context": 4, "output_dim": 40, "subsampling": 4})
    torch.manual_seed(seed)
    base = build_model(ModelConfig(encoder=EncoderConfig(encoder, kwargs),
                                   predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
                                   joiner=JoinerConfig(joint_dim=48), vocab_size=VOCAB,
                                   feature_dim=80))
    return MultiTalkerTransducer(base, channels=channels, separator_dim=16,
                                 eot_weight=eot_weight, sot_id=SOT, eot_id=EOT)


def _session(sid: str = "s") -> list[Segment]:
    return [Segment(sid, "A", 0.0, 0.5, "1 2 3"), Segment(sid, "B", 0.3, 0.9, "4 5"),
            Segment(sid, "A", 0.95, 1.2, "6")]


def _encode(text: str) -> list[int]:
    return [int(w) for w in text.split()]


def test_loss_trains_both_channels_and_the_penalty_raises_it() -> None:
    model = _model()
    x = torch.randn(2, 130, 80)
    lens = torch.tensor([130, 110])
    targets = [channel_targets(_session("a"), _encode, SOT, EOT),
               channel_targets(_session("b")[:2], _encode, SOT, EOT)]
    out = model(x, lens, targets)
    assert out.loss.isfinite() and out.channel_losses.shape == (2,)
    out.loss.backward()
    for sep in (model.down[0], model.down[1], model.up[0], model.up[1]):
        assert sep.weight.grad is not None and sep.weight.grad.abs().sum() > 0
    penalized = _model(eot_weight=5.0)(x, lens, targets)
    # same weights: the bias only costs
    assert float(penalized.loss.detach()) > float(out.loss.detach())
    with pytest.raises(InputDataError, match="need 2 channel targets"):
        model(x, lens, [targets[0][:1], targets[1]])


def test_a_few_steps_fit_one_session() -> None:
    model = _model(eot_weight=1.0)
    x = torch.randn(1, 130, 80)
    lens = torch.tensor([130])
    targets = [channel_targets(_session(), _encode, SOT, EOT)]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss = model(x, lens, targets).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
@pytest.mark.parametrize("chunk", [1, 3, 7, "irregular"])
def test_two_channel_streaming_equals_the_full_decode(encoder: str, chunk: int | str) -> None:
    model = _model(encoder=encoder, seed=1).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 83, 80, generator=g)
    lens = torch.tensor([83, 61])
    full = model.decode(x, lens)
    assert any(h.tokens for s in full for h in s)  # random weights emit tokens
    sizes = [5, 1, 9, 2, 13, 4, 30, 19] if chunk == "irregular" else [int(chunk)] * 83
    stream = MultiTalkerStream(model, batch_size=2)
    start = 0
    for size in sizes:
        if start >= 83:
            break
        piece = x[:, start:start + size]
        piece_lens = (lens - start).clamp(0, size)
        start += size
        stream.push(piece, piece_lens, final=start >= 83)
    if start < 83:
        stream.push(x[:, start:], (lens - start).clamp_min(0), final=True)
    got = stream.hypotheses()
    assert [[h.tokens for h in s] for s in got] == [[h.tokens for h in s] for s in full]
    assert [[h.frames for h in s] for s in got] == [[h.frames for h in s] for s in full]


def test_turn_tokens_cut_a_channel_into_turns() -> None:
    hyp = Hypothesis.from_frames((SOT, 1, 2, EOT, 3, EOT, SOT, 4), (0, 1, 2, 4, 6, 7, 9, 10),
                                 0.0, seconds_per_frame=0.04)
    turns = turns_of(hyp, "s", 1, sot_id=SOT, eot_id=EOT,
                     decode=lambda ids: " ".join(map(str, ids)), frame_s=0.04)
    assert [(t.speaker, t.words) for t in turns] == [("ch1", "1 2"), ("ch1", "3"),
                                                     ("ch1", "4")]
    assert turns[0].start_time == 0.0 and turns[0].end_time == pytest.approx(0.2)
    assert turns[1].start_time == pytest.approx(0.24)
    assert turns[2].start_time == pytest.approx(0.36) and turns[2].end_time == pytest.approx(0.44)
