"""Transducer models: shapes, streaming parity of the encoder, predictor step == forward,
config round trips and errors, and a tiny model that learns to transcribe."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from fairstream.errors import InputDataError
from fairstream.models.encoders import (
    ENCODER_OPTIONS,
    ENCODERS,
    EncoderOutput,
    register_encoder,
)
from fairstream.models.encoders.lstm import LSTMEncoder, LSTMEncoderOptions
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
    model_config_from_dict,
)
from fairstream.models.joiner import Joiner
from fairstream.models.predictor import LSTMPredictor, StatelessPredictor
from fairstream.models.transducer import Transducer

TOL = 1e-5
GOLDEN = Path(__file__).parent / "data" / "golden"


def small_encoder(subsampling: int = 4, seed: int = 0) -> LSTMEncoder:
    torch.manual_seed(seed)
    return LSTMEncoder(
        80, subsampling=subsampling, conv_channels=8, num_layers=2, hidden_dim=48, output_dim=40
    ).eval()


def small_config(**overrides: object) -> ModelConfig:
    base = ModelConfig(
        encoder=EncoderConfig(
            "lstm", {"conv_channels": 8, "num_layers": 2, "hidden_dim": 64, "output_dim": 64}
        ),
        predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=12,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def full_pass(
    enc: LSTMEncoder, x: torch.Tensor, x_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    out = enc(x, x_lens)
    assert isinstance(out, EncoderOutput) and not out.aux_losses and not out.stats
    return out.y, out.y_lens


def stream_in_chunks(
    enc: LSTMEncoder, x: torch.Tensor, x_lens: torch.Tensor, chunk_sizes: list[int]
) -> list[torch.Tensor]:
    """Feed ``x`` chunk by chunk (sizes cycled); return each item's concatenated output."""
    state = None
    outs: list[list[torch.Tensor]] = [[] for _ in range(x.shape[0])]
    start, i = 0, 0
    while start < x.shape[1]:
        size = chunk_sizes[i % len(chunk_sizes)]
        chunk = x[:, start : start + size]
        lens = (x_lens - start).clamp(0, chunk.shape[1])
        y, y_lens, state = enc.stream(chunk, lens, state)
        for b in range(x.shape[0]):
            outs[b].append(y[b, : int(y_lens[b])])
        start += size
        i += 1
    assert state is not None
    assert state.frames_in.tolist() == x_lens.tolist()
    return [torch.cat(o) for o in outs]


# --------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("subsampling", [2, 4, 8])
def test_encoder_output_lengths_are_ceil_of_input_over_subsampling(subsampling: int) -> None:
    enc = small_encoder(subsampling)
    x_lens = torch.tensor([1, 2, 5, 17, 40])
    with torch.no_grad():
        out = enc(torch.randn(5, 40, 80), x_lens)
    y, y_lens = out.y, out.y_lens
    expected = [math.ceil(n / subsampling) for n in x_lens.tolist()]
    assert y_lens.tolist() == expected
    assert y.shape == (5, max(expected), 40)
    assert enc.subsampling == subsampling and enc.output_dim == 40


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_streaming_encoder_matches_full_pass(chunk: int) -> None:
    enc = small_encoder()
    torch.manual_seed(1)
    x = torch.randn(3, 61, 80)
    x_lens = torch.tensor([61, 45, 9])
    with torch.no_grad():
        y, y_lens = full_pass(enc, x, x_lens)
        streamed = stream_in_chunks(enc, x, x_lens, [chunk])
    for b in range(3):
        assert streamed[b].shape[0] == int(y_lens[b])
        torch.testing.assert_close(streamed[b], y[b, : int(y_lens[b])], atol=TOL, rtol=TOL)


def test_streaming_parity_with_irregular_chunks_and_subsampling_8() -> None:
    enc = small_encoder(subsampling=8, seed=3)
    x = torch.randn(2, 100, 80)
    x_lens = torch.tensor([100, 37])
    with torch.no_grad():
        y, y_lens = full_pass(enc, x, x_lens)
        streamed = stream_in_chunks(enc, x, x_lens, [5, 1, 16, 2, 11, 0, 9])
    for b in range(2):
        torch.testing.assert_close(streamed[b], y[b, : int(y_lens[b])], atol=TOL, rtol=TOL)


