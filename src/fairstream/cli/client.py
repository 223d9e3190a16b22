"""``fairstream client``: stream a WAV file to a streaming recognition server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["client"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="ws://127.0.0.1:6006", show_default=True, help="Server URL.")
@click.option("--fast", is_flag=True, help="Send as fast as possible, not at real-time pace.")
@click.option("--message-ms", type=click.IntRange(min=1), default=100, show_default=True,
              help="Audio per message in milliseconds.")
@click.option("--token", envvar="FAIRSTREAM_TOKEN", default=None,
              help="Bearer token of a server started with --token (env FAIRSTREAM_TOKEN).")
def client(audio: Path, url: str, fast: bool, message_ms: int, token: str | None) -> None:
    """Stream AUDIO (WAV/FLAC, resampled to 16 kHz) to URL; print partial and final text.

    \b
    Partial results are printed as "… [segment] text" when they change and each segment's
    final text as "final [segment] text"; the whole transcript ends the output.

    \b
    Example:
      fairstream client hello.wav --url ws://127.0.0.1:6006
    """
    import asyncio

    import numpy as np
    import soundfile as sf
    from websockets.exceptions import InvalidStatus

    from fairstream.features.fbank import resample
    from fairstream.serve.client import stream_audio

    try:
        samples, rate = sf.read(str(audio), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise click.ClickException(f"cannot read audio file {audio}: {e}") from e
    mono = samples[:, 0]
    if rate != 16000:
        mono = resample(mono, int(rate), 16000)
    shown: dict[int, str] = {}

    def show(result: dict[str, Any]) -> None:  # Any: JSON values
        segment, text = int(result["segment"]), str(result["text"])
        if result["is_final"]:
            click.echo(f"final [{segment}] {text}")
        elif shown.get(segment) != text:
            click.echo(f"… [{segment}] {text}")
        shown[segment] = text

    try:
        outcome = asyncio.run(stream_audio(url, np.asarray(mono, dtype=np.float32),
                                           message_s=message_ms / 1000, realtime=not fast,
                                           token=token, on_message=show))
    except InvalidStatus as e:
        raise click.ClickException(f"{url} refused the connection: {e}") from e
    except OSError as e:
        raise click.ClickException(f"cannot connect to {url}: {e}") from e
    if outcome.close_code not in (1000, None):
        raise click.ClickException(
            f"the server closed the stream: {outcome.close_code} {outcome.close_reason}")
    click.echo(outcome.text)
