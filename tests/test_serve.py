"""The streaming server: batched recognition, the WebSocket protocol, endpointing and limits.

The golden checkpoint (``tests/data/golden``) and its eight utterances with their offline
greedy transcripts are the reference: a streamed file must come back with exactly that text,
whichever other streams share its batches.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("prometheus_client")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosedError, InvalidStatus  # noqa: E402

from fairstream.decoding.streaming import StreamingRecognizer  # noqa: E402
from fairstream.inference import LoadedModel, load_transducer  # noqa: E402
from fairstream.serve import BatchedRecognizer, EndpointConfig, EndpointRule  # noqa: E402
from fairstream.serve.client import stream_audio  # noqa: E402
from fairstream.serve.engine import StreamingEngine  # noqa: E402
from fairstream.serve.server import RecognitionServer, ServeConfig  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden"
NO_ENDPOINT = EndpointConfig(enabled=False)


@pytest.fixture(scope="module")
def golden() -> LoadedModel:
    return load_transducer(GOLDEN / "tiny_transducer.pt")


@pytest.fixture(scope="module")
def expected() -> dict[str, str]:
    hyps: dict[str, str] = json.loads((GOLDEN / "expected.json").read_text())["hyps"][
        "greedy_offline"]
    return hyps


@pytest.fixture(scope="module")
def wavs(expected: dict[str, str]) -> dict[str, np.ndarray]:
    import soundfile as sf

    return {u: sf.read(GOLDEN / f"{u}.wav", dtype="float32")[0] for u in sorted(expected)}


@contextmanager
def running(golden: LoadedModel, endpoint: EndpointConfig = NO_ENDPOINT,
            **limits: Any) -> Iterator[tuple[RecognitionServer, str]]:  # Any: ServeConfig fields
    """A server for the golden checkpoint on a free port."""
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=endpoint)
    with serving(engine, **limits) as pair:
        yield pair


@contextmanager
def serving(engine: StreamingEngine,
            **limits: Any) -> Iterator[tuple[RecognitionServer, str]]:  # Any: ServeConfig fields
    """A server for ``engine`` on a free port, its event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = RecognitionServer(engine, ServeConfig(port=0, **limits))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    try:
        yield server, f"ws://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _feed_ragged(engine: BatchedRecognizer, audio: dict[str, np.ndarray]) -> dict[str, Any]:
    """Feed every stream in messages of a different size, batching whatever is ready."""
    ids = sorted(audio)
    streams = {u: engine.new_stream() for u in ids}
    pos = dict.fromkeys(ids, 0)
    results: dict[str, list[Any]] = {u: [] for u in ids}
    while any(pos[u] < len(audio[u]) for u in ids) or any(engine.ready(s)
                                                          for s in streams.values()):
        for k, u in enumerate(ids):
            n = 700 + 613 * k
            engine.accept(streams[u], audio[u][pos[u]: pos[u] + n])
            pos[u] += n
        ready = [u for u in ids if engine.ready(streams[u])]
        if ready:
            out = engine.step([streams[u] for u in ready],
                              [engine.take_chunk(streams[u]) for u in ready])
            for u, r in zip(ready, out):
                results[u].append(r)
    final = engine.step(list(streams.values()),
                        [engine.take_rest(s) for s in streams.values()], final=True)
    for u, r in zip(ids, final):
        results[u].append(r)
    return results


def test_batched_streams_equal_single_stream_and_offline(
        golden: LoadedModel, wavs: dict[str, np.ndarray], expected: dict[str, str]) -> None:
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=NO_ENDPOINT)
    results = _feed_ragged(engine, wavs)
    for u, audio in wavs.items():
        single = StreamingRecognizer(golden.model, golden.tokenizer, golden.cmvn)
        partials = single.accept(audio)
        final = single.finish()
        got = results[u]
        assert [r.text for r in got[:-1]] == [p.text for p in partials], u
        assert got[-1].text == final.text == expected[u], u
        assert got[-1].timestamps == pytest.approx(final.timestamps), u
        assert got[-1].is_final and got[-1].is_eof and not any(r.is_final for r in got[:-1])
        assert len(got[-1].tokens) == len(final.tokens)
    assert any(expected.values())


def test_endpoint_rules() -> None:
    cfg = EndpointConfig()
    assert cfg.is_endpoint(has_tokens=False, trailing_silence=2.4, length=2.4)  # rule1
    assert not cfg.is_endpoint(has_tokens=False, trailing_silence=2.3, length=2.3)
    assert cfg.is_endpoint(has_tokens=True, trailing_silence=1.2, length=3.0)  # rule2
    assert not cfg.is_endpoint(has_tokens=True, trailing_silence=1.1, length=3.0)
    assert cfg.is_endpoint(has_tokens=True, trailing_silence=0.0, length=20.0)  # rule3
    assert not EndpointConfig(enabled=False).is_endpoint(has_tokens=True,
                                                         trailing_silence=9.0, length=30.0)


