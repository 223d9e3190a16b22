"""The causal ContextNet encoder: the running-mean squeeze-excitation, causality, lengths,
options, size against the LSTM baseline, and one training step of a tiny transducer.

Streaming parity, state batching and foreign states are checked for every encoder in
``tests/test_encoder_contract.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODER_OPTIONS, ENCODERS
from fairstream.models.encoders.contextnet import (
    ContextNetEncoder,
    ContextNetEncoderOptions,
    ContextNetEncoderState,
    causal_running_mean,
)
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)
from fairstream.training.config import load_config

TOL = 1e-5
RECIPES = Path(__file__).parents[1] / "src" / "fairstream" / "recipes"
SMALL: dict[str, int] = {"channels": 16, "num_blocks": 4, "layers_per_block": 2, "se_reduction": 4,
         "output_dim": 12}


def small(subsampling: int = 8, seed: int = 0, **kw: int) -> ContextNetEncoder:
    torch.manual_seed(seed)
    return ContextNetEncoder(40, **{**SMALL, "subsampling": subsampling, **kw}).eval()


# --------------------------------------------------------------------------- running mean


def test_running_mean_at_each_frame_is_the_mean_of_frames_one_to_t() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 9, 5)
    lens = torch.tensor([9, 6, 1])
    mean, total, count = causal_running_mean(
        x, lens, torch.zeros(3, 5), torch.zeros(3, dtype=torch.long)
    )
    for b in range(3):
        for t in range(int(lens[b])):
            torch.testing.assert_close(mean[b, t], x[b, : t + 1].mean(0))
        torch.testing.assert_close(total[b], x[b, : int(lens[b])].sum(0))
    assert count.tolist() == [9, 6, 1]


def test_running_mean_ignores_padding_and_continues_across_chunks() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 10, 4)
    lens = torch.tensor([10, 7])
    whole, _, _ = causal_running_mean(x, lens, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    # padding frames do not count: the mean stays that of the valid frames before them
    for t in range(7, 10):
        torch.testing.assert_close(whole[1, t], x[1, :7].mean(0))
    poisoned = x.clone()
    poisoned[1, 7:] = 1e6
    again, _, _ = causal_running_mean(
        poisoned, lens, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    )
    torch.testing.assert_close(again[1], whole[1])
    # continuing from a running sum and count gives the mean over the whole past
    first, s, n = causal_running_mean(
        x[:, :4], torch.tensor([4, 4]), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    )
    second, _, n2 = causal_running_mean(x[:, 4:], lens - 4, s, n)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    assert n2.tolist() == [10, 7]


def test_a_padded_item_equals_itself_alone() -> None:
    enc = small()
    torch.manual_seed(2)
    x = torch.randn(2, 53, 40)
    x[1, 30:] = 100.0  # padding with large values must not reach the short item
    with torch.no_grad():
        batch = enc(x, torch.tensor([53, 30]))
        alone = enc(x[1:, :30], torch.tensor([30]))
    assert batch.y_lens.tolist() == [7, 4]
    torch.testing.assert_close(batch.y[1, :4], alone.y[0], atol=TOL, rtol=TOL)


# --------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("subsampling", [2, 4, 8])
def test_output_lengths_are_ceil_of_input_over_subsampling(subsampling: int) -> None:
    enc = small(subsampling)
    lens = torch.tensor([1, 2, 7, 8, 9, 33])
    with torch.no_grad():
        out = enc(torch.randn(6, 33, 40), lens)
    expected = [-(-n // subsampling) for n in lens.tolist()]
    assert out.y_lens.tolist() == expected
    assert out.y.shape == (6, max(expected), 12)


def test_an_encoder_frame_sees_no_later_feature_frame() -> None:
    enc = small(8)
    torch.manual_seed(3)
    x = torch.randn(1, 64, 40)
    with torch.no_grad():
        ref = enc(x, torch.tensor([64])).y
        for cut in (1, 8, 17, 40):
            changed = x.clone()
            changed[:, cut:] = torch.randn(1, 64 - cut, 40)
            y = enc(changed, torch.tensor([64])).y
            # frame j depends on feature frames <= 8 j
            keep = (cut - 1) // 8 + 1
            torch.testing.assert_close(y[:, :keep], ref[:, :keep])
            assert not torch.allclose(y[:, keep:], ref[:, keep:])


def test_bad_options_input_and_states_are_named_errors() -> None:
    with pytest.raises(InputDataError, match="num_blocks must be >= 3"):
        ContextNetEncoder(40, subsampling=8, num_blocks=2)
    with pytest.raises(ValueError, match="subsampling must be 2, 4 or 8"):
        ContextNetEncoderOptions(subsampling=3)
    with pytest.raises(ValueError, match="dropout"):
        ContextNetEncoderOptions(dropout=1.0)
    enc = small()
    with pytest.raises(InputDataError, match="empty input"):
        enc(torch.zeros(2, 5, 40), torch.tensor([5, 0]))
    with pytest.raises(InputDataError, match=r"\(B, T, 40\)"):
        enc(torch.zeros(1, 5, 80), torch.tensor([5]))
    other = small(channels=8)
    with pytest.raises(InputDataError, match="another shape"):
        enc.stream(torch.zeros(1, 3, 40), torch.tensor([3]), other.init_state(1))
    with pytest.raises(InputDataError, match="stack of no"):
        ContextNetEncoderState.stack([])


def test_zero_frames_leave_the_state_unchanged() -> None:
    enc = small()
    torch.manual_seed(4)
    with torch.no_grad():
        _, _, state = enc.stream(torch.randn(2, 5, 40), torch.tensor([5, 3]))
        y, y_lens, after = enc.stream(torch.zeros(2, 0, 40), torch.tensor([0, 0]), state)
    assert y.shape == (2, 0, 12) and y_lens.tolist() == [0, 0]
    for a, b in zip(dataclasses.astuple(state), dataclasses.astuple(after)):
        for ta, tb in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(ta, tb)


def test_parameter_count_follows_the_layout() -> None:
    f, c, k, r, d, blocks, layers = 40, 16, 5, 4, 12, 4, 2
    enc = small(8)
    sep_first = f * k + f * c + c + 2 * c  # depthwise (no bias), pointwise, LayerNorm
    sep = c * k + c * c + c + 2 * c
    se = c * (c // r) + c // r + (c // r) * c + c
    residual_first = f * c + c
    residual_strided = c * c + c  # blocks 1 and 2 change the frame rate, block 3 does not
    expected = (
        sep_first + (layers - 1) * sep + se + residual_first
        + 2 * (layers * sep + se + residual_strided)
        + (blocks - 3) * (layers * sep + se)
        + c * d + d
    )
    assert sum(p.numel() for p in enc.parameters()) == expected


def _lstm_demo_params() -> int:
    lstm = ENCODERS["lstm"](80, subsampling=8, conv_channels=32, num_layers=3, hidden_dim=256,
                            output_dim=256)
    return sum(p.numel() for p in lstm.parameters())


def test_recipe_changes_only_the_encoder_and_matches_the_lstm_size() -> None:
    ours = yaml.safe_load((RECIPES / "contextnet_transducer.yaml").read_text())
    base = yaml.safe_load((RECIPES / "lstm_transducer.yaml").read_text())
    enc = ours["model"].pop("encoder")
    base["model"].pop("encoder")
    assert ours == base
    assert enc["name"] == "contextnet" and enc["kwargs"]["output_dim"] == 256
    config = load_config(RECIPES / "contextnet_transducer.yaml")
    assert config.model.encoder.name == "contextnet"
    model = ENCODERS["contextnet"](80, **enc["kwargs"])
    params = sum(p.numel() for p in model.parameters())
    lstm = _lstm_demo_params()
    assert abs(params - lstm) <= 0.1 * lstm, (params, lstm)
    # the options' defaults are the recipe's encoder
    assert dataclasses.asdict(ENCODER_OPTIONS["contextnet"]()) == enc["kwargs"]


def test_training_step_is_finite_and_reaches_every_encoder_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(
        encoder=EncoderConfig("contextnet", {**SMALL, "subsampling": 4, "output_dim": 32}),
        predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=12,
        ctc_weight=0.3,
    ))
    model.train()
    feats = torch.randn(3, 50, 80)
    feat_lens = torch.tensor([50, 33, 20])
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    token_lens = torch.tensor([4, 2, 1])
    out = model(feats, feat_lens, tokens, token_lens)
    assert out.encoder_lens.tolist() == [13, 9, 5]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert isinstance(model.encoder, ContextNetEncoder)
    missing = [
        n for n, p in model.encoder.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_streaming_recognizer_final_result_equals_offline_greedy(tmp_path: Path) -> None:
    from test_streaming import offline_greedy, run_stream, synthetic_audio

    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.features.fbank import compute_cmvn, compute_fbank
    from fairstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["hello world"], tmp_path, model_type="char")
    cmvn = compute_cmvn([compute_fbank(synthetic_audio(2.0, seed=s)) for s in range(2)])
    torch.manual_seed(0)
    model = build_model(ModelConfig(
        encoder=EncoderConfig("contextnet", {**SMALL, "subsampling": 4, "output_dim": 48}),
        predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=tokenizer.vocab_size,
    )).eval()
    audio = synthetic_audio(1.37, seed=11)
    expected = offline_greedy(model, audio, cmvn, max_symbols=2)
    assert len(expected) > 3
    for chunk_ms, chunk_samples in ((160, 1013), (30, 77)):
        rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms,
                                  max_symbols_per_frame=2)
        _, final = run_stream(rec, audio, chunk_samples)
        assert final.is_final and final.tokens == expected