def test_streaming_items_advance_independently() -> None:
    """Streams of one batch may receive different amounts of audio per call."""
    enc = small_encoder()
    x = torch.randn(2, 30, 80)
    with torch.no_grad():
        y, _ = full_pass(enc, x, torch.tensor([30, 30]))
        state = None
        outs: list[list[torch.Tensor]] = [[], []]
        pos = [0, 0]
        for sizes in [(3, 0), (5, 7), (0, 1), (22, 13), (0, 9)]:
            chunk = torch.zeros(2, max(sizes), 80)
            for b in range(2):
                chunk[b, : sizes[b]] = x[b, pos[b] : pos[b] + sizes[b]]
                pos[b] += sizes[b]
            out, out_lens, state = enc.stream(chunk, torch.tensor(sizes), state)
            for b in range(2):
                outs[b].append(out[b, : int(out_lens[b])])
    assert pos == [30, 30]
    for b in range(2):
        torch.testing.assert_close(torch.cat(outs[b]), y[b], atol=TOL, rtol=TOL)


def test_encoder_rejects_empty_and_malformed_input() -> None:
    enc = small_encoder()
    with pytest.raises(InputDataError, match=r"batch item\(s\) \[1\].*empty"):
        enc(torch.randn(2, 10, 80), torch.tensor([10, 0]))
    with pytest.raises(InputDataError, match="shape"):
        enc(torch.randn(2, 10, 40), torch.tensor([10, 10]))
    with pytest.raises(InputDataError, match="exceeds"):
        enc(torch.randn(1, 10, 80), torch.tensor([11]))
    _, _, state = enc.stream(torch.randn(2, 4, 80), torch.tensor([4, 4]))
    with pytest.raises(InputDataError, match="holds 2 streams"):
        enc.stream(torch.randn(3, 4, 80), torch.tensor([4, 4, 4]), state)


def test_single_frame_gives_one_output_frame_in_both_modes() -> None:
    enc = small_encoder()
    x = torch.randn(1, 1, 80)
    with torch.no_grad():
        y, y_lens = full_pass(enc, x, torch.tensor([1]))
        ys, ys_lens, _ = enc.stream(x, torch.tensor([1]), None)
    assert y_lens.tolist() == ys_lens.tolist() == [1]
    torch.testing.assert_close(ys, y, atol=TOL, rtol=TOL)


def test_two_streams_batched_give_the_same_output_as_each_alone() -> None:
    """stack_states/select_state: streams join a batch mid-way and leave it again."""
    enc = small_encoder(seed=5)
    torch.manual_seed(6)
    xs = [torch.randn(41, 80), torch.randn(26, 80)]
    with torch.no_grad():
        alone = [full_pass(enc, x[None], torch.tensor([x.shape[0]]))[0][0] for x in xs]
        # each stream starts alone (9 and 3 frames: conv buffers of different widths)
        pos = [9, 3]
        outs: list[list[torch.Tensor]] = []
        states = []
        for x, n in zip(xs, pos):
            y, y_lens, st = enc.stream(x[None, :n], torch.tensor([n]))
            outs.append([y[0, : int(y_lens[0])]])
            states.append(st)
        state = enc.stack_states(states)
        assert state.batch_size == 2 and state.frames_in.tolist() == pos
        for sizes in [(4, 7), (0, 5), (11, 1)]:
            chunk = torch.zeros(2, max(sizes), 80)
            for i, n in enumerate(sizes):
                chunk[i, :n] = xs[i][pos[i] : pos[i] + n]
                pos[i] += n
            y, y_lens, state = enc.stream(chunk, torch.tensor(sizes), state)
            for i in range(2):
                outs[i].append(y[i, : int(y_lens[i])])
        # the streams leave the batch (in reverse order) and end alone
        parted = enc.select_state(state, torch.tensor([1, 0]))
        assert parted.frames_in.tolist() == pos[::-1]
        for i, row in ((0, 1), (1, 0)):
            st = enc.select_state(parted, torch.tensor([row]))
            rest = xs[i][pos[i] :]
            y, y_lens, _ = enc.stream(rest[None], torch.tensor([rest.shape[0]]), st)
            outs[i].append(y[0, : int(y_lens[0])])
    for i in range(2):
        torch.testing.assert_close(torch.cat(outs[i]), alone[i], atol=TOL, rtol=TOL)


def test_stack_of_no_states_is_an_error() -> None:
    with pytest.raises(InputDataError, match="no encoder states"):
        small_encoder().stack_states([])


def test_registry_knows_lstm_and_refuses_duplicate_names() -> None:
    assert ENCODERS["lstm"] is LSTMEncoder
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("lstm", options=LSTMEncoderOptions)(
            type("Other", (torch.nn.Module,), {})
        )


@dataclasses.dataclass(frozen=True)
class _WidthOptions:
    width: int = 4


@dataclasses.dataclass
class _LooseOptions:
    width: int = 4


