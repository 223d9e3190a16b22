"""``fairstream export``: a checkpoint to ONNX models that sherpa-onnx and onnxruntime run."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["export"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Checkpoint written by `fairstream train`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt.")
@click.option("--int8", is_flag=True,
              help="Also write dynamically quantized *.int8.onnx models.")
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True,
              help="Audio per encoder call (a multiple of subsampling x 10 ms).")
@click.option("--frame-repeat", type=click.IntRange(min=1), default=None,
              help="Copies of each encoder frame: greedy search then takes up to this many "
                   "tokens per frame [default: 3, as our greedy search; subsampling / 4 "
                   "gives sherpa-onnx's 40 ms frames for timestamps].")
def export(checkpoint: Path, out: Path, int8: bool, chunk_ms: int,
           frame_repeat: int | None) -> None:
    """Export CHECKPOINT to ONNX in the layout sherpa-onnx's `lstm` model type loads.

    \b
    Prints the sherpa-onnx feature arguments that match the model's features.
    Example:
      fairstream export --checkpoint exp/lstm/averaged.pt --out exp/lstm/onnx --int8
    """
    from fairstream.export import export_transducer
    from fairstream.inference import load_transducer

    try:
        loaded = load_transducer(checkpoint)
        info = export_transducer(loaded.model, loaded.tokenizer, loaded.cmvn, out,
                                 chunk_ms=chunk_ms, frame_repeat=frame_repeat, int8=int8)
    except FairstreamError as exc:
        raise click.ClickException(str(exc)) from exc
    files = ["encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"]
    if int8:
        files += ["encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"]
    click.echo(f"wrote {', '.join(files)} to {out}")
    click.echo(f"chunk {info.chunk_frames} frames, subsampling {info.subsampling}, "
               f"frame repeat {info.frame_repeat} (up to {info.frame_repeat} tokens per "
               f"encoder frame, {info.frame_seconds * 1000:g} ms per output frame)")
    args = ", ".join(f"{k}={v!r}" for k, v in info.sherpa_feature_kwargs().items())
    click.echo(f"sherpa_onnx.OnlineRecognizer.from_transducer(..., {args})")