def test_endpoint_splits_segments_and_restarts_search(
        golden: LoadedModel, wavs: dict[str, np.ndarray]) -> None:
    never = EndpointRule(False, 1e9, 0.0)
    max_len = EndpointConfig(rule1=never, rule2=never, rule3=EndpointRule(False, 0.0, 0.5))
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=max_len)
    u = sorted(wavs)[0]
    results = _feed_ragged(engine, {u: wavs[u]})[u]
    segments = [r.segment for r in results]
    assert segments == sorted(segments) and segments[-1] >= 3
    for before, after in zip(results, results[1:]):
        if after.segment != before.segment:  # a segment ends with its final text
            assert before.is_final and not before.is_eof
            assert after.segment == before.segment + 1
            assert after.start_time > before.start_time
    ends = [r for r in results if r.is_final]
    assert len(ends) == segments[-1] + 1  # one final result per segment
    # each segment is at most 0.5 s plus a chunk long: the search restarted each time
    spf = engine.seconds_per_frame
    assert all(t <= 0.5 + engine.chunk_ms / 1000 + spf for r in ends for t in r.timestamps)
    silence = EndpointConfig(rule1=EndpointRule(False, 0.5, 0.0), rule2=never, rule3=never)
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=silence)
    quiet = _feed_ragged(engine, {"zeros": np.zeros(3 * 16000, dtype=np.float32)})["zeros"]
    assert quiet[-1].segment >= 2 or any(r.text for r in quiet)


def test_server_returns_the_offline_transcript_for_concurrent_clients(
        golden: LoadedModel, wavs: dict[str, np.ndarray], expected: dict[str, str]) -> None:
    with running(golden) as (server, url):
        async def all_streams() -> list[Any]:
            first = stream_audio(url, wavs[sorted(wavs)[0]], message_s=0.05, realtime=True)
            rest = [stream_audio(url, a, message_s=0.037, realtime=False) for a in wavs.values()]
            return await asyncio.gather(first, *rest)

        outcomes = asyncio.run(all_streams())
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
    ids = [sorted(wavs)[0], *wavs]
    for u, out in zip(ids, outcomes):
        assert out.text == expected[u], u
        assert out.close_code == 1000
        last = out.messages[-1]
        assert last["is_final"] and last["is_eof"] and last["segment"] == 0
        assert len(last["tokens"]) == len(last["timestamps"])
        assert set(last) >= {"text", "segment", "is_final", "timestamps", "tokens"}
        assert len(out.messages) > 3  # partial results came while streaming
    assert _metric(metrics, "fairstream_active_streams") == 0
    batches = _metric(metrics, "fairstream_batches_total")
    assert _metric(metrics, "fairstream_chunks_processed_total") > batches > 0  # shared calls
    assert _metric(metrics, "fairstream_partial_latency_seconds_count") > 0
    assert 0 < _metric(metrics, "fairstream_rtf") < 10
    assert _metric(metrics, "fairstream_streams_total", outcome="done") == 9


def _metric(text: bytes, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels} in the metrics")


async def _raw(url: str, messages: list[bytes | str], **kw: Any) -> tuple[int | None, str]:
    async with connect(url, **kw) as ws:
        for m in messages:
            await ws.send(m)
        try:
            async for _ in ws:
                pass
        except ConnectionClosedError:
            pass  # closed with an error code: returned below
        await ws.wait_closed()
    return ws.close_code, ws.close_reason or ""


