"""``fairstream serve``: a streaming recognition server (sherpa-onnx WebSocket protocol)."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["serve"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Checkpoint written by `fairstream train` (PyTorch).")
@click.option("--onnx", "onnx_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Directory written by `fairstream export` (onnxruntime).")
@click.option("--int8", is_flag=True, help="With --onnx: use the *.int8.onnx models.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=6006, show_default=True)
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True,
              help="Model chunk in milliseconds (with --onnx, the export's own).")
@click.option("--max-streams", type=click.IntRange(min=1), default=200, show_default=True,
              help="Concurrent streams; more are closed with code 1013.")
@click.option("--max-message-bytes", type=click.IntRange(min=1024), default=1 << 20,
              show_default=True, help="Largest WebSocket message accepted.")
@click.option("--max-session-s", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, help="Most audio one stream may send, in seconds.")
@click.option("--idle-timeout-s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Close a stream that sends nothing for this long.")
@click.option("--token", envvar="FAIRSTREAM_TOKEN", default=None,
              help="Require `Authorization: Bearer TOKEN` (env FAIRSTREAM_TOKEN).")
@click.option("--no-endpoint", is_flag=True, help="Disable endpointing (one segment a stream).")
@click.option("--rule1-min-trailing-silence", type=float, default=2.4, show_default=True,
              help="Endpoint after this much silence, even with nothing decoded.")
@click.option("--rule2-min-trailing-silence", type=float, default=1.2, show_default=True,
              help="Endpoint after this much silence following decoded text.")
@click.option("--rule3-min-utterance-length", type=float, default=20.0, show_default=True,
              help="Endpoint when a segment reaches this length.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch (or onnxruntime intra-op) threads for the batched encoder.")
def serve(checkpoint: Path | None, onnx_dir: Path | None, int8: bool, host: str, port: int,
          chunk_ms: int, max_streams: int, max_message_bytes: int, max_session_s: float,
          idle_timeout_s: float,
          token: str | None, no_endpoint: bool, rule1_min_trailing_silence: float,
          rule2_min_trailing_silence: float, rule3_min_utterance_length: float,
          threads: int) -> None:
    """Serve streaming recognition over WebSockets until SIGINT / SIGTERM.

    \b
    Clients send float32 PCM at 16 kHz as binary messages and the text `Done`; the server
    answers with JSON {"text", "segment", "is_final", ...} per chunk (docs/serve.md).
    GET /healthz and GET /metrics (Prometheus) on the same port. On SIGINT / SIGTERM open
    streams are finished before the server exits.

    \b
    Example:
      fairstream serve --checkpoint exp/lstm/averaged.pt --port 6006
      fairstream serve --onnx exp/lstm/onnx --port 6006
      fairstream client hello.wav --url ws://127.0.0.1:6006
    """
    import asyncio
    import signal

    import torch

    from fairstream.inference import load_transducer
    from fairstream.serve.engine import (
        BatchedRecognizer,
        EndpointConfig,
        EndpointRule,
        StreamingEngine,
    )
    from fairstream.serve.server import RecognitionServer, ServeConfig

    if (checkpoint is None) == (onnx_dir is None):
        raise click.UsageError("give exactly one of --checkpoint CKPT and --onnx DIR "
                               f"(got {'both' if checkpoint else 'neither'})")
    if int8 and onnx_dir is None:
        raise click.UsageError("--int8 needs --onnx DIR")
    torch.set_num_threads(threads)
    endpoint = EndpointConfig(
        rule1=EndpointRule(False, rule1_min_trailing_silence, 0.0),
        rule2=EndpointRule(True, rule2_min_trailing_silence, 0.0),
        rule3=EndpointRule(False, 0.0, rule3_min_utterance_length),
        enabled=not no_endpoint,
    )
    config = ServeConfig(host=host, port=port, max_streams=max_streams,
                         max_message_bytes=max_message_bytes, max_session_s=max_session_s,
                         idle_timeout_s=idle_timeout_s, token=token)
    engine: StreamingEngine
    try:
        if onnx_dir is not None:
            from fairstream.serve.onnx_backend import OnnxBackend

            engine = StreamingEngine(OnnxBackend(onnx_dir, int8=int8, num_threads=threads),
                                     endpoint=endpoint)
        else:
            assert checkpoint is not None
            loaded = load_transducer(checkpoint)
            engine = BatchedRecognizer(loaded.model, loaded.tokenizer, loaded.cmvn,
                                       chunk_ms=chunk_ms, endpoint=endpoint)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e

    async def run() -> None:
        server = RecognitionServer(engine, config)
        await server.start()
        click.echo(f"serving {checkpoint or onnx_dir} on ws://{host}:{server.port} "
                   f"(browser page http://{host}:{server.port}/, GET /healthz, /metrics)",
                   err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        click.echo(f"shutting down: finishing {server.active_streams} open streams", err=True)
        await server.shutdown()

    asyncio.run(run())
