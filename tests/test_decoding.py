"""Greedy and modified beam search: beam 1 == greedy, chunked == offline, batch independence,
symbol limits, timestamps and errors."""

from __future__ import annotations

import pytest
import torch

from fairstream.decoding.beam import modified_beam_search
from fairstream.decoding.greedy import greedy_hypotheses, greedy_search, greedy_search_chunk
from fairstream.errors import InputDataError
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)
from fairstream.models.transducer import Transducer


def tiny_model(kind: str = "stateless", seed: int = 0, vocab: int = 16) -> Transducer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        encoder=EncoderConfig(
            "lstm", {"conv_channels": 8, "num_layers": 2, "hidden_dim": 48, "output_dim": 48}
        ),
        predictor=PredictorConfig(kind=kind, embed_dim=32, hidden_dim=32),  # type: ignore[arg-type]
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=vocab,
    )
    model = build_model(cfg).eval()
    return model


@pytest.fixture(scope="module")
def encoded() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    return torch.randn(3, 90, 80), torch.tensor([90, 61, 7])


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_beam_one_equals_greedy_one_symbol_per_frame(kind: str, encoded) -> None:
    model = tiny_model(kind)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    greedy = greedy_search(model, enc, enc_lens, max_symbols_per_frame=1)
    beam = modified_beam_search(model, enc, enc_lens, beam=1)
    assert any(len(h.tokens) > 2 for h in greedy)  # non-trivial outputs
    for g, b in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.frames == b.frames
        assert g.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_wider_beam_returns_valid_hypotheses(kind: str, encoded) -> None:
    model = tiny_model(kind, seed=2)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    hyps = modified_beam_search(model, enc, enc_lens, beam=4)
    assert len(hyps) == 3
    for h, n in zip(hyps, enc_lens.tolist()):
        assert 0 not in h.tokens
        assert len(h.tokens) <= n  # at most one symbol per frame
        assert list(h.frames) == sorted(h.frames) and all(0 <= f < n for f in h.frames)
        assert h.score <= 0.0


def test_chunked_greedy_equals_offline_greedy(encoded) -> None:
    model = tiny_model("lstm", seed=1)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    offline = greedy_search(model, enc, enc_lens, max_symbols_per_frame=2)
    state = None
    for start in range(0, enc.shape[1], 4):
        chunk = enc[:, start : start + 4]
        chunk_lens = (enc_lens - start).clamp(0, chunk.shape[1])
        state = greedy_search_chunk(model, chunk, chunk_lens, state, max_symbols_per_frame=2)
    assert state is not None
    assert greedy_hypotheses(model, state) == offline


def test_greedy_result_of_an_item_does_not_depend_on_its_batch(encoded) -> None:
    model = tiny_model()
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        alone_enc, alone_lens = model.encode(feats[2:, :7], lens[2:])
    batched = greedy_search(model, enc, enc_lens)
    alone = greedy_search(model, alone_enc, alone_lens)
    assert batched[2].tokens == alone[0].tokens
    assert batched[2].score == pytest.approx(alone[0].score, abs=1e-4)


def test_symbol_limit_and_timestamps(encoded) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.joiner.out.bias[0] -= 50.0  # never blank: every frame fills its symbol limit
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    for limit in (1, 3):
        hyps = greedy_search(model, enc, enc_lens, max_symbols_per_frame=limit)
        for h, n in zip(hyps, enc_lens.tolist()):
            assert len(h.tokens) == limit * n
            assert h.timestamps == tuple(round(f * 4 * 0.01, 6) for f in h.frames)
            assert h.frames == tuple(f for f in range(n) for _ in range(limit))


def test_bad_search_settings_raise() -> None:
    model = tiny_model()
    enc, enc_lens = torch.randn(1, 3, 48), torch.tensor([3])
    with pytest.raises(InputDataError, match="beam must be >= 1"):
        modified_beam_search(model, enc, enc_lens, beam=0)
    with pytest.raises(InputDataError, match="max_symbols_per_frame"):
        greedy_search(model, enc, enc_lens, max_symbols_per_frame=0)
