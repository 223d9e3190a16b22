"""StreamingRecognizer: final result == offline greedy on the same audio for any chunking,
partials grow monotonically, and bad input raises clear errors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fairstream.decoding.greedy import greedy_search
from fairstream.decoding.streaming import PartialResult, StreamingRecognizer
from fairstream.errors import InputDataError
from fairstream.features.fbank import Cmvn, compute_cmvn, compute_fbank
from fairstream.models.encoders.base import EncoderOutput
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
)
from fairstream.models.joiner import Joiner
from fairstream.models.predictor import StatelessPredictor
from fairstream.models.transducer import Transducer
from fairstream.tokenizer import Tokenizer

SR = 16000


def synthetic_audio(seconds: float, seed: int) -> np.ndarray:
    """Gliding tones with bursts of noise: varied spectra so a random model emits tokens."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    freq = 200 + 1500 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / SR)
    envelope = (np.sin(2 * np.pi * 3.0 * t) > 0).astype(np.float64)
    noise = 0.05 * rng.standard_normal(t.size)
    return (tone * envelope + noise).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    out: Path = tmp_path_factory.mktemp("tok")
    return Tokenizer.train(["hello world"], out, model_type="char")


@pytest.fixture(scope="module")
def cmvn() -> Cmvn:
    return compute_cmvn([compute_fbank(synthetic_audio(2.0, seed=s)) for s in range(3)])


def make_model(vocab: int, kind: str = "stateless") -> Transducer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(
            "lstm", {"conv_channels": 8, "num_layers": 2, "hidden_dim": 48, "output_dim": 48}
        ),
        predictor=PredictorConfig(kind=kind, embed_dim=32, hidden_dim=32),  # type: ignore[arg-type]
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=vocab,
    )
    return build_model(cfg).eval()


def offline_greedy(
    model: Transducer, audio: np.ndarray, cmvn: Cmvn, max_symbols: int
) -> tuple[int, ...]:
    feats = torch.from_numpy(cmvn.apply(compute_fbank(audio))).unsqueeze(0)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, torch.tensor([feats.shape[1]]))
    return greedy_search(model, enc, enc_lens, max_symbols_per_frame=max_symbols)[0].tokens


def run_stream(
    rec: StreamingRecognizer, audio: np.ndarray, chunk_samples: int
) -> tuple[list[PartialResult], PartialResult]:
    partials: list[PartialResult] = []
    for start in range(0, audio.size, chunk_samples):
        partials.extend(rec.accept(audio[start : start + chunk_samples]))
    return partials, rec.finish()


@pytest.mark.parametrize(
    ("kind", "chunk_ms", "chunk_samples"),
    [
        ("stateless", 160, 1013),  # audio chunks unrelated to model chunks
        ("stateless", 10, 160),  # one feature frame per model chunk
        ("stateless", 30, 4800),  # 3 frames per model chunk
        ("lstm", 70, 77),  # 7 frames per model chunk, tiny audio chunks
        ("lstm", 160, 10**6),  # all audio at once
    ],
)
def test_stream_final_equals_offline_greedy(
    kind: str, chunk_ms: int, chunk_samples: int, tokenizer: Tokenizer, cmvn: Cmvn
) -> None:
    model = make_model(tokenizer.vocab_size, kind)
    audio = synthetic_audio(1.37, seed=11)
    expected = offline_greedy(model, audio, cmvn, max_symbols=2)
    assert len(expected) > 3  # the comparison is not between two empty outputs
    rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms, max_symbols_per_frame=2)
    partials, final = run_stream(rec, audio, chunk_samples)
    assert final.is_final and final.tokens == expected
    assert final.text == tokenizer.decode(list(expected))
    assert len(final.timestamps) == len(expected)
    assert final.audio_seconds == pytest.approx(compute_fbank(audio).shape[0] * 0.01)
    # greedy partials never revise: each is a prefix of the next
    seq = [p.tokens for p in partials] + [final.tokens]
    assert all(not p.is_final for p in partials)
    assert all(b[: len(a)] == a for a, b in itertools.pairwise(seq))


def test_partials_arrive_once_per_model_chunk(tokenizer: Tokenizer, cmvn: Cmvn) -> None:
    rec = StreamingRecognizer(make_model(tokenizer.vocab_size), tokenizer, cmvn, chunk_ms=160)
    audio = synthetic_audio(1.0, seed=1)  # 98 feature frames -> 6 full chunks of 16
    partials, final = run_stream(rec, audio, 800)
    assert len(partials) == 6
    assert [p.audio_seconds for p in partials] == pytest.approx([0.16 * i for i in range(1, 7)])
    assert final.audio_seconds == pytest.approx(0.98)