class _Probe(torch.nn.Module):
    def __init__(self, input_dim: int, *, width: int = 4) -> None:
        super().__init__()


class _ProbeOtherDefault(torch.nn.Module):
    def __init__(self, input_dim: int, *, width: int = 5) -> None:
        super().__init__()


class _ProbeOtherName(torch.nn.Module):
    def __init__(self, input_dim: int, *, depth: int = 4) -> None:
        super().__init__()


class _ProbeExtraOption(torch.nn.Module):
    def __init__(self, input_dim: int, *, width: int = 4, depth: int = 2) -> None:
        super().__init__()


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (_Probe, _WidthOptions, None),
        (_ProbeOtherDefault, _WidthOptions, "default equal"),
        (_ProbeOtherName, _WidthOptions, "no keyword option 'width'"),
        (_ProbeExtraOption, _WidthOptions, r"\['depth'\] are missing"),
        (_Probe, _LooseOptions, "frozen dataclass"),
    ],
)
def test_registration_checks_options_against_the_constructor(
    cls: type[torch.nn.Module], options: type, message: str | None
) -> None:
    try:
        if message is None:
            assert register_encoder("probe-encoder", options=options)(cls) is cls
            assert ENCODER_OPTIONS["probe-encoder"] is options
        else:
            with pytest.raises(ValueError, match=message):
                register_encoder("probe-encoder", options=options)(cls)
            assert "probe-encoder" not in ENCODERS
    finally:
        ENCODERS.pop("probe-encoder", None)
        ENCODER_OPTIONS.pop("probe-encoder", None)


def test_transducer_checks_the_encoder_contract() -> None:
    joiner = Joiner(40, 16, 16, 10)
    with pytest.raises(InputDataError, match="missing: .*stream.*select_state"):
        Transducer(torch.nn.Linear(80, 40), StatelessPredictor(10, 16), joiner)
    enc = small_encoder()
    enc.right_context = -1
    with pytest.raises(InputDataError, match="right_context=-1"):
        Transducer(enc, StatelessPredictor(10, 16), joiner)


# --------------------------------------------------------------------------- predictor / joiner


@pytest.mark.parametrize(
    "predictor",
    [
        StatelessPredictor(10, 16, context_size=2),
        StatelessPredictor(10, 16, context_size=3),
        StatelessPredictor(10, 16, context_size=1),
        LSTMPredictor(10, 16, 24, num_layers=2),
    ],
    ids=["stateless-k2", "stateless-k3", "stateless-k1", "lstm"],
)
def test_predictor_steps_match_training_forward(predictor: torch.nn.Module) -> None:
    predictor.eval()
    tokens = torch.tensor([[3, 5, 5, 9, 1], [2, 2, 7, 4, 8]])
    with torch.no_grad():
        full = predictor(tokens)
        assert full.shape == (2, 6, predictor.output_dim)
        state = predictor.init_state(2)
        out, state = predictor.step(torch.zeros(2, dtype=torch.long), state)
        steps = [out]
        for u in range(tokens.shape[1]):
            out, state = predictor.step(tokens[:, u], state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=TOL, rtol=TOL)


def test_stateless_predictor_sees_only_last_k_tokens() -> None:
    pred = StatelessPredictor(10, 8, context_size=2).eval()
    with torch.no_grad():
        a = pred(torch.tensor([[1, 2, 3, 4]]))[0, -1]
        b = pred(torch.tensor([[9, 7, 3, 4]]))[0, -1]
        c = pred(torch.tensor([[1, 2, 5, 4]]))[0, -1]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_predictor_rejects_out_of_range_tokens() -> None:
    with pytest.raises(InputDataError, match="out of range"):
        StatelessPredictor(10, 8)(torch.tensor([[1, 10]]))


def test_joiner_shapes_and_broadcast_forms_agree() -> None:
    joiner = Joiner(12, 8, 16, 7, activation="relu")
    enc, pred = torch.randn(2, 5, 12), torch.randn(2, 4, 8)
    a = joiner(enc, pred)
    b = joiner(enc.unsqueeze(2), pred.unsqueeze(1))
    assert a.shape == (2, 5, 4, 7)
    torch.testing.assert_close(a, b)
    step = joiner.joint(joiner.project_encoder(enc[:, 2]), joiner.project_predictor(pred[:, 1]))
    torch.testing.assert_close(step, a[:, 2, 1])
    with pytest.raises(InputDataError, match="activation"):
        Joiner(4, 4, 4, 4, activation="gelu")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- factory


def test_default_model_size_and_parts() -> None:
    model = build_model(ModelConfig(vocab_size=256))
    n_params = sum(p.numel() for p in model.parameters())
    assert 2.5e6 <= n_params <= 5e6, n_params
    assert isinstance(model.predictor, StatelessPredictor)
    assert model.subsampling == 4 and model.ctc_head is not None


