"""Greedy and beam search: beam 1 == greedy, chunked == offline, batch independence,
symbol limits, timestamps and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fairstream.decoding.beam import BeamSearch, beam_search
from fairstream.decoding.greedy import greedy_hypotheses, greedy_search, greedy_search_chunk
from fairstream.decoding.search import LM_TOKEN_BONUS, SearchConfig
from fairstream.errors import InputDataError
from fairstream.lm import NgramLM
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



def _beam(lm: NgramLM | None = None, **settings: Any) -> BeamSearch:  # Any: settings of mixed types
    """A beam search with these settings (the rest: SearchConfig's defaults) fusing ``lm``."""
    return BeamSearch(SearchConfig(method="beam", **settings), lm)

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
    beam = beam_search(model, enc, enc_lens, _beam(beam=1, max_symbols_per_frame=1))
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
    hyps = beam_search(model, enc, enc_lens, _beam(beam=4, max_symbols_per_frame=1))
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
    with pytest.raises(InputDataError, match="beam and decode.max_symbols_per_frame must be"):
        beam_search(model, enc, enc_lens, _beam(beam=0))
    with pytest.raises(InputDataError, match="max_symbols_per_frame"):
        greedy_search(model, enc, enc_lens, max_symbols_per_frame=0)


# ---------------------------------------------------------------------------- CTC head
class _FixedCtcModel:
    """Stands in for a transducer whose CTC head returns chosen logits (frames × symbols)."""

    blank_id = 0
    subsampling = 4

    def __init__(self, logits):  # type: ignore[no-untyped-def]
        self.ctc_head = lambda enc: logits


def _one_hot_logits(rows):  # type: ignore[no-untyped-def]
    import torch

    out = torch.full((len(rows), max(len(r) for r in rows), 5), -10.0)
    for b, row in enumerate(rows):
        for t, sym in enumerate(row):
            out[b, t, sym] = 10.0
    return out


def test_ctc_greedy_merges_repeats_drops_blanks_and_ignores_padding():
    import torch

    from fairstream.decoding.ctc import ctc_greedy_search

    # item 0: a a _ a b b -> a a b ; item 1: valid 3 frames "_ c c", then padding that says "d"
    logits = _one_hot_logits([[1, 1, 0, 1, 2, 2], [0, 3, 3, 4, 4, 4]])
    model = _FixedCtcModel(logits)
    enc = torch.zeros(2, 6, 8)
    hyps = ctc_greedy_search(model, enc, torch.tensor([6, 3]))
    assert hyps[0].tokens == (1, 1, 2) and hyps[0].frames == (0, 3, 4)
    assert hyps[0].timestamps == (0.0, 0.12, 0.16)  # 4x subsampling of 10 ms frames
    assert hyps[1].tokens == (3,) and hyps[1].frames == (1,)
    lp = torch.log_softmax(logits, -1).max(-1).values
    assert hyps[1].score == pytest.approx(float(lp[1, :3].sum()))


def test_ctc_greedy_needs_a_ctc_head():
    import torch

    from fairstream.decoding.ctc import ctc_greedy_search

    model = _FixedCtcModel(None)
    model.ctc_head = None
    with pytest.raises(InputDataError, match="no CTC head"):
        ctc_greedy_search(model, torch.zeros(1, 2, 8), torch.tensor([2]))


# ---------------------------------------------------------------------------- beam search + LM
def _lm_for(vocab: int, order: int = 3):  # type: ignore[no-untyped-def]

    rng = np.random.default_rng(0)
    sentences = [list(rng.integers(1, vocab, rng.integers(3, 9))) for _ in range(40)]
    return NgramLM.fit(sentences, vocab_size=vocab, order=order)


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
@pytest.mark.parametrize("fused", [False, True])
def test_chunked_beam_search_equals_offline(kind: str, fused: bool, encoded) -> None:
    from fairstream.decoding.beam import beam_hypothesis, beam_search_chunk

    model = tiny_model(kind, seed=3)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    cfg = _beam(_lm_for(model.vocab_size) if fused else None, beam=3, max_symbols_per_frame=2,
                lm_weight=0.5 if fused else 0.0, token_bonus=2.5 if fused else 0.5)
    offline = beam_search(model, enc, enc_lens, cfg)
    assert any(len(h.tokens) > 2 for h in offline)
    for size in (1, 3, 7):
        for b in range(enc.shape[0]):
            frames = enc[b, : int(enc_lens[b])]
            state = None
            for start in range(0, frames.shape[0], size):
                state = beam_search_chunk(model, frames[start : start + size], state, cfg)
            assert state is not None and state.frames_done == frames.shape[0]
            hyp = beam_hypothesis(model, state, cfg)
            assert (hyp.tokens, hyp.frames) == (offline[b].tokens, offline[b].frames)
            assert hyp.score == pytest.approx(offline[b].score, abs=1e-4)


def test_beam_search_with_several_symbols_per_frame_returns_valid_hypotheses(encoded) -> None:
    model = tiny_model(seed=4)
    with torch.no_grad():
        model.joiner.out.bias[0] -= 4.0  # blank less likely: frames carry several tokens
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    one = beam_search(model, enc, enc_lens, _beam(beam=4, max_symbols_per_frame=1))
    three = beam_search(model, enc, enc_lens, _beam(beam=4, max_symbols_per_frame=3))
    for h1, h3, n in zip(one, three, enc_lens.tolist()):
        assert len(h3.tokens) <= 3 * n and 0 not in h3.tokens
        assert all(h3.frames.count(f) <= 3 for f in set(h3.frames))
        assert list(h3.frames) == sorted(h3.frames)
    assert sum(len(h.tokens) for h in three) > sum(len(h.tokens) for h in one)


def test_a_dominant_lm_steers_the_search_to_its_sentence(encoded) -> None:

    model = tiny_model(seed=6)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    sentence = [3, 1, 4, 1, 5, 9, 2, 6]
    lm = NgramLM.fit([sentence] * 20, vocab_size=model.vocab_size, order=4)
    plain = beam_search(model, enc, enc_lens, _beam(beam=4))
    fused = beam_search(model, enc, enc_lens,
                        _beam(lm, beam=4, lm_weight=20.0, token_bonus=20.0))
    assert plain[0].tokens != tuple(sentence)
    assert fused[0].tokens == tuple(sentence)  # 90 frames: room for all of it
    for h in fused:  # shorter utterances still follow the LM's sentence
        assert h.tokens == tuple(sentence[: len(h.tokens)])


def test_bad_beam_settings_raise() -> None:
    model = tiny_model()
    enc, enc_lens = torch.randn(1, 3, 48), torch.tensor([3])
    with pytest.raises(InputDataError, match="max_symbols_per_frame must be >= 1"):
        beam_search(model, enc, enc_lens, _beam(max_symbols_per_frame=0))
    with pytest.raises(InputDataError, match="lm_order must be 0"):
        _beam(lm_order=1)
    vocab_mismatch = r"LM vocabulary \(9\) does not match the model's \(16\)"
    with pytest.raises(InputDataError, match=vocab_mismatch):
        beam_search(model, enc, enc_lens, _beam(_lm_for(9), lm_weight=0.5))


@pytest.mark.parametrize("limit", [1, 2])
def test_unpruned_beam_search_scores_equal_the_sum_over_all_alignments(limit: int) -> None:
    """With a beam wide enough to prune nothing, every hypothesis' score must be the
    log-sum of the probabilities of all its alignments, enumerated here by brute force."""
    from fairstream.decoding.beam import beam_search_chunk

    model = tiny_model("lstm", seed=7, vocab=4)
    torch.manual_seed(8)
    enc = torch.randn(3, 48)
    blank = model.blank_id
    enc_proj = model.joiner.project_encoder(enc)

    def pred_proj(prefix: tuple[int, ...]) -> torch.Tensor:
        state = model.predictor.init_state(1)
        out, state = model.predict_step(torch.tensor([blank]), state)
        for tok in prefix:
            out, state = model.predict_step(torch.tensor([tok]), state)
        return model.joiner.project_predictor(out)

    totals: dict[tuple[int, ...], list[float]] = {}

    def walk(prefix: tuple[int, ...], t: int, k: int, score: float) -> None:
        if t == enc.shape[0]:
            totals.setdefault(prefix, []).append(score)
            return
        logp = model.joiner.joint(enc_proj[t].unsqueeze(0), pred_proj(prefix))
        logp = logp.log_softmax(-1)[0].double()
        walk(prefix, t + 1, 0, score + float(logp[blank]))
        for v in range(model.vocab_size):
            if v == blank:
                continue
            if k + 1 == limit:  # the symbol limit moves on without the blank
                walk((*prefix, v), t + 1, 0, score + float(logp[v]))
            else:
                walk((*prefix, v), t, k + 1, score + float(logp[v]))

    with torch.no_grad():
        walk((), 0, 0, 0.0)
        state = beam_search_chunk(model, enc, None,
                                  _beam(beam=10_000, max_symbols_per_frame=limit))
    expected = {seq: float(torch.logsumexp(torch.tensor(s, dtype=torch.float64), 0))
                for seq, s in totals.items()}
    got = dict(zip(state.tokens, state.scores.tolist()))
    assert set(got) == set(expected)
    assert len(got) > 30
    for seq, score in expected.items():
        assert got[seq] == pytest.approx(score, abs=1e-4)
    total = float(torch.logsumexp(torch.tensor(list(got.values()), dtype=torch.float64), 0))
    assert total == pytest.approx(0.0, abs=1e-4)  # a distribution over token sequences


def test_an_lm_with_another_blank_is_refused() -> None:

    model = tiny_model()
    lm = NgramLM.fit([[2, 3, 4]], vocab_size=model.vocab_size, blank_id=1)
    with pytest.raises(InputDataError, match=r"LM blank id \(1\) differs from the model's \(0\)"):
        beam_search(model, torch.randn(1, 3, 48), torch.tensor([3]),
                    _beam(lm, lm_weight=0.5))


def test_fusion_settings_apply_only_with_an_lm(encoded) -> None:
    """One set of defaults: the LM weight and the default token bonus take effect only when
    an LM is fused; an explicit token bonus applies either way."""
    model = tiny_model(seed=4)
    feats, lens = encoded
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    alone = _beam(beam=3)
    assert not alone.fused and alone.lm_weight == 0.0 and alone.token_bonus == 0.0
    neutral = _beam(beam=3, lm_weight=0.0, token_bonus=0.0)
    assert ([h.tokens for h in beam_search(model, enc, enc_lens, alone)]
            == [h.tokens for h in beam_search(model, enc, enc_lens, neutral)])
    with_lm = _beam(_lm_for(model.vocab_size), beam=3)
    assert with_lm.fused and with_lm.lm_weight == SearchConfig().lm_weight
    assert with_lm.token_bonus == LM_TOKEN_BONUS
    assert _beam(beam=3, token_bonus=0.7).token_bonus == 0.7


_WITHOUT_TORCH = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lhotse", "kaldi_native_fbank", "sentencepiece"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, _Block())
from fairstream.decoding.search import SearchConfig
print(SearchConfig(method="beam").describe())
from fairstream.cli import main
for command in ("decode", "transcribe", "lm"):
    main(args=[command, "--help"], prog_name="fairstream", standalone_mode=False)
"""


def test_search_settings_and_decode_help_need_no_torch() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "beam search, beam 8" in done.stdout
    assert done.stdout.count("Usage: fairstream") == 3

