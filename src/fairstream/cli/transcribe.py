"""``fairstream transcribe``: transcribe an audio file, optionally streaming."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fairstream.cli._search import choose_search, search_options
from fairstream.errors import FairstreamError

__all__ = ["transcribe"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Checkpoint written by `fairstream train`.")
@click.option("--stream", is_flag=True, help="Print partial transcripts as the audio comes in.")
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True,
              help="Streaming chunk size in milliseconds.")
@click.option("--realtime", is_flag=True, help="With --stream: feed the audio at real-time speed.")
@click.option("--timestamps", is_flag=True, help="Also print each token's emission time.")
@search_options()
def transcribe(audio: Path, checkpoint: Path, stream: bool, chunk_ms: int, realtime: bool,
               timestamps: bool, method: str | None, beam: int | None, max_symbols: int | None,
               lm_path: Path | None, lm_weight: float | None,
               token_bonus: float | None) -> None:
    """Transcribe AUDIO (WAV/FLAC, any sample rate, mono or the first channel).

    \b
    With --stream the audio is fed in --chunk-ms chunks to the streaming recognizer and
    every change of the partial transcript is printed as it happens ("… partial"), then the
    final transcript. Without --stream the whole file is decoded at once; for a causal model
    both give the same final transcript. Greedy search unless --search (or --beam) says
    otherwise; `--search recipe` runs the search stored in the checkpoint, with the LM
    `fairstream lm` stored beside it. The search used is printed on stderr.

    \b
    Examples:
      fairstream transcribe hello.wav --checkpoint exp/lstm/averaged.pt --stream --chunk-ms 160
      fairstream transcribe hello.wav --checkpoint exp/lstm/averaged.pt --stream \\
          --beam 8 --lm exp/lstm/lm.json
      fairstream transcribe hello.wav --checkpoint exp/lstm/averaged.pt --search recipe
    """
    import numpy as np
    import soundfile as sf
    import torch

    from fairstream.decoding.beam import beam_search
    from fairstream.decoding.greedy import greedy_search
    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.features.fbank import compute_fbank, resample
    from fairstream.inference import beam_search_for, load_transducer

    try:
        loaded = load_transducer(checkpoint)
        chosen = choose_search(method, checkpoint, loaded.config, beam=beam,
                               max_symbols=max_symbols, lm_path=lm_path, lm_weight=lm_weight,
                               token_bonus=token_bonus)
        search = beam_search_for(chosen.config, chosen.lm)
        max_per_frame = chosen.config.max_symbols_per_frame
        try:
            samples, rate = sf.read(str(audio), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise click.ClickException(f"cannot read audio file {audio}: {e}") from e
        samples = samples[:, 0]
        rec = StreamingRecognizer(loaded.model, loaded.tokenizer, loaded.cmvn,
                                  chunk_ms=chunk_ms, search=search,
                                  max_symbols_per_frame=max_per_frame)
        target = rec.fbank_config.sample_rate
        if rate != target:
            samples = resample(samples, int(rate), target)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if stream:
            step = max(1, int(target * chunk_ms / 1000))
            shown = ""
            start_time = time.monotonic()
            for start in range(0, len(samples), step):
                if realtime:
                    delay = start / target - (time.monotonic() - start_time)
                    if delay > 0:
                        time.sleep(delay)
                for partial in rec.accept(samples[start:start + step]):
                    if partial.text != shown:
                        shown = partial.text
                        click.echo(f"[{partial.audio_seconds:6.2f}s] … {shown}")
            final = rec.finish()
            text, tokens, times = final.text, final.tokens, final.timestamps
            click.echo(f"[{final.audio_seconds:6.2f}s] final: {text}")
        else:
            feats = loaded.cmvn.apply(compute_fbank(samples, target, rec.fbank_config,
                                                    name=str(audio)))
            with torch.no_grad():
                x = torch.from_numpy(feats).unsqueeze(0)
                enc, enc_lens = loaded.model.encode(x, torch.tensor([x.shape[1]]))
                shift = rec.fbank_config.frame_shift
                hyp = (greedy_search(loaded.model, enc, enc_lens, frame_shift=shift,
                                     max_symbols_per_frame=max_per_frame)[0]
                       if search is None else
                       beam_search(loaded.model, enc, enc_lens, search, frame_shift=shift)[0])
            text = loaded.tokenizer.decode(list(hyp.tokens))
            tokens, times = hyp.tokens, hyp.timestamps
            click.echo(text)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    if timestamps:
        pieces = [loaded.tokenizer.id_to_piece(t) for t in tokens]
        click.echo(" ".join(f"{p}@{t:.2f}" for p, t in zip(pieces, times)))
