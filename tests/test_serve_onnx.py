"""``fairstream serve --onnx``: the same server over the exported models (onnxruntime).

The golden checkpoint is exported to a temporary directory; streamed through the ONNX
backend, every golden utterance must come back with the PyTorch server's text, which is the
golden offline greedy transcript.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import test_serve  # noqa: E402  (tests/ is on sys.path)

from fairstream.export import export_transducer  # noqa: E402
from fairstream.export.runtime import OnnxStreamingRecognizer  # noqa: E402
from fairstream.inference import LoadedModel  # noqa: E402
from fairstream.serve import BatchedRecognizer  # noqa: E402
from fairstream.serve.client import StreamOutcome, stream_audio  # noqa: E402
from fairstream.serve.engine import StreamingEngine  # noqa: E402
from fairstream.serve.onnx_backend import OnnxBackend  # noqa: E402

# the golden checkpoint, its greedy transcripts and its audio, shared with the PyTorch server
golden = test_serve.golden
expected = test_serve.expected
wavs = test_serve.wavs
GOLDEN = test_serve.GOLDEN
NO_ENDPOINT = test_serve.NO_ENDPOINT


@pytest.fixture(scope="module")
def exported(golden: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_transducer(golden.model, golden.tokenizer, golden.cmvn, out)
    return out


def _stream_all(engine: StreamingEngine, wavs: dict[str, np.ndarray]) -> dict[str, Any]:
    """All utterances at once (their chunks share encoder batches), in ragged messages."""
    with test_serve.serving(engine) as (_, url):
        async def run() -> list[StreamOutcome]:
            return await asyncio.gather(*[
                stream_audio(url, a, message_s=0.031 + 0.007 * k, realtime=False)
                for k, a in enumerate(wavs.values())])

        return dict(zip(wavs, asyncio.run(run())))


def test_onnx_server_equals_pytorch_server_and_golden(
        golden: LoadedModel, exported: Path, wavs: dict[str, np.ndarray],
        expected: dict[str, str]) -> None:
    onnx = _stream_all(StreamingEngine(OnnxBackend(exported), endpoint=NO_ENDPOINT), wavs)
    torch = _stream_all(BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn,
                                          endpoint=NO_ENDPOINT), wavs)
    for u in wavs:
        assert onnx[u].close_code == 1000, u
        assert onnx[u].text == torch[u].text == expected[u], u
        last = onnx[u].messages[-1]
        assert last["is_final"] and last["is_eof"] and last["segment"] == 0
        assert len(last["tokens"]) == len(last["timestamps"]) > 0
        assert last["timestamps"] == sorted(last["timestamps"])
        assert len(onnx[u].messages) > 3  # partial results came while streaming


def test_batched_onnx_equals_single_stream_loop(exported: Path,
                                                wavs: dict[str, np.ndarray]) -> None:
    """Streams stepped together (ragged, with long final rests) give the tokens and frames
    of our one-stream onnxruntime loop."""
    engine = StreamingEngine(OnnxBackend(exported), endpoint=NO_ENDPOINT)
    reference = OnnxStreamingRecognizer(exported)
    streams = {u: engine.new_stream() for u in wavs}
    for u, a in wavs.items():  # the whole audio at once: the final rest is several chunks
        engine.accept(streams[u], a[: len(a) // 2])
    ids = list(wavs)
    while any(engine.ready(streams[u]) for u in ids[::2]):
        batch = [streams[u] for u in ids[::2] if engine.ready(streams[u])]
        engine.step(batch, [engine.take_chunk(s) for s in batch])
    for u, a in wavs.items():
        engine.accept(streams[u], a[len(a) // 2:])
    batch = [streams[u] for u in ids]
    results = engine.step(batch, [engine.take_rest(s) for s in batch], final=True)
    for u, r in zip(ids, results):
        assert r.text == reference.transcribe(wavs[u]), u
        assert [round(t / engine.seconds_per_frame) for t in r.timestamps] == reference.frames
        assert r.is_final and r.is_eof


def test_cli_needs_exactly_one_model(exported: Path) -> None:
    from click.testing import CliRunner

    from fairstream.cli import main

    both = CliRunner().invoke(main, ["serve", "--checkpoint", str(GOLDEN / "tiny_transducer.pt"),
                                     "--onnx", str(exported)])
    neither = CliRunner().invoke(main, ["serve"])
    incomplete = CliRunner().invoke(main, ["serve", "--onnx", str(GOLDEN)])
    assert both.exit_code == 2 and "got both" in both.output
    assert neither.exit_code == 2 and "got neither" in neither.output
    assert incomplete.exit_code == 1 and "encoder.onnx" in incomplete.output