def test_config_round_trip_resolves_encoder_defaults() -> None:
    cfg = small_config(predictor=PredictorConfig(kind="lstm", hidden_dim=40))
    data = cfg.to_dict()
    assert data["encoder"]["kwargs"]["subsampling"] == 4  # default filled in
    again = model_config_from_dict(data)
    assert again.to_dict() == data
    model = build_model(again)
    assert isinstance(model.predictor, LSTMPredictor)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"vocab": 10}, r"unknown config key model\.vocab \(known keys of model: "),
        ({"joiner": {"joint": 3}}, r"unknown config key model\.joiner\.joint "),
        (
            {"encoder": {"name": "lstm", "kwargs": {"layers": 2}}},
            (
                r"unknown config key model\.encoder\.kwargs\.layers \(known keys of "
                r"model\.encoder\.kwargs: conv_channels, dropout, hidden_dim, num_layers, "
            ),
        ),
        (
            {"encoder": {"kwargs": {"hidden_dim": "wide"}}},
            r"config key model\.encoder\.kwargs\.hidden_dim: expected int, got 'wide'",
        ),
        (
            {"encoder": {"kwargs": {"subsampling": 3}}},
            r"config key model\.encoder\.kwargs: subsampling must be 2, 4 or 8, got 3",
        ),
        ({"encoder": {"kwargs": [1]}}, r"config key model\.encoder\.kwargs: expected Mapping"),
        ({"encoder": {"name": "gru"}}, r"model\.encoder\.name: unknown encoder 'gru'"),
        ({"predictor": {"kind": "transformer"}}, r"model\.predictor\.kind: 'transformer'"),
        ({"vocab_size": 1}, r"model\.vocab_size: must be >= 2"),
    ],
)
def test_config_errors_name_the_bad_key(data: dict, message: str) -> None:
    with pytest.raises(InputDataError, match=message):
        model_config_from_dict(data)


