"""A streaming recognition server speaking sherpa-onnx's WebSocket protocol.

Protocol (see ``docs/serve.md``): a client opens ``ws://HOST:PORT`` and sends binary
messages of float32 little-endian mono PCM at 16 kHz, any number of samples each, then the
text message ``Done``. The server answers with JSON text messages, one per model chunk
processed, ``{"text", "segment", "is_final", "is_eof", "start_time", "tokens",
"timestamps"}``; after ``Done`` it sends the last result (``is_final`` and ``is_eof`` true),
the text message ``Done!`` and closes the connection with code 1000.

One scheduler task collects every stream with a chunk ready, takes the chunks and runs one
batched encoder + greedy step (:class:`~fairstream.serve.engine.StreamingEngine`) in a
worker thread, so receiving audio and sending results continue during the computation.

A stream that breaks a limit or sends malformed data is closed with a close code and a reason
that names the problem; other streams do not notice. Plain HTTP ``GET /healthz``,
``GET /metrics`` (Prometheus text format) and the browser page ``GET /`` (microphone to this
server, with ``/worklet.js``) are answered on the same port.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fairstream.serve.engine import Stream, StreamingEngine, StreamResult

__all__ = ["CloseCode", "RecognitionServer", "ServeConfig"]

logger = logging.getLogger(__name__)


class CloseCode:
    """WebSocket close codes the server uses (RFC 6455 section 7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    UNSUPPORTED_DATA = 1003  # text where audio is expected
    INVALID_DATA = 1007  # wrong byte length, non-finite samples
    POLICY = 1008  # session too long, idle for too long
    TOO_BIG = 1009  # message larger than max_message_bytes (closed by websockets)
    TRY_AGAIN_LATER = 1013  # too many streams


@dataclass(frozen=True)
class ServeConfig:
    """Server limits.

    Attributes:
        host: Address to listen on.
        port: TCP port (0 picks a free one; see :attr:`RecognitionServer.port`).
        max_streams: Concurrent streams; a connection beyond it is closed with 1013.
        max_message_bytes: Largest message accepted (websockets closes with 1009 beyond).
        max_session_s: Most audio one stream may send, in seconds.
        idle_timeout_s: A stream that sends nothing for this long is closed.
        token: If set, clients must send ``Authorization: Bearer TOKEN`` (or, for browsers,
            ``?token=TOKEN`` in the URL); others get HTTP 401.
        max_batch: Most streams in one encoder call.
        shutdown_grace_s: On shutdown, how long open streams may keep sending before the
            audio received so far is finished and they are closed with 1001.
    """

    host: str = "127.0.0.1"
    port: int = 6006
    max_streams: int = 200
    max_message_bytes: int = 1 << 20
    max_session_s: float = 3600.0
    idle_timeout_s: float = 30.0
    token: str | None = None
    max_batch: int = 256
    shutdown_grace_s: float = 10.0


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.active = Gauge("fairstream_active_streams", "Open recognition streams", registry=r)
        self.streams = Counter("fairstream_streams", "Streams ended, by outcome", ["outcome"],
                               registry=r)
        self.chunks = Counter("fairstream_chunks_processed", "Model chunks processed",
                              registry=r)
        self.batches = Counter("fairstream_batches", "Batched encoder calls", registry=r)
        self.audio = Counter("fairstream_audio_seconds", "Audio seconds processed", registry=r)
        self.compute = Counter("fairstream_compute_seconds",
                               "Wall seconds spent in encoder + search", registry=r)
        self.rtf = Gauge("fairstream_rtf", "Compute seconds per audio second since start",
                         registry=r)
        self.latency = Histogram(
            "fairstream_partial_latency_seconds",
            "From the arrival of the audio completing a chunk to its result being sent",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0), registry=r)


