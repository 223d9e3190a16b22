"""Streaming Conformer encoder: what a frame may see (chunk, left chunks, lookahead), streaming
parity with and without lookahead, options, states, latency, size and one training step.

The generic contract (parity for chunks of 1, 3, 7 frames, independent streams, stack /
select, foreign states) is checked for every encoder in tests/test_encoder_contract.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor

from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODERS
from fairstream.models.encoders.conformer import (
    ConformerEncoder,
    ConformerEncoderOptions,
    algorithmic_latency_ms,
)
from fairstream.models.encoders.lstm import LSTMEncoder
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)

TOL = 1e-5
FEATS = 40
RECIPES = Path(__file__).resolve().parents[1] / "src" / "fairstream" / "recipes"


def small(seed: int = 0, **options: object) -> ConformerEncoder:
    base: dict[str, object] = dict(subsampling=4, conv_channels=8, d_model=32, num_heads=2,
                                   ffn_dim=48, num_layers=2, conv_kernel=3, chunk_size=3,
                                   left_chunks=1, lookahead=2, output_dim=24)
    base.update(options)
    torch.manual_seed(seed)
    return ConformerEncoder(FEATS, **base).eval()  # type: ignore[arg-type]


def encode(enc: ConformerEncoder, x: Tensor) -> Tensor:
    with torch.no_grad():
        return enc(x[None], torch.tensor([x.shape[0]])).y[0]


def stream(enc: ConformerEncoder, x: Tensor, size: int) -> Tensor:
    """Feed one utterance in chunks of ``size`` frames, then a final empty call."""
    state = None
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], size):
            chunk = x[start : start + size]
            y, y_lens, state = enc.stream(chunk[None], torch.tensor([chunk.shape[0]]), state)
            outs.append(y[0, : int(y_lens[0])])
        y, y_lens, state = enc.stream(x.new_zeros(1, 0, FEATS), torch.tensor([0]), state,
                                      final=True)
    assert state is not None and int(state.frames_in[0]) == x.shape[0]
    return torch.cat(outs + [y[0, : int(y_lens[0])]])


def changed_frames(enc: ConformerEncoder, x: Tensor, lo: int, hi: int) -> set[int]:
    """Encoder frames whose output changes when feature frames ``lo:hi`` are perturbed."""
    y = encode(enc, x)
    x2 = x.clone()
    x2[lo:hi] += 3.0 * torch.randn_like(x2[lo:hi])
    diff = (encode(enc, x2) - y).abs().amax(1)
    return {int(j) for j in torch.nonzero(diff > 1e-6).flatten()}


# --------------------------------------------------------------------------- attention mask


@pytest.mark.parametrize("layers", [1, 3])
def test_no_frame_sees_beyond_its_chunk_and_lookahead(layers: int) -> None:
    """Perturbing feature frames from ``cut`` on changes no encoder frame whose chunk and
    lookahead end before ``cut`` (the lookahead does not grow with depth), and does change
    the frames whose lookahead reaches ``cut``."""
    enc = small(num_layers=layers)
    sub, s, r = 4, 3, 2
    torch.manual_seed(1)
    x = torch.randn(120, FEATS)  # 30 encoder frames
    for cut_frame in (9, 13, 20):  # encoder frame whose first feature frame is perturbed
        # front-end frame k uses feature frames <= k * sub: perturb from that of cut_frame
        changed = changed_frames(enc, x, cut_frame * sub, x.shape[0])
        # frame j uses front-end frames up to the end of its chunk plus the lookahead
        last_used = {j: (j // s + 1) * s + r - 1 for j in range(30)}
        assert not {j for j in changed if last_used[j] < cut_frame}
        assert {j for j, last in last_used.items() if last >= cut_frame} <= changed
        # the declared right_context bounds it
        assert all((j + 1 + enc.right_context) * sub - 1 >= cut_frame * sub for j in changed)


def test_no_frame_sees_before_its_left_chunks() -> None:
    """With one layer and a convolution over 2 frames, frame ``j`` depends on the front-end
    frames its attention sees (from ``left_chunks`` chunks before its own on) and on those
    that frame ``j - 1`` sees (the convolution follows the attention), and on no others."""
    enc = small(num_layers=1, left_chunks=2, lookahead=0, conv_kernel=2)
    sub, s, left = 4, 3, 2
    torch.manual_seed(2)
    x = torch.randn(160, FEATS)  # 40 encoder frames
    for k in (5, 11, 17):
        # feature frame 4k - 3 reaches front-end frame k only (frame k uses 4k - 6 .. 4k)
        changed = changed_frames(enc, x, k * sub - 3, k * sub - 2)
        start = [max(0, (j // s - left) * s) for j in range(40)]
        first_seen = {j: min(start[j], start[max(j - 1, 0)]) for j in range(40)}
        last_seen = {j: (j // s + 1) * s - 1 for j in range(40)}
        expected = {j for j in range(40) if first_seen[j] <= k <= last_seen[j]}
        assert changed == expected, k


def test_left_context_is_cut_at_the_padding_of_a_shorter_item() -> None:
    """Frames past an item's length are keys for no valid frame: the batch pads the item
    and the result equals the item alone."""
    enc = small(left_chunks=3)
    torch.manual_seed(3)
    x = torch.randn(2, 90, FEATS)
    lens = torch.tensor([90, 53])
    with torch.no_grad():
        out = enc(x, lens)
        x[1, 53:] = 1e3
        again = enc(x, lens)
    alone = encode(enc, x[1, :53])
    n = int(out.y_lens[1])
    torch.testing.assert_close(out.y[1, :n], alone, atol=TOL, rtol=TOL)
    torch.testing.assert_close(again.y[1, :n], alone, atol=TOL, rtol=TOL)
    assert out.y_lens.tolist() == [23, 14]


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(
    "chunk_size, left_chunks, lookahead",
    [(1, 0, 0), (4, 2, 0), (3, 1, 2), (2, 3, 5)],
    ids=["frame-chunks", "no-lookahead", "lookahead", "lookahead-over-a-chunk"],
)
@pytest.mark.parametrize("feed", [1, 16, 37])
def test_streaming_equals_the_full_pass(
    chunk_size: int, left_chunks: int, lookahead: int, feed: int
) -> None:
    enc = small(seed=4, chunk_size=chunk_size, left_chunks=left_chunks, lookahead=lookahead,
                conv_kernel=5)
    torch.manual_seed(5)
    x = torch.randn(101, FEATS)
    full = encode(enc, x)
    streamed = stream(enc, x, feed)
    assert streamed.shape == full.shape == (26, 24)
    torch.testing.assert_close(streamed, full, atol=TOL, rtol=TOL)


def test_stream_holds_back_each_chunk_until_its_lookahead_arrived() -> None:
    enc = small(chunk_size=3, lookahead=2)
    assert enc.right_context == 4
    state = None
    emitted = 0
    with torch.no_grad():
        for frames in range(4, 84, 4):  # one encoder frame per call
            y, y_lens, state = enc.stream(torch.randn(1, 4, FEATS), torch.tensor([4]), state)
            emitted += int(y_lens[0])
            front = frames // 4
            assert emitted == max(0, (front - 2) // 3 * 3), frames
        y, y_lens, state = enc.stream(torch.zeros(1, 0, FEATS), torch.tensor([0]), state,
                                      final=True)
    assert emitted + int(y_lens[0]) == 20 and int(state.frames_out[0]) == 20


def test_a_foreign_or_misshaped_state_is_refused() -> None:
    enc = small()
    lstm = LSTMEncoder(FEATS, conv_channels=8, num_layers=1, hidden_dim=16, output_dim=16)
    x = torch.zeros(1, 4, FEATS)
    with pytest.raises(InputDataError, match="LSTMEncoderState"):
        enc.stream(x, torch.tensor([4]), lstm.init_state(1))  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="differently shaped"):
        enc.stream(x, torch.tensor([4]), small(left_chunks=2).init_state(1))
    with pytest.raises(InputDataError, match="no encoder states"):
        enc.stack_states([])


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options, message",
    [
        ({"subsampling": 2}, "subsampling must be 4 or 8"),
        ({"num_heads": 3}, "must divide d_model"),
        ({"conv_kernel": 1}, "conv_kernel must be >= 2"),
        ({"lookahead": -1}, "lookahead must be >= 0"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_options_are_named_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConformerEncoderOptions(**options)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=message):
        ConformerEncoder(80, **options)  # type: ignore[arg-type]


def test_algorithmic_latency() -> None:
    assert algorithmic_latency_ms(4) == 320.0
    assert algorithmic_latency_ms(4, lookahead=1, subsampling=4) == 200.0
    defaults = ConformerEncoderOptions()
    assert algorithmic_latency_ms(defaults.chunk_size, defaults.lookahead,
                                  defaults.subsampling) == 320.0
    with pytest.raises(ValueError, match="chunk_size"):
        algorithmic_latency_ms(0)


# --------------------------------------------------------------------------- size, training


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_recipe_encoder_is_the_size_of_the_lstm_recipe_encoder() -> None:
    recipes = {name: yaml.safe_load((RECIPES / f"{name}_transducer.yaml").read_text())
               for name in ("lstm", "conformer")}
    sizes = {}
    for name, recipe in recipes.items():
        encoder = recipe["model"].pop("encoder")
        assert encoder["name"] == name
        sizes[name] = _params(ENCODERS[name](80, **encoder["kwargs"]))
    # the one other difference: the learning rate, chosen on dev (docs/recipes.md)
    assert recipes["conformer"]["optim"].pop("lr") < recipes["lstm"]["optim"].pop("lr")
    assert recipes["lstm"] == recipes["conformer"]  # the rest of the recipe is the same
    assert abs(sizes["conformer"] / sizes["lstm"] - 1) <= 0.10, sizes
    assert sizes["conformer"] == _params(ConformerEncoder(80))  # the defaults are that size


def test_one_training_step_reaches_every_encoder_parameter() -> None:
    torch.manual_seed(0)
    kwargs = dict(subsampling=4, conv_channels=8, d_model=32, num_heads=2, ffn_dim=48,
                  num_layers=2, conv_kernel=5, chunk_size=2, left_chunks=1, lookahead=1,
                  output_dim=32)
    model = build_model(ModelConfig(
        encoder=EncoderConfig("conformer", kwargs),
        predictor=PredictorConfig(embed_dim=16, hidden_dim=16),
        joiner=JoinerConfig(joint_dim=24), vocab_size=12, ctc_weight=0.3,
    ))
    model.train()
    feats = torch.randn(3, 50, 80)
    out = model(feats, torch.tensor([50, 33, 20]),
                torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]]), torch.tensor([4, 2, 1]))
    assert out.encoder_lens.tolist() == [13, 9, 5]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    encoder = [(n, p) for n, p in model.named_parameters() if n.startswith("encoder.")]
    assert len(encoder) > 50
    missing = [n for n, p in encoder
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not missing