def test_encoder_options_are_coerced_to_their_field_types() -> None:
    cfg = model_config_from_dict({"encoder": {"kwargs": {"hidden_dim": "64", "dropout": 0}}})
    assert cfg.encoder.kwargs == {"hidden_dim": 64, "dropout": 0.0}
    assert isinstance(cfg.encoder.kwargs["dropout"], float)
    opts = cfg.encoder.options()
    assert isinstance(opts, LSTMEncoderOptions)
    assert opts == LSTMEncoderOptions(hidden_dim=64, dropout=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.hidden_dim = 3  # type: ignore[misc]
    with pytest.raises(InputDataError, match=r"model\.encoder\.kwargs\.hiden_dim"):
        build_model(ModelConfig(encoder=EncoderConfig("lstm", {"hiden_dim": 3})))


def test_golden_checkpoint_config_and_weights_load() -> None:
    """The model config stored by an earlier release parses to the same plain data, and the
    model it builds takes the stored weights exactly."""
    ck = torch.load(GOLDEN / "tiny_transducer.pt", map_location="cpu", weights_only=True)
    stored = json.loads(ck["config"])["model"]
    cfg = model_config_from_dict(stored)
    assert cfg.to_dict() == stored
    model = build_model(cfg)
    model.load_state_dict(ck["model"], strict=True)


def test_no_ctc_head_when_weight_is_zero() -> None:
    model = build_model(small_config(ctc_weight=0.0))
    assert model.ctc_head is None


# --------------------------------------------------------------------------- transducer loss


def test_forward_loss_is_finite_and_backpropagates_to_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(ctc_weight=0.3))
    feats = torch.randn(3, 50, 80)
    feat_lens = torch.tensor([50, 33, 20])
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    token_lens = torch.tensor([4, 2, 1])
    out = model(feats, feat_lens, tokens, token_lens)
    assert out.encoder_lens.tolist() == [13, 9, 5]
    assert out.num_utterances == 3
    assert torch.isfinite(out.loss) and out.rnnt_loss > 0 and out.ctc_loss > 0
    torch.testing.assert_close(out.loss.detach(), out.rnnt_loss + 0.3 * out.ctc_loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


class _PenalizedEncoder(LSTMEncoder):
    """An LSTM encoder whose output carries an auxiliary loss and a statistic."""

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> EncoderOutput:
        out = super().forward(x, x_lens)
        return dataclasses.replace(
            out, aux_losses={"energy": 0.5 * out.y.pow(2).mean()},
            stats={"gate_rate": torch.tensor(0.25)},
        )


def test_encoder_aux_losses_are_added_to_the_loss_and_stats_logged() -> None:
    from types import SimpleNamespace

    from fairstream.training.transducer import TransducerObjective

    torch.manual_seed(0)
    enc = _PenalizedEncoder(80, conv_channels=8, num_layers=1, hidden_dim=32, output_dim=32)
    model = Transducer(enc, StatelessPredictor(10, 16), Joiner(32, 16, 16, 10), ctc_weight=0.5)
    model.eval()  # no dropout: the two passes below compute the same
    batch = SimpleNamespace(features=torch.randn(2, 30, 80), feature_lens=torch.tensor([30, 21]),
                            tokens=torch.tensor([[1, 2, 3], [4, 5, 0]]),
                            token_lens=torch.tensor([3, 2]))
    out = model(batch.features, batch.feature_lens, batch.tokens, batch.token_lens)
    energy = out.aux_losses["energy"]
    assert not energy.requires_grad and float(energy) > 0
    torch.testing.assert_close(out.loss.detach(), out.rnnt_loss + 0.5 * out.ctc_loss + energy)
    assert out.stats == {"gate_rate": 0.25}
    logged = TransducerObjective()(model, batch)
    assert logged.metrics["aux_energy"] == pytest.approx(float(energy))
    assert logged.metrics["encoder_gate_rate"] == 0.25


def test_forward_rejects_mismatched_batches() -> None:
    model = build_model(small_config())
    with pytest.raises(InputDataError, match="batch size mismatch"):
        model(
            torch.randn(2, 20, 80),
            torch.tensor([20, 20]),
            torch.ones(3, 2, dtype=torch.long),
            torch.tensor([2, 2, 2]),
        )


def make_synthetic_task(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Features built from per-token prototype vectors (each token spans 8-12 frames,
    separated by short silences), so a model can learn the mapping from scratch."""
    gen = torch.Generator().manual_seed(seed)
    vocab = 8
    prototypes = torch.randn(vocab, 80, generator=gen) * 2.0
    transcripts = [[1, 2, 3], [4, 5, 6, 7], [3, 3, 1, 6], [7, 2, 5], [6, 4, 2, 1, 3]]
    feats = []
    for seq in transcripts:
        frames = [torch.zeros(4, 80)]
        for tok in seq:
            n = int(torch.randint(8, 13, (1,), generator=gen))
            frames.append(prototypes[tok].expand(n, 80) + 0.3 * torch.randn(n, 80, generator=gen))
            frames.append(torch.zeros(3, 80))
        feats.append(torch.cat(frames))
    lens = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return padded, lens, transcripts


def test_tiny_model_overfits_a_handful_of_utterances() -> None:
    from fairstream.decoding.greedy import greedy_search

    feats, feat_lens, transcripts = make_synthetic_task()
    tokens = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(t) for t in transcripts], batch_first=True
    )
    token_lens = torch.tensor([len(t) for t in transcripts])
    torch.manual_seed(0)
    model: Transducer = build_model(
        small_config(
            vocab_size=8,
            ctc_weight=0.2,
            encoder=EncoderConfig(
                "lstm",
                {
                    "conv_channels": 8,
                    "num_layers": 1,
                    "hidden_dim": 64,
                    "output_dim": 64,
                    "dropout": 0.0,
                },
            ),
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def transcribe() -> list[list[int]]:
        model.eval()
        with torch.no_grad():
            enc, enc_lens = model.encode(feats, feat_lens)
            return [list(h.tokens) for h in greedy_search(model, enc, enc_lens)]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention
    try:
        assert transcribe() != transcripts
        for step in range(400):
            model.train()
            out = model(feats, feat_lens, tokens, token_lens)
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if step % 10 == 9 and transcribe() == transcripts:
                break
        assert transcribe() == transcripts  # 0% token error on every utterance
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_model_converts_dtype_with_to_and_still_runs(kind: str) -> None:
    """``Module.to``/``.double()`` reach every part (no method shadows ``nn.Module`` internals)."""
    model = build_model(small_config(predictor=PredictorConfig(kind=kind, embed_dim=32)))
    model = model.double().eval()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    feats = torch.randn(1, 12, 80, dtype=torch.float64)
    with torch.no_grad():
        enc, _ = model.encode(feats, torch.tensor([12]))
        pred = model.predict(torch.tensor([[1, 2]]))
        step, _ = model.predict_step(torch.tensor([0]), None)
        assert step.dtype == torch.float64
        assert model.join(enc, pred).dtype == torch.float64
        streamed, _, _ = model.stream(feats, torch.tensor([12]), None)
    torch.testing.assert_close(streamed, enc)