@dataclass(eq=False)
class _Session:
    ws: ServerConnection
    stream: Stream
    outbox: asyncio.Queue[tuple[str, float | None] | None] = field(
        default_factory=asyncio.Queue)
    done: bool = False  # the client sent Done (or the server is finishing the stream)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RecognitionServer:
    """The WebSocket server around a :class:`StreamingEngine` (PyTorch or ONNX backend).

    Use ``await server.start()``, then ``await server.shutdown()`` (which lets open streams
    finish); :attr:`port` is the bound port.
    """

    def __init__(self, engine: StreamingEngine, config: ServeConfig | None = None) -> None:
        self.engine = engine
        self.config = config or ServeConfig()
        self.metrics = _Metrics()
        self.http_routes: dict[str, Callable[[], tuple[str, bytes]]] = {
            "/healthz": lambda: ("text/plain; charset=utf-8", b"ok\n"),
            "/metrics": lambda: (CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)),
            **_page_routes(),
        }
        self._sessions: dict[ServerConnection, _Session] = {}
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairstream-nn")
        self._server: Server | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._handlers: dict[asyncio.Task[None], _Session] = {}
        self._closing = False
        self._audio_total = 0.0
        self._compute_total = 0.0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_streams(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule())
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            max_size=self.config.max_message_bytes,
            compression=None,
        )
        logger.info("listening on ws://%s:%d", self.config.host, self.port)

    async def shutdown(self) -> None:
        """Stop accepting connections, let open streams finish, then stop.

        Streams still open after ``shutdown_grace_s`` get the result of the audio received
        so far (final, end of stream) and are closed with 1001.
        """
        self._closing = True
        if self._server is not None:
            self._server.close(close_connections=False)
        handlers = set(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=self.config.shutdown_grace_s)
            waiting = []
            for task, session in list(self._handlers.items()):
                if not session.done:  # still receiving: finish with the audio it has sent
                    session.draining = True
                    task.cancel()
                waiting.append(task)
            if waiting:
                await asyncio.wait(waiting, timeout=self.config.shutdown_grace_s)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        self._executor.shutdown(wait=True)

    # --- HTTP and handshake -----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            route = self.http_routes.get(url.path)
            if route is None:
                return connection.respond(404, f"no such page: {url.path}\n")
            content_type, body = route()
            return Response(200, "OK", Headers([("Content-Type", content_type),
                                                ("Content-Length", str(len(body)))]), body)
        if self.config.token is not None:
            given = request.headers.get("Authorization", "")
            given = given[len("Bearer "):] if given.startswith("Bearer ") else ""
            if not given:
                given = parse_qs(url.query).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), self.config.token.encode()):
                self.metrics.streams.labels("unauthorized").inc()
                return connection.respond(401, "missing or wrong bearer token\n")
        return None

    # --- one connection ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self._closing:
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if len(self._sessions) >= self.config.max_streams:
            self.metrics.streams.labels("refused").inc()
            await ws.close(CloseCode.TRY_AGAIN_LATER,
                           f"server full: {self.config.max_streams} streams open, retry later")
            return
        task = asyncio.current_task()
        assert task is not None
        session = _Session(ws=ws, stream=self.engine.new_stream())
        self._handlers[task] = session
        self._sessions[ws] = session
        self.metrics.active.set(len(self._sessions))
        sender = asyncio.create_task(self._send_loop(session))
        outcome = "done"
        try:
            try:
                await self._receive(session)
            except asyncio.CancelledError:
                if not session.draining:
                    raise
                task.uncancel()  # cancelled by shutdown() to end the receive phase only
            session.done = True
            self._wake.set()
            await session.finished.wait()
            await session.outbox.put(None)
            await sender
            if session.draining:
                outcome = "shutdown"
                await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            else:
                await ws.close(CloseCode.NORMAL, "done")
        except _Refused as exc:
            outcome = "rejected"
            logger.info("closing stream from %s: %s", ws.remote_address, exc.reason)
            await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            outcome = "disconnected"
        finally:
            sender.cancel()
            del self._sessions[ws]
            self._handlers.pop(task, None)
            self.metrics.active.set(len(self._sessions))
            self.metrics.streams.labels(outcome).inc()

    async def _receive(self, session: _Session) -> None:
        """Feed the stream's audio until ``Done``; raise :class:`_Refused` on bad input."""
        cfg = self.config
        max_samples = cfg.max_session_s * self.engine.sample_rate
        while True:
            try:
                message = await asyncio.wait_for(session.ws.recv(), cfg.idle_timeout_s)
            except TimeoutError:
                raise _Refused(CloseCode.POLICY,
                               f"idle for more than {cfg.idle_timeout_s:g} s") from None
            if isinstance(message, str):
                if message == "Done":
                    return
                raise _Refused(CloseCode.UNSUPPORTED_DATA,
                               f"expected binary float32 audio or the text 'Done', got text "
                               f"{message[:40]!r}")
            samples = _decode_audio(message)
            if session.stream.samples_accepted + samples.shape[0] > max_samples:
                raise _Refused(CloseCode.POLICY,
                               f"session longer than the {cfg.max_session_s:g} s limit")
            if self.engine.accept(session.stream, samples, time.monotonic()):
                self._wake.set()

    async def _send_loop(self, session: _Session) -> None:
        while (item := await session.outbox.get()) is not None:
            text, arrival = item
            await session.ws.send(text)
            if arrival is not None:
                self.metrics.latency.observe(time.monotonic() - arrival)

    # --- batching ---------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                ready = [s for s in self._sessions.values()
                         if self.engine.ready(s.stream) and not s.finished.is_set()]
                ending = [s for s in self._sessions.values()
                          if s.done and not s.finished.is_set()
                          and not self.engine.ready(s.stream)]
                if ready:
                    batch = ready[: self.config.max_batch]
                    chunks = [self.engine.take_chunk(s.stream) for s in batch]
                    arrivals: list[float | None] = [s.stream.chunk_arrivals.popleft()
                                                    for s in batch]
                    await self._run(loop, batch, chunks, arrivals, final=False)
                elif ending:
                    batch = ending[: self.config.max_batch]
                    chunks = [self.engine.take_rest(s.stream) for s in batch]
                    await self._run(loop, batch, chunks, [None] * len(batch), final=True)
                    for s in batch:
                        s.finished.set()
                else:
                    break

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Session],
                   chunks: list[np.ndarray], arrivals: list[float | None], *,
                   final: bool) -> None:
        streams = [s.stream for s in batch]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, lambda: self.engine.step(streams, chunks, final=final))
        except Exception:
            logger.exception("recognition step failed for %d streams", len(batch))
            for s in batch:  # these streams cannot continue; the others are unaffected
                s.done = True
                s.finished.set()
                await s.ws.close(1011, "internal error while decoding this stream")
            return
        elapsed = time.perf_counter() - start
        audio = sum(c.shape[0] for c in chunks) * self.engine.fbank_config.frame_shift
        self._compute_total += elapsed
        self._audio_total += audio
        m = self.metrics
        m.batches.inc()
        m.chunks.inc(len(batch))
        m.audio.inc(audio)
        m.compute.inc(elapsed)
        if self._audio_total > 0:
            m.rtf.set(self._compute_total / self._audio_total)
        for s, result, arrival in zip(batch, results, arrivals):
            await s.outbox.put((_to_json(result), arrival))
            if final:
                await s.outbox.put(("Done!", None))


def _page_routes() -> dict[str, Callable[[], tuple[str, bytes]]]:
    """The browser page (``/``) and its AudioWorklet (``/worklet.js``), from package data."""
    static = resources.files("fairstream.serve") / "static"
    pages = {"/": ("index.html", "text/html; charset=utf-8"),
             "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8")}
    return {path: _constant(content_type, (static / name).read_bytes())
            for path, (name, content_type) in pages.items()}


def _constant(content_type: str, body: bytes) -> Callable[[], tuple[str, bytes]]:
    return lambda: (content_type, body)


def _to_json(result: StreamResult) -> str:
    return json.dumps(result.as_json(), ensure_ascii=False)


def _decode_audio(message: bytes) -> np.ndarray:
    if len(message) % 4:
        raise _Refused(CloseCode.INVALID_DATA,
                       f"binary message of {len(message)} bytes is not a whole number of "
                       f"float32 samples")
    samples = np.frombuffer(message, dtype="<f4")
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise _Refused(CloseCode.INVALID_DATA,
                       f"audio contains {bad} non-finite samples (NaN or infinity)")
    return samples.astype(np.float32)