def test_bad_input_closes_only_its_own_stream(
        golden: LoadedModel, wavs: dict[str, np.ndarray], expected: dict[str, str]) -> None:
    u = sorted(wavs)[1]
    good_audio = wavs[u].astype("<f4").tobytes()
    nan = np.zeros(1600, dtype="<f4")
    nan[7] = np.nan
    limit = int(len(wavs[u]) / 16000) + 1  # the good stream fits in it
    with running(golden, max_message_bytes=64_000, max_session_s=limit,
                 idle_timeout_s=0.5) as (_, url):
        async def together() -> list[Any]:
            good = stream_audio(url, wavs[u], message_s=0.1, realtime=True)
            bad = [
                _raw(url, [good_audio[:4000], good_audio[4000:4001] + b"\0\0"]),
                _raw(url, [good_audio[:4000], "hello"]),
                _raw(url, [nan.tobytes()]),
                _raw(url, [np.zeros(20_000, dtype="<f4").tobytes()]),  # 80 kB > 64 kB
                _raw(url, [np.zeros(8000, dtype="<f4").tobytes()] * (2 * limit + 1)),
                _raw(url, [np.zeros(800, dtype="<f4").tobytes()]),  # then silence: idle
            ]
            return await asyncio.gather(good, *bad)

        good, wrong_len, text, non_finite, too_big, too_long, idle = asyncio.run(together())
    assert good.text == expected[u] and good.close_code == 1000
    assert wrong_len[0] == 1007 and "3 bytes is not a whole number of float32" in wrong_len[1]
    assert text[0] == 1003 and "got text 'hello'" in text[1]
    assert non_finite[0] == 1007 and "1 non-finite samples" in non_finite[1]
    assert too_big[0] == 1009
    assert too_long[0] == 1008 and f"longer than the {limit} s limit" in too_long[1]
    assert idle[0] == 1008 and "idle for more than 0.5 s" in idle[1]


def test_token_auth(golden: LoadedModel, wavs: dict[str, np.ndarray],
                    expected: dict[str, str]) -> None:
    u = sorted(wavs)[2]
    with running(golden, token="s3cret") as (_, url):
        for headers in (None, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as exc:
                asyncio.run(_raw(url, ["Done"], additional_headers=headers))
            assert exc.value.response.status_code == 401
        ok = asyncio.run(stream_audio(url, wavs[u], realtime=False, token="s3cret"))
        assert ok.text == expected[u]
        code, _ = asyncio.run(_raw(f"{url}/?token=s3cret", ["Done"]))
        assert code == 1000


def test_max_streams_refusal_and_health(golden: LoadedModel) -> None:
    with running(golden, max_streams=2) as (server, url):
        async def three() -> tuple[int | None, str]:
            async with connect(url) as a, connect(url) as b:
                for ws in (a, b):
                    await ws.send(np.zeros(800, dtype="<f4").tobytes())
                while server.active_streams < 2:
                    await asyncio.sleep(0.01)
                refused = await _raw(url, [])
                for ws in (a, b):
                    await ws.send("Done")
            return refused

        code, reason = asyncio.run(three())
        health = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz")
        assert health.status == 200 and health.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope")
        missing.value.close()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
    assert code == 1013 and "server full: 2 streams open" in reason
    assert missing.value.code == 404
    assert _metric(metrics, "fairstream_streams_total", outcome="refused") == 1
    assert _metric(metrics, "process_cpu_seconds_total") > 0


def test_graceful_shutdown_finishes_open_streams(golden: LoadedModel,
                                                 wavs: dict[str, np.ndarray]) -> None:
    u = sorted(wavs)[0]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=NO_ENDPOINT)
    server = RecognitionServer(engine, ServeConfig(port=0, shutdown_grace_s=0.3))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    url = f"ws://127.0.0.1:{server.port}"
    half = wavs[u][: len(wavs[u]) // 2]

    stopped = []

    async def interrupted() -> tuple[list[Any], int | None, str]:
        async with connect(url) as ws:
            await ws.send(half.astype("<f4").tobytes())
            while server.active_streams < 1:
                await asyncio.sleep(0.01)
            stopped.append(asyncio.run_coroutine_threadsafe(server.shutdown(), loop))
            got = [m async for m in ws]
        return got, ws.close_code, ws.close_reason

    try:
        got, code, reason = asyncio.run(interrupted())
        stopped[0].result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        loop.close()
    reference = StreamingRecognizer(golden.model, golden.tokenizer, golden.cmvn)
    reference.accept(half)
    last = json.loads(got[-2])
    assert got[-1] == "Done!" and last["is_eof"] and last["is_final"]
    assert last["text"] == reference.finish().text
    assert code == 1001 and reason == "server shutting down"


def test_client_cli(golden: LoadedModel, expected: dict[str, str]) -> None:
    from click.testing import CliRunner

    from fairstream.cli import main

    u = sorted(expected)[3]
    with running(golden) as (_, url):
        result = CliRunner().invoke(main, ["client", str(GOLDEN / f"{u}.wav"), "--url", url,
                                           "--fast"])
        refused = CliRunner().invoke(main, ["client", str(GOLDEN / f"{u}.wav"), "--url",
                                            url.replace(url.rsplit(":", 1)[1], "1"), "--fast"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == expected[u]
    assert lines[-2] == f"final [0] {expected[u]}"
    assert refused.exit_code != 0 and "cannot connect" in refused.output
