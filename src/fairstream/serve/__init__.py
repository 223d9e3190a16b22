"""Serving: many recognition streams in one process behind a WebSocket server.

:mod:`fairstream.serve.engine` batches streams through the encoder (torch only);
:mod:`fairstream.serve.server` and :mod:`fairstream.serve.client` speak the sherpa-onnx
streaming WebSocket protocol (the ``[serve]`` extra: ``websockets``, ``prometheus_client``).
"""

from __future__ import annotations

from fairstream.serve.engine import (
    BatchedRecognizer,
    EndpointConfig,
    EndpointRule,
    Stream,
    StreamResult,
)

__all__ = ["BatchedRecognizer", "EndpointConfig", "EndpointRule", "Stream", "StreamResult"]