def test_reset_starts_a_new_identical_stream(tokenizer: Tokenizer, cmvn: Cmvn) -> None:
    rec = StreamingRecognizer(make_model(tokenizer.vocab_size), tokenizer, cmvn)
    audio = synthetic_audio(0.8, seed=4)
    _, first = run_stream(rec, audio, 2000)
    with pytest.raises(InputDataError, match="after finish"):
        rec.accept(audio[:100])
    rec.reset()
    _, second = run_stream(rec, audio, 3000)
    assert first == second


@pytest.mark.parametrize("n_samples", [0, 399])
def test_empty_or_too_short_audio_raises(n_samples: int, tokenizer: Tokenizer, cmvn: Cmvn) -> None:
    rec = StreamingRecognizer(make_model(tokenizer.vocab_size), tokenizer, cmvn)
    rec.accept(np.zeros(n_samples, dtype=np.float32))
    with pytest.raises(InputDataError, match=f"{n_samples} samples, shorter than one"):
        rec.finish()


def test_mismatched_vocabulary_and_bad_chunk_raise(tokenizer: Tokenizer, cmvn: Cmvn) -> None:
    with pytest.raises(InputDataError, match=r"tokenizer vocabulary \(39\) does not match"):
        StreamingRecognizer(make_model(40), tokenizer, cmvn)
    with pytest.raises(InputDataError, match="multiple of the 10.0 ms"):
        StreamingRecognizer(make_model(tokenizer.vocab_size), tokenizer, cmvn, chunk_ms=25)


@pytest.mark.parametrize(("kind", "chunk_ms", "chunk_samples"),
                         [("stateless", 10, 160), ("lstm", 70, 77), ("stateless", 160, 1013)])
def test_stream_with_beam_search_and_lm_equals_offline_beam_search(
    kind: str, chunk_ms: int, chunk_samples: int, tokenizer: Tokenizer, cmvn: Cmvn
) -> None:
    from fairstream.decoding import BeamSearch, SearchConfig, beam_search
    from fairstream.lm import NgramLM

    model = make_model(tokenizer.vocab_size, kind)
    rng = np.random.default_rng(1)
    lm = NgramLM.fit([list(rng.integers(1, tokenizer.vocab_size, 6)) for _ in range(30)],
                     vocab_size=tokenizer.vocab_size, order=3)
    search = BeamSearch(SearchConfig(method="beam", beam=3, max_symbols_per_frame=2,
                                     lm_weight=0.3, token_bonus=3.0), lm)
    audio = synthetic_audio(1.37, seed=11)
    feats = torch.from_numpy(cmvn.apply(compute_fbank(audio))).unsqueeze(0)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, torch.tensor([feats.shape[1]]))
    expected = beam_search(model, enc, enc_lens, search)[0]
    assert len(expected.tokens) > 3
    rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms, search=search)
    partials, final = run_stream(rec, audio, chunk_samples)
    assert final.is_final and final.tokens == expected.tokens
    assert final.timestamps == expected.timestamps
    assert partials and all(not p.is_final for p in partials)


# --------------------------------------------------------------------------- lookahead


@dataclass(frozen=True)
class _LookaheadState:
    pending: tuple[torch.Tensor, ...]  # per stream: (n, D) frames still waiting for lookahead
    h: torch.Tensor  # (B, D)


