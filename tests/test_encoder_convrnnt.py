"""ConvRNN-T encoder: causality, padding-aware running-mean squeeze-and-excitation, ablation
switches, the offline utterance-mean SE, recipe sizes and a training step.

The generic contract (streaming parity, state batching, foreign states) is checked for the
default configuration in tests/test_encoder_contract.py; here the same parity is checked for
the ablations.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import Tensor

from fairstream.errors import InputDataError
from fairstream.models.encoders import ENCODERS
from fairstream.models.encoders.convrnnt import ConvRNNTEncoder, ConvRNNTOptions, ConvRNNTState
from fairstream.models.factory import (
    EncoderConfig,
    JoinerConfig,
    ModelConfig,
    PredictorConfig,
    build_model,
    model_config_from_dict,
)
from fairstream.training.config import load_config

TOL = 1e-5
FEATS = 40
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SMALL: dict[str, object] = {"local_channels": 4, "global_dim": 16, "global_blocks": 3,
                            "se_dim": 4, "num_layers": 2, "hidden_dim": 32, "output_dim": 24}


def small(seed: int = 0, **overrides: object) -> ConvRNNTEncoder:
    torch.manual_seed(seed)
    return ConvRNNTEncoder(FEATS, **{**SMALL, **overrides}).eval()  # type: ignore[arg-type]


def items(enc: ConvRNNTEncoder, x: Tensor, x_lens: Tensor) -> list[Tensor]:
    with torch.no_grad():
        out = enc(x, x_lens)
    return [out.y[b, : int(out.y_lens[b])] for b in range(x.shape[0])]


def streamed(enc: ConvRNNTEncoder, x: Tensor, sizes: list[int]) -> Tensor:
    """One utterance ``x (T, F)`` in chunks of ``sizes`` (cycled), then a final call."""
    outs: list[Tensor] = []
    state: ConvRNNTState | None = None
    start, i = 0, 0
    with torch.no_grad():
        while start < x.shape[0]:
            chunk = x[start : start + sizes[i % len(sizes)]]
            y, y_lens, state = enc.stream(chunk[None], torch.tensor([chunk.shape[0]]), state)
            outs.append(y[0, : int(y_lens[0])])
            start, i = start + chunk.shape[0], i + 1
        y, y_lens, state = enc.stream(x.new_zeros(1, 0, FEATS), torch.tensor([0]), state,
                                      final=True)
    return torch.cat(outs + [y[0, : int(y_lens[0])]])


# --------------------------------------------------------------------------- shapes, causality


@pytest.mark.parametrize("subsampling", [2, 4, 8])
def test_output_lengths_are_ceil_of_input_over_subsampling(subsampling: int) -> None:
    enc = small(subsampling=subsampling)
    x_lens = torch.tensor([1, 7, 8, 9, 33])
    out = enc(torch.randn(5, 33, FEATS), x_lens)
    expected = (x_lens + subsampling - 1) // subsampling
    assert out.y_lens.tolist() == expected.tolist()
    assert out.y.shape == (5, int(expected.max()), 24)


@pytest.mark.parametrize("overrides", [{}, {"use_local": False}, {"use_global": False}],
                         ids=["both", "global-only", "local-only"])
def test_encoder_frame_j_sees_feature_frames_up_to_j_times_subsampling_only(
    overrides: dict[str, object],
) -> None:
    enc = small(seed=1, **overrides)
    torch.manual_seed(2)
    x = torch.randn(1, 64, FEATS)
    ref = items(enc, x, torch.tensor([64]))[0]
    for j in (0, 3, 6):
        later = x.clone()
        later[:, j * 8 + 1 :] = torch.randn_like(later[:, j * 8 + 1 :]) * 5
        out = items(enc, later, torch.tensor([64]))[0]
        torch.testing.assert_close(out[: j + 1], ref[: j + 1], atol=TOL, rtol=TOL)
        assert not torch.allclose(out[j + 1 :], ref[j + 1 :])


def test_utterance_se_sees_the_future_and_causal_se_does_not() -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 64, FEATS)
    later = x.clone()
    later[:, 40:] += 3.0
    for mode, changes in (("causal", False), ("utterance", True)):
        enc = small(seed=4, se_mode=mode)
        first = items(enc, x, torch.tensor([64]))[0][:2]
        again = items(enc, later, torch.tensor([64]))[0][:2]
        assert (not torch.allclose(first, again, atol=TOL)) == changes, mode


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("mode", ["causal", "utterance"])
def test_an_item_padded_with_garbage_gives_what_it_gives_alone(mode: str) -> None:
    enc = small(seed=5, se_mode=mode)
    torch.manual_seed(6)
    short, long = torch.randn(29, FEATS), torch.randn(70, FEATS)
    batch = torch.randn(2, 70, FEATS) * 100.0  # garbage beyond the short item
    batch[0, :29], batch[1] = short, long
    together = items(enc, batch, torch.tensor([29, 70]))
    alone = items(enc, short[None], torch.tensor([29]))[0]
    assert together[0].shape == alone.shape == (4, 24)
    torch.testing.assert_close(together[0], alone, atol=TOL, rtol=TOL)
    torch.testing.assert_close(together[1], items(enc, long[None], torch.tensor([70]))[0],
                               atol=TOL, rtol=TOL)


def test_streams_padded_with_garbage_keep_their_running_mean() -> None:
    """A stream that gets fewer frames than the batch's chunk has garbage in the rest of the
    chunk: it must enter neither the SE running sum and count nor any conv context."""
    enc = small(seed=7)
    torch.manual_seed(8)
    xs = [torch.randn(60, FEATS), torch.randn(45, FEATS)]
    steps = [(16, 3), (0, 16), (5, 1), (16, 16), (23, 9)]
    outs: list[list[Tensor]] = [[], []]
    pos = [0, 0]
    state = None
    with torch.no_grad():
        for sizes in steps:
            chunk = torch.randn(2, max(sizes), FEATS) * 100.0
            for b in range(2):
                chunk[b, : sizes[b]] = xs[b][pos[b] : pos[b] + sizes[b]]
                pos[b] += sizes[b]
            y, y_lens, state = enc.stream(chunk, torch.tensor(sizes), state)
            for b in range(2):
                outs[b].append(y[b, : int(y_lens[b])])
    assert pos == [60, 45] and state is not None
    assert state.frames_out.tolist() == [8, 6]
    for b in range(2):
        alone = items(enc, xs[b][None], torch.tensor([xs[b].shape[0]]))[0]
        torch.testing.assert_close(torch.cat(outs[b]), alone, atol=TOL, rtol=TOL)


# --------------------------------------------------------------------------- ablations


@pytest.mark.parametrize("overrides", [{"use_local": False}, {"use_global": False},
                                       {"subsampling": 4, "local_layers": 2}],
                         ids=["no-local", "no-global", "subsampling-4"])
@pytest.mark.parametrize("sizes", [[1], [16], [5, 1, 16, 2, 11, 0, 9]],
                         ids=["1", "16", "irregular"])
def test_ablations_stream_like_their_full_pass(overrides: dict[str, object],
                                               sizes: list[int]) -> None:
    enc = small(seed=9, **overrides)
    torch.manual_seed(10)
    x = torch.randn(77, FEATS)
    full = items(enc, x[None], torch.tensor([77]))[0]
    torch.testing.assert_close(streamed(enc, x, sizes), full, atol=TOL, rtol=TOL)


def test_ablation_switches_remove_their_encoder() -> None:
    both, no_local, no_global = small(), small(use_local=False), small(use_global=False)
    names = [{n.split(".")[0] for n, _ in e.named_parameters()}
             for e in (both, no_local, no_global)]
    assert {"convs", "blocks", "global_norm"} <= names[0]
    assert "blocks" in names[1] and len(no_local.convs) == 1  # the global stem only
    assert "blocks" not in names[2] and "global_norm" not in names[2]
    assert len(no_global.convs) == ConvRNNTOptions().local_layers
    # the fusion layer takes what is left
    assert no_local.input_proj.in_features == 16
    assert no_global.input_proj.in_features == both.input_proj.in_features - 16
    with torch.no_grad():
        x, lens = torch.randn(1, 40, FEATS), torch.tensor([40])
        outs = [e(x, lens).y for e in (both, no_local, no_global)]
    assert all(o.shape == (1, 5, 24) for o in outs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_local": False, "use_global": False}, "one encoder must be on"),
        ({"se_mode": "global"}, "se_mode must be one of causal, utterance"),
        ({"use_global": False, "se_mode": "utterance"}, "needs the global encoder"),
        ({"subsampling": 8, "local_layers": 2}, "local_layers 2 < log2"),
        ({"local_kernel": 4}, "local_kernel must be odd"),
        ({"global_blocks": 0}, "options must be >= 1"),
        ({"subsampling": 16}, "subsampling must be 2, 4 or 8"),
    ],
)
def test_invalid_options_are_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InputDataError, match=message):
        small(0, **overrides)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(InputDataError, match=r"model\.encoder\.kwargs: se_mode must be"):
        model_config_from_dict({"encoder": {"name": "convrnnt", "kwargs": {"se_mode": "x"}}})
    with pytest.raises(InputDataError, match=r"model\.encoder\.kwargs\.use_locl"):
        model_config_from_dict({"encoder": {"name": "convrnnt", "kwargs": {"use_locl": 0}}})


def test_utterance_se_refuses_to_stream() -> None:
    enc = small(se_mode="utterance")
    assert enc(torch.randn(1, 20, FEATS), torch.tensor([20])).y.shape == (1, 3, 24)
    with pytest.raises(InputDataError, match="se_mode='utterance' cannot stream"):
        enc.stream(torch.randn(1, 16, FEATS), torch.tensor([16]))


def test_a_state_of_a_differently_shaped_convrnnt_is_refused_naming_shapes() -> None:
    state = small(global_blocks=2).init_state(1)
    with pytest.raises(InputDataError, match="per-stream shapes"):
        small().stream(torch.randn(1, 8, FEATS), torch.tensor([8]), state)
    with pytest.raises(InputDataError, match="differently shaped"):
        small().stack_states([small().init_state(1), state])


# --------------------------------------------------------------------------- size, training


@lru_cache(maxsize=None)
def _encoder_params(recipe: Path) -> int:
    cfg = load_config(recipe).model
    opts = cfg.encoder.options()
    enc = ENCODERS[cfg.encoder.name](cfg.feature_dim, **vars(opts))
    assert enc.output_dim == 256
    return sum(p.numel() for p in enc.parameters())


@pytest.mark.parametrize("recipe", ["convrnnt_transducer", "convrnnt_no_global",
                                    "convrnnt_no_local", "convrnnt_utterance_se"])
def test_recipe_encoder_size_is_within_10_percent_of_the_lstm_recipe(recipe: str) -> None:
    lstm = _encoder_params(RECIPES / "lstm_transducer.yaml")
    ours = _encoder_params(RECIPES / f"{recipe}.yaml")
    assert 0.9 * lstm <= ours <= 1.1 * lstm, (ours, lstm)


def test_recipe_is_the_lstm_recipe_with_another_encoder() -> None:
    lstm, ours = (load_config(RECIPES / f"{n}.yaml") for n in ("lstm_transducer",
                                                                 "convrnnt_transducer"))
    assert ours.model.encoder.name == "convrnnt"
    assert ours.model.encoder.options() == ConvRNNTOptions()
    rest = {k: v for k, v in vars(ours).items() if k != "model"}
    assert rest == {k: v for k, v in vars(lstm).items() if k != "model"}
    assert vars(ours.model) | {"encoder": None} == vars(lstm.model) | {"encoder": None}


@pytest.mark.parametrize("overrides", [{}, {"use_local": False}, {"use_global": False},
                                       {"se_mode": "utterance"}],
                         ids=["both", "no-local", "no-global", "utterance-se"])
def test_training_step_is_finite_and_reaches_every_encoder_parameter(
    overrides: dict[str, object],
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(
        encoder=EncoderConfig("convrnnt", {**SMALL, "subsampling": 4, "local_layers": 3,
                                           **overrides}),
        predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
        joiner=JoinerConfig(joint_dim=48),
        vocab_size=12,
        ctc_weight=0.3,
    ))
    model.train()
    feats = torch.randn(3, 50, 80)
    out = model(feats, torch.tensor([50, 33, 20]),
                torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]]), torch.tensor([4, 2, 1]))
    assert out.encoder_lens.tolist() == [13, 9, 5]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    encoder = dict(model.named_parameters())
    missing = [n for n, p in encoder.items() if n.startswith("encoder.") and
               (p.grad is None or not bool(p.grad.abs().sum() > 0))]
    assert not missing


# --------------------------------------------------------------------------- recognizer


def test_streaming_recognizer_gives_the_offline_result_and_utterance_se_refuses(
    tmp_path: Path,
) -> None:
    from test_streaming import offline_greedy, run_stream, synthetic_audio

    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.features.fbank import compute_cmvn, compute_fbank
    from fairstream.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["hello world"], tmp_path, model_type="char")
    cmvn = compute_cmvn([compute_fbank(synthetic_audio(2.0, seed=s)) for s in range(3)])
    audio = synthetic_audio(1.37, seed=11)
    for mode in ("causal", "utterance"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(
            encoder=EncoderConfig("convrnnt", {**SMALL, "subsampling": 4, "local_layers": 2,
                                               "output_dim": 48, "se_mode": mode}),
            predictor=PredictorConfig(embed_dim=32, hidden_dim=32),
            joiner=JoinerConfig(joint_dim=48),
            vocab_size=tokenizer.vocab_size,
        )).eval()
        expected = offline_greedy(model, audio, cmvn, max_symbols=2)
        assert len(expected) > 3  # not two empty outputs
        rec = StreamingRecognizer(model, tokenizer, cmvn, chunk_ms=160, max_symbols_per_frame=2)
        if mode == "utterance":
            with pytest.raises(InputDataError, match="cannot stream"):
                run_stream(rec, audio, 1013)
        else:
            assert run_stream(rec, audio, 1013)[1].tokens == expected
