"""A client for the streaming server (and any sherpa-onnx streaming WebSocket server).

:func:`stream_audio` sends float32 PCM in messages of ``message_s`` seconds, at real-time
pace unless ``realtime=False``, then ``Done``, and collects the JSON results until the server
sends ``Done!`` or closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

__all__ = ["StreamOutcome", "final_text", "stream_audio"]


@dataclass
class StreamOutcome:
    """What a stream received.

    Attributes:
        messages: The JSON results in order, each with ``received`` (monotonic seconds) added.
        sent_at: Per audio message, (samples sent so far including it, monotonic send time).
        close_code: The connection's close code (``None`` if it never opened).
        close_reason: The close reason.
    """

    messages: list[dict[str, Any]] = field(default_factory=list)  # Any: JSON values
    sent_at: list[tuple[int, float]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def text(self) -> str:
        return final_text(self.messages)


def final_text(messages: list[dict[str, Any]]) -> str:
    """The transcript: the last text of every segment, joined by spaces."""
    segments: dict[int, str] = {}
    for m in messages:
        segments[int(m["segment"])] = str(m["text"])
    return " ".join(t for _, t in sorted(segments.items()) if t)


async def stream_audio(
    url: str,
    samples: np.ndarray,
    *,
    message_s: float = 0.1,
    sample_rate: int = 16000,
    realtime: bool = True,
    token: str | None = None,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> StreamOutcome:
    """Stream ``samples`` (float32 mono at ``sample_rate``) to ``url`` and collect the results.

    Args:
        url: ``ws://host:port``.
        samples: The audio.
        message_s: Audio per binary message, in seconds.
        sample_rate: Rate of ``samples`` (the server expects 16 kHz).
        realtime: Send at real-time pace (else as fast as possible).
        token: Bearer token for a server started with ``--token``.
        on_message: Called with each JSON result as it arrives.

    Raises:
        websockets.exceptions.InvalidStatus: the server refused the handshake (HTTP 401, ...).
        OSError: the server cannot be reached.
    """
    outcome = StreamOutcome()
    step = max(1, int(round(message_s * sample_rate)))
    audio = np.ascontiguousarray(samples, dtype="<f4")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers, max_size=None,
                       compression=None) as ws:

        async def receive() -> None:
            try:
                async for message in ws:
                    if message == "Done!":
                        break
                    result = json.loads(message)
                    result["received"] = time.monotonic()
                    outcome.messages.append(result)
                    if on_message is not None:
                        on_message(result)
            except ConnectionClosed:
                pass  # closed with an error code: recorded below

        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        try:
            for begin in range(0, audio.shape[0], step):
                if realtime:
                    delay = begin / sample_rate - (time.monotonic() - start)
                    if delay > 0:
                        await asyncio.sleep(delay)
                piece = audio[begin: begin + step]
                await ws.send(piece.tobytes())
                outcome.sent_at.append((begin + piece.shape[0], time.monotonic()))
            await ws.send("Done")
        except ConnectionClosed:
            pass  # the server closed the stream; its reason is recorded below
        await receiver
        await ws.wait_closed()
    outcome.close_code = ws.close_code
    outcome.close_reason = ws.close_reason or ""
    return outcome