class _LookaheadEncoder(torch.nn.Module):
    """A tiny encoder with lookahead (test only): pairs of frames are stacked and projected
    (subsampling 2); frame ``j`` mixes projected frames ``j .. j + right_context`` (zeros past
    the end), then runs through a tanh RNN. Chunks that are not final must hold an even number
    of frames, at least 2."""

    def __init__(self, input_dim: int = 80, dim: int = 48, right_context: int = 2) -> None:
        super().__init__()
        self.output_dim = dim
        self.subsampling = 2
        self.right_context = right_context
        self.chunk_frames_min = 2
        self.chunk_frames_multiple = 2
        self.proj = torch.nn.Linear(2 * input_dim, dim)
        self.mix = torch.nn.Parameter(torch.randn(right_context + 1, dim) / (right_context + 1))
        self.rnn = torch.nn.RNNCell(dim, dim)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``(t, F)`` frames (zero-padded to even) -> ``(ceil(t / 2), D)``."""
        x = torch.nn.functional.pad(x, (0, 0, 0, x.shape[0] % 2))
        return self.proj(x.reshape(x.shape[0] // 2, 2 * x.shape[1]))

    def _run(self, u: torch.Tensor, n_out: int, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Output frames ``0 .. n_out-1`` of ``u (n, D)`` (zeros past its end) from ``h (D,)``."""
        u = torch.nn.functional.pad(u, (0, 0, 0, n_out + self.right_context - u.shape[0]))
        outs = []
        for j in range(n_out):
            v = (self.mix * u[j : j + self.right_context + 1]).sum(0)
            h = self.rnn(v[None], h[None])[0]
            outs.append(h)
        y = torch.stack(outs) if outs else u.new_zeros(0, self.output_dim)
        return y, h

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> EncoderOutput:
        ys = []
        for b in range(x.shape[0]):
            u = self._project(x[b, : int(x_lens[b])])
            ys.append(self._run(u, u.shape[0], x.new_zeros(self.output_dim))[0])
        y_lens = torch.tensor([y.shape[0] for y in ys])
        return EncoderOutput(torch.nn.utils.rnn.pad_sequence(ys, batch_first=True), y_lens)

    def init_state(self, batch_size: int, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> _LookaheadState:
        empty = torch.zeros(0, self.output_dim, device=device, dtype=dtype)
        return _LookaheadState((empty,) * batch_size,
                               torch.zeros(batch_size, self.output_dim, device=device, dtype=dtype))

    def select_state(self, state: _LookaheadState, indices: torch.Tensor) -> _LookaheadState:
        return _LookaheadState(tuple(state.pending[int(i)] for i in indices), state.h[indices])

    def stack_states(self, states: Sequence[_LookaheadState]) -> _LookaheadState:
        return _LookaheadState(tuple(p for s in states for p in s.pending),
                               torch.cat([s.h for s in states]))

    def stream(self, x: torch.Tensor, x_lens: torch.Tensor, state: _LookaheadState | None = None,
               *, final: bool = False) -> tuple[torch.Tensor, torch.Tensor, _LookaheadState]:
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        if not final and any(n % 2 or 0 < n < 2 for n in x_lens.tolist()):
            raise InputDataError(f"chunk of {x_lens.tolist()} frames breaks the constraints")
        ys, pending, hs = [], [], []
        for b in range(x.shape[0]):
            u = torch.cat([state.pending[b], self._project(x[b, : int(x_lens[b])])])
            n_out = u.shape[0] if final else max(u.shape[0] - self.right_context, 0)
            y, h = self._run(u, n_out, state.h[b])
            ys.append(y)
            pending.append(u[n_out:])
            hs.append(h)
        y_lens = torch.tensor([y.shape[0] for y in ys])
        return (torch.nn.utils.rnn.pad_sequence(ys, batch_first=True), y_lens,
                _LookaheadState(tuple(pending), torch.stack(hs)))


def make_lookahead_model(vocab: int) -> Transducer:
    torch.manual_seed(3)
    return Transducer(_LookaheadEncoder(), StatelessPredictor(vocab, 32),
                      Joiner(48, 32, 48, vocab)).eval()


@pytest.mark.parametrize(
    ("chunk_ms", "chunk_samples"),
    [(20, 160), (60, 1013), (160, 77), (40, 10**6)],
)
def test_stream_with_lookahead_encoder_equals_offline(
    chunk_ms: int, chunk_samples: int, tokenizer: Tokenizer, cmvn: Cmvn
) -> None:
    model = make_lookahead_model(tokenizer.vocab_size)
    audio = synthetic_audio(1.37, seed=11)  # 135 feature frames: an odd last chunk
    expected = offline_greedy(model, audio, cmvn, max_symbols=2)
    assert len(expected) > 3
    rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=chunk_ms, max_symbols_per_frame=2)
    assert rec.lookahead_ms == 40.0
    partials, final = run_stream(rec, audio, chunk_samples)
    assert final.tokens == expected
    seq = [p.tokens for p in partials] + [final.tokens]
    assert all(b[: len(a)] == a for a, b in itertools.pairwise(seq))


def test_recognizer_holds_back_the_lookahead_frames(tokenizer: Tokenizer, cmvn: Cmvn) -> None:
    """After each chunk the search has seen every encoder frame but the last right_context;
    finish() flushes them."""
    model = make_lookahead_model(tokenizer.vocab_size)
    rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=40)  # 4 frames -> 2 enc frames
    audio = synthetic_audio(0.5, seed=2)  # 48 feature frames
    searched, expected = [], []
    for start in range(0, audio.size, 640):
        end = min(start + 640, audio.size)
        rec.accept(audio[start:end])
        state = rec._decoder_state
        searched.append(0 if state is None else int(state.frames_done[0]))  # type: ignore
        chunks = compute_fbank(audio[:end]).shape[0] // 4
        expected.append(max(0, 2 * chunks - model.encoder.right_context))
    assert searched == expected and expected[-1] > 0
    rec.finish()
    assert int(rec._decoder_state.frames_done[0]) == 24  # type: ignore[union-attr]


@pytest.mark.parametrize("chunk_ms", [10, 30])
def test_recognizer_refuses_chunks_the_encoder_cannot_take(
    chunk_ms: int, tokenizer: Tokenizer, cmvn: Cmvn
) -> None:
    with pytest.raises(InputDataError, match="at least 2 frames, a multiple of 2"):
        StreamingRecognizer(make_lookahead_model(tokenizer.vocab_size), tokenizer, cmvn,
                            chunk_ms=chunk_ms)

