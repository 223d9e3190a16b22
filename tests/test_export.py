"""ONNX export in sherpa-onnx's ``lstm`` layout, checked with the real runtimes.

The golden checkpoint (4x subsampling, char tokens) is exported and its eight utterances are
decoded by our onnxruntime loop and by sherpa-onnx; both must give exactly the PyTorch
streaming greedy transcripts. A small random 8x model checks the encoder graph numerically
(packed conv state, CMVN folding, frame repeat) against the PyTorch streaming encoder.
sherpa-onnx and onnxruntime come from the [serve] extra: a missing one fails these tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from fairstream.errors import InputDataError
from fairstream.export import (
    OnnxStreamingRecognizer,
    encoder_frames,
    export_transducer,
    read_export_info,
    read_tokens,
    sherpa_recognizer,
    sherpa_transcribe,
    tail_padding,
)
from fairstream.features.fbank import Cmvn
from fairstream.inference import SearchConfig, decode_cuts, load_transducer

GOLDEN = Path(__file__).parent / "data" / "golden"


@pytest.fixture(scope="module")
def golden() -> Any:  # Any: LoadedModel
    return load_transducer(GOLDEN / "tiny_transducer.pt")


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:  # Any: JSON
    data: dict[str, Any] = json.loads((GOLDEN / "expected.json").read_text())
    return data


def _audio(cid: str) -> np.ndarray:
    samples, rate = sf.read(GOLDEN / f"{cid}.wav", dtype="float32")
    assert rate == 16000
    return np.asarray(samples)


@pytest.fixture(scope="module")
def exported3(golden: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx3")
    info = export_transducer(golden.model, golden.tokenizer, golden.cmvn, out, int8=True)
    assert info.frame_repeat == 3  # by default, our greedy search's 3 symbols per frame
    return out


def test_export_layout_and_metadata(exported3: Path, golden: Any) -> None:
    import onnxruntime as ort

    names = {p.name for p in exported3.iterdir()}
    assert {"encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt",
            "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"} <= names
    enc = ort.InferenceSession(str(exported3 / "encoder.onnx"))
    meta = enc.get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "lstm"
    assert meta["T"] == meta["decode_chunk_len"] == "16"
    assert [i.name for i in enc.get_inputs()] == ["x", "h", "c"]
    assert [o.name for o in enc.get_outputs()] == ["encoder_out", "next_h", "next_c"]
    h, c = enc.get_inputs()[1].shape, enc.get_inputs()[2].shape
    assert h[0] == c[0] == int(meta["num_encoder_layers"])
    assert h[2] == int(meta["d_model"]) and c[2] == int(meta["rnn_hidden_size"])
    dec = ort.InferenceSession(str(exported3 / "decoder.onnx"))
    dmeta = dec.get_modelmeta().custom_metadata_map
    assert dmeta == {"vocab_size": "39", "context_size": "2"}
    # -1 padding is read as blank: sherpa-onnx's start context [-1, 0] is ours [0, 0]
    pad = dec.run(None, {"y": np.array([[-1, 0]], dtype=np.int64)})[0]
    blank = dec.run(None, {"y": np.array([[0, 0]], dtype=np.int64)})[0]
    np.testing.assert_array_equal(pad, blank)
    symbols = read_tokens(exported3 / "tokens.txt")
    assert symbols[0] == "<blk>" and symbols[1] == "\u2581" and len(symbols) == 39


def test_onnxruntime_and_sherpa_match_pytorch_streaming_greedy(
    exported3: Path, expected: dict[str, Any]
) -> None:
    # the golden hypotheses are PyTorch streaming greedy with 3 symbols per frame
    want = expected["hyps"]["greedy_streaming"]
    info = read_export_info(exported3 / "encoder.onnx")
    ours = OnnxStreamingRecognizer(exported3)
    sherpa = sherpa_recognizer(exported3)
    got_ours = {cid: ours.transcribe(_audio(cid), step=1234) for cid in want}
    got_sherpa = {cid: sherpa_transcribe(sherpa, info, _audio(cid)) for cid in want}
    assert got_ours == want
    assert got_sherpa == want
    assert any(want.values())


def test_int8_runs_in_both_runtimes_alike(exported3: Path, expected: dict[str, Any]) -> None:
    want = expected["hyps"]["greedy_streaming"]
    info = read_export_info(exported3 / "encoder.int8.onnx")
    ours = OnnxStreamingRecognizer(exported3, int8=True)
    sherpa = sherpa_recognizer(exported3, int8=True)
    got_ours = {cid: ours.transcribe(_audio(cid)) for cid in want}
    got_sherpa = {cid: sherpa_transcribe(sherpa, info, _audio(cid)) for cid in want}
    assert got_ours == got_sherpa
    assert sum(got_ours[c] == want[c] for c in want) >= len(want) // 2
    assert (exported3 / "encoder.int8.onnx").stat().st_size < (
        exported3 / "encoder.onnx").stat().st_size


def test_frame_repeat_one_matches_one_symbol_per_frame(golden: Any, expected: dict[str, Any],
                                                        tmp_path: Path) -> None:
    from test_golden_checkpoint import _cuts  # tests/ is on sys.path (no __init__.py)

    info = export_transducer(golden.model, golden.tokenizer, golden.cmvn, tmp_path,
                             frame_repeat=1)  # 4x subsampling: sherpa-onnx's 40 ms frames
    assert not any(m.training for m in golden.model.modules())  # export keeps eval mode
    df = decode_cuts(golden.model, golden.tokenizer, golden.cmvn, _cuts(expected["refs"]),
                     streaming=True, search=SearchConfig(max_symbols_per_frame=1),
                     progress=False)
    want = dict(zip(df.utt_id, df.hyp))
    sherpa = sherpa_recognizer(tmp_path)
    assert {cid: sherpa_transcribe(sherpa, info, _audio(cid)) for cid in want} == want


def _random_model(subsampling: int, layers: int) -> Any:  # Any: Transducer
    from fairstream.models.encoders.lstm import LSTMEncoder
    from fairstream.models.joiner import Joiner
    from fairstream.models.predictor import StatelessPredictor
    from fairstream.models.transducer import Transducer

    torch.manual_seed(0)
    enc = LSTMEncoder(80, subsampling=subsampling, conv_channels=4, num_layers=layers,
                      hidden_dim=24, output_dim=16, dropout=0.0)
    pred = StatelessPredictor(11, 12, context_size=3, dropout=0.0)
    return Transducer(enc, pred, Joiner(16, 12, 20, 11)).eval()


def test_encoder_graph_equals_pytorch_streaming_8x(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = _random_model(8, 2)
    rng = np.random.default_rng(0)
    cmvn = Cmvn(mean=rng.normal(size=80).astype(np.float32),
                std=rng.uniform(0.5, 2.0, size=80).astype(np.float32))
    with pytest.raises(InputDataError, match="tokenizer has 39 tokens"):
        export_transducer(model, _FakeTokenizer(39), cmvn, tmp_path / "bad")
    info = export_transducer(model, _FakeTokenizer(11), cmvn, tmp_path / "x", chunk_ms=320,
                             frame_repeat=2)
    assert info.chunk_frames == 32
    sess = ort.InferenceSession(str(tmp_path / "x" / "encoder.onnx"))
    raw = rng.normal(size=(3 * 32, 80)).astype(np.float32) * 3
    h = np.zeros((2, 1, 24), dtype=np.float32)
    c = np.zeros((2, 1, info.state_columns), dtype=np.float32)
    outs = []
    for k in range(3):
        y, h, c = sess.run(None, {"x": raw[None, 32 * k:32 * (k + 1)], "h": h, "c": c})
        outs.append(y[0])
    got = np.concatenate(outs)
    with torch.no_grad():
        x = cmvn.apply(torch.from_numpy(raw)).unsqueeze(0)
        y, _ = model.encode(x, torch.tensor([raw.shape[0]]))
        want = model.joiner.project_encoder(y)[0].repeat_interleave(2, dim=0).numpy()
    assert got.shape == want.shape == (3 * 4 * 2, 20)
    np.testing.assert_allclose(got, want, atol=1e-4)


class _FakeTokenizer:
    """Symbols ``<blk>, a, b, ...`` for a model built in a test."""

    def __init__(self, n: int) -> None:
        self.vocab_size = n

    def id_to_piece(self, i: int) -> str:
        return "<blk>" if i == 0 else chr(ord("a") + i - 1)


def test_unsupported_models_are_named(tmp_path: Path) -> None:
    from fairstream.models.predictor import LSTMPredictor
    from fairstream.models.transducer import Transducer

    base = _random_model(4, 1)
    model = Transducer(base.encoder, LSTMPredictor(11, 8, 12), base.joiner)
    with pytest.raises(InputDataError, match="LSTMPredictor"):
        export_transducer(model, _FakeTokenizer(11), Cmvn(np.zeros(80), np.ones(80)), tmp_path)
    with pytest.raises(InputDataError, match="chunk_ms 100"):
        export_transducer(base, _FakeTokenizer(11), Cmvn(np.zeros(80), np.ones(80)), tmp_path,
                          chunk_ms=100)


@pytest.mark.parametrize("samples", [400, 16000, 400 + 160 * 31, 400 + 160 * 32, 12345])
def test_tail_padding_completes_the_last_window(samples: int, exported3: Path) -> None:
    info = read_export_info(exported3 / "encoder.onnx")
    frames = 1 + (samples - 400) // 160
    pad = tail_padding(samples, info)
    total = 1 + (samples + pad - 400) // 160
    windows = -(-frames // info.chunk_frames)
    assert total == windows * info.chunk_frames + 1  # sherpa-onnx runs `windows` windows
    assert tail_padding(samples + pad - 1, info) > 0 or pad == 0


def _sherpa_untrimmed(recognizer: Any, info: Any, samples: np.ndarray) -> tuple[str, int]:
    """Text sherpa-onnx finds with the tail padding and nothing dropped, and how many
    ``encoder_out`` frames it searched (the windows it ran)."""
    stream = recognizer.create_stream()
    stream.accept_waveform(16000, samples)
    stream.accept_waveform(16000, np.zeros(tail_padding(len(samples), info), dtype=np.float32))
    stream.input_finished()
    windows = 0
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
        windows += 1
    searched = windows * info.chunk_frames // info.subsampling * info.frame_repeat
    return " ".join(recognizer.get_result(stream).split()), searched


@pytest.mark.parametrize("chunk_ms", [80, 320])
def test_sherpa_searches_only_the_encoder_frames_of_real_audio(chunk_ms: int,
                                                               tmp_path: Path) -> None:
    # a random 8x model emits a token on nearly every frame, so any frame over the tail
    # padding shows; audio lengths end anywhere within a 320 ms window
    model = _random_model(8, 1)
    rng = np.random.default_rng(1)
    cmvn = Cmvn(mean=np.full(80, -8.0, dtype=np.float32), std=np.full(80, 3.0, dtype=np.float32))
    info = export_transducer(model, _FakeTokenizer(11), cmvn, tmp_path, chunk_ms=chunk_ms,
                             frame_repeat=1)
    ours = OnnxStreamingRecognizer(tmp_path)
    sherpa = sherpa_recognizer(tmp_path)
    extra = appended = 0
    for n in (400, 400 + 160 * 8, 400 + 160 * 9 + 77, 400 + 160 * 17, 400 + 160 * 31,
              400 + 160 * 40 - 1, 16000 + 123):
        audio = (rng.normal(size=n) * 0.1).astype(np.float32)
        want = ours.transcribe(audio)
        assert len(ours.frames) and max(ours.frames) < encoder_frames(n, info)
        assert sherpa_transcribe(sherpa, info, audio) == want, n
        text, searched = _sherpa_untrimmed(sherpa, info, audio)
        assert searched >= encoder_frames(n, info)
        extra += searched > encoder_frames(n, info)
        appended += text != want
        assert text.startswith(want), n  # frames of real audio: the same tokens
        if searched == encoder_frames(n, info):
            assert text == want, n  # no frame over the padding alone: nothing to drop
    # with T = S every window ends on a frame PyTorch computes; with T = 4 S, 6 of the 7
    # lengths (all but 32 feature frames) leave frames over the padding, which add tokens
    assert (extra, appended > 0) == ((0, False) if chunk_ms == 80 else (6, True))


def test_cli_export(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fairstream.cli import main

    result = CliRunner().invoke(main, ["export", "--checkpoint",
                                       str(GOLDEN / "tiny_transducer.pt"), "--out",
                                       str(tmp_path / "onnx"), "--chunk-ms", "80"])
    assert result.exit_code == 0, result.output
    assert "snip_edges=True" in result.output and "from_transducer" in result.output
    assert read_export_info(tmp_path / "onnx" / "encoder.onnx").chunk_frames == 8
    bad = CliRunner().invoke(main, ["export", "--checkpoint",
                                    str(GOLDEN / "tiny_transducer.pt"), "--out",
                                    str(tmp_path / "o2"), "--chunk-ms", "50"])
    assert bad.exit_code != 0 and "chunk_ms 50" in bad.output


# ---------------------------------------------------------------------- generic layout
def _small_model(name: str, **extra: object) -> Any:  # Any: Transducer
    from test_encoder_contract import SMALL  # tests/ is on sys.path (no __init__.py)

    from fairstream.models.encoders import ENCODERS
    from fairstream.models.joiner import Joiner
    from fairstream.models.predictor import StatelessPredictor
    from fairstream.models.transducer import Transducer

    torch.manual_seed(0)
    enc = ENCODERS[name](80, **{**SMALL[name], **extra})
    pred = StatelessPredictor(11, 12, context_size=2, dropout=0.0)
    return Transducer(enc, pred, Joiner(int(enc.output_dim), 12, 20, 11)).eval()


def _cmvn(seed: int) -> Cmvn:
    rng = np.random.default_rng(seed)
    return Cmvn(mean=rng.normal(size=80).astype(np.float32) - 6,
                std=rng.uniform(0.5, 2.0, size=80).astype(np.float32))


class _Detok(_FakeTokenizer):
    def decode(self, ids: list[int]) -> str:
        return "".join(self.id_to_piece(i) for i in ids if i)


@pytest.mark.parametrize("name", ["contextnet", "convrnnt", "transformer"])
def test_generic_encoder_graph_equals_pytorch_stream(name: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from fairstream.export.generic import flatten_state

    model = _small_model(name)
    cmvn = _cmvn(1)
    enc = model.encoder
    frames = 4 * enc.subsampling
    info = export_transducer(model, _FakeTokenizer(11), cmvn, tmp_path, chunk_ms=10 * frames,
                             frame_repeat=2)
    assert info.model_type == "fairstream-generic" and info.chunk_frames == frames
    assert read_export_info(tmp_path / "encoder.onnx") == info
    sess = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "fairstream-generic"
    names = [s.name for s in info.state]
    assert names == [f"state_{i}" for i in range(len(names))]
    assert [o.name for o in sess.get_outputs()] == ["encoder_out"] + [f"next_{n}" for n in names]
    declared = {i.name for i in sess.get_inputs()}
    start = flatten_state(enc.init_state(1))
    assert [tuple(t.shape) for t in start] == [s.shape for s in info.state]
    state = [t.numpy() for t in start]
    torch_state = None
    rng = np.random.default_rng(2)
    for k in range(5):
        raw = (rng.normal(size=(1, frames, 80)) * 3 - 6).astype(np.float32)
        feeds = {"x": raw, **dict(zip(names, state))}
        y, *state = sess.run(None, {n: v for n, v in feeds.items() if n in declared})
        with torch.no_grad():
            want, lens, torch_state = enc.stream(cmvn.apply(torch.from_numpy(raw)),
                                                 torch.tensor([frames]), torch_state)
            want = model.joiner.project_encoder(want).repeat_interleave(2, dim=1).numpy()
        assert int(lens[0]) == frames // enc.subsampling
        np.testing.assert_allclose(y, want, atol=1e-4, err_msg=f"{name} chunk {k}")
        for got_t, want_t in zip(state, flatten_state(torch_state)):
            np.testing.assert_allclose(got_t, want_t.numpy(), atol=1e-4)


@pytest.mark.parametrize("name", ["contextnet", "convrnnt", "transformer"])
def test_generic_export_greedy_equals_pytorch_streaming(name: str, tmp_path: Path) -> None:
    from fairstream.decoding.streaming import StreamingRecognizer

    model = _small_model(name)
    cmvn = Cmvn(mean=np.full(80, -8.0, dtype=np.float32), std=np.full(80, 3.0, dtype=np.float32))
    chunk_ms = 10 * 4 * model.encoder.subsampling
    export_transducer(model, _FakeTokenizer(11), cmvn, tmp_path, chunk_ms=chunk_ms)
    ours = OnnxStreamingRecognizer(tmp_path)
    torch_rec = StreamingRecognizer(model, _Detok(11), cmvn, chunk_ms=chunk_ms)
    rng = np.random.default_rng(3)
    texts = []
    for n in (400, 400 + 160 * 37, 16000 + 123):
        audio = (rng.normal(size=n) * 0.1).astype(np.float32)
        torch_rec.reset()
        torch_rec.accept(audio)
        want = torch_rec.finish()
        got = ours.transcribe(audio)
        assert ours.tokens == list(want.tokens), (name, n)
        texts.append(got)
    assert any(texts)


def test_generic_export_refusals(tmp_path: Path) -> None:
    cmvn = Cmvn(np.zeros(80), np.ones(80))
    with pytest.raises(InputDataError, match="ConformerEncoder.*loops in Python"):
        export_transducer(_small_model("conformer"), _FakeTokenizer(11), cmvn, tmp_path)
    with pytest.raises(InputDataError, match="se_mode='utterance'"):
        export_transducer(_small_model("convrnnt", se_mode="utterance"), _FakeTokenizer(11),
                          cmvn, tmp_path)


def test_sherpa_is_not_given_a_generic_export(tmp_path: Path) -> None:
    import subprocess
    import sys

    export_transducer(_small_model("convrnnt"), _FakeTokenizer(11), _cmvn(0), tmp_path,
                      chunk_ms=320)
    with pytest.raises(InputDataError, match="fairstream-generic"):
        sherpa_recognizer(tmp_path)
    # sherpa-onnx itself refuses the model type (in a subprocess: it may exit the process)
    code = ("import sherpa_onnx, sys; d = sys.argv[1]; "
            "sherpa_onnx.OnlineRecognizer.from_transducer(tokens=d + '/tokens.txt', "
            "encoder=d + '/encoder.onnx', decoder=d + '/decoder.onnx', "
            "joiner=d + '/joiner.onnx'); print('loaded')")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "loaded" not in run.stdout, run.stdout + run.stderr


def test_the_server_names_a_generic_export(tmp_path: Path) -> None:
    from fairstream.serve.onnx_backend import OnnxBackend

    export_transducer(_small_model("convrnnt"), _FakeTokenizer(11), _cmvn(0), tmp_path,
                      chunk_ms=320)
    with pytest.raises(InputDataError, match="'lstm' layout.*fairstream-generic"):
        OnnxBackend(tmp_path)
