"""``fairstream decode``: decode a cut set with a checkpoint into a results table."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.cli._search import choose_search, search_options
from fairstream.errors import FairstreamError

__all__ = ["decode"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True,
              help="Checkpoint written by `fairstream train` (e.g. EXP/averaged.pt).")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Corpus directory: decodes --split and joins speakers.csv.")
@click.option("--split", default="test", show_default=True, help="Split of --corpus to decode.")
@click.option("--cuts", "cuts_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A Lhotse cuts manifest to decode instead of a corpus split.")
@click.option("--speakers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="speakers.csv to join (default: the corpus's).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Results table (Parquet), one row per utterance.")
@search_options(ctc=True)
@click.option("--streaming", is_flag=True,
              help="Feed the audio chunk by chunk through the streaming recognizer.")
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True,
              help="Streaming chunk size in milliseconds.")
@click.option("--max-duration", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds of audio per offline batch.")
@click.option("--by", "group_by", multiple=True, default=("accent",), show_default=True,
              help="Print the WER per value of this column (repeatable).")
@click.option("--trn-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write ref.trn / hyp.trn here for NIST sclite.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise",
              show_default=True,
              help="skip: leave out utterances with unusable audio or transcript, "
                   "list them at the end.")
@click.option("--threads", type=click.IntRange(min=1),
              help="PyTorch threads (default: one per core).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def decode(checkpoint: Path, corpus: Path | None, split: str, cuts_path: Path | None,
           speakers: Path | None, out: Path, method: str | None, beam: int | None,
           max_symbols: int | None, lm_path: Path | None, lm_weight: float | None,
           token_bonus: float | None, streaming: bool,
           chunk_ms: int, max_duration: float, group_by: tuple[str, ...], trn_dir: Path | None,
           on_error: str, threads: int | None, no_progress: bool) -> None:
    """Decode utterances and write the results table (ids, ref, hyp, error counts, duration,
    token timestamps, speaker metadata) with the resolved config in its Parquet metadata.
    Greedy search unless --search (or --beam) says otherwise; `--search recipe` runs the
    search stored in the checkpoint (its `decode` section), with the LM `fairstream lm`
    stored beside the checkpoint. The search used is printed on stderr.

    \b
    Examples:
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo --out results.parquet
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo --streaming \\
          --chunk-ms 160 --out results_stream.parquet --trn-dir sclite/
      fairstream lm --checkpoint exp/lstm/averaged.pt --corpus data/demo
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo --streaming \\
          --search recipe --out results_recipe.parquet
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo --streaming \\
          --search beam --beam 8 --lm exp/lstm/lm.json --out results_lm.parquet
    """
    import pandas as pd
    from lhotse import CutSet

    from fairstream.inference import decode_cuts, load_transducer, summarize_wer, write_trn_pair
    from fairstream.results import write_results

    if (corpus is None) == (cuts_path is None):
        raise click.UsageError("give exactly one of --corpus or --cuts")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        loaded = load_transducer(checkpoint)
        chosen = choose_search(method, checkpoint, loaded.config, beam=beam,
                               max_symbols=max_symbols, lm_path=lm_path, lm_weight=lm_weight,
                               token_bonus=token_bonus)
        spk_table = None
        if cuts_path is not None:
            cuts = CutSet.from_file(cuts_path)
            split_name = None
        else:
            from fairstream.data.corpus import load_corpus

            c = load_corpus(corpus)  # type: ignore[arg-type]
            cuts = c.cuts(split)
            split_name = split
            spk_table = c.speakers if speakers is None else None
        if speakers is not None:
            spk_table = pd.read_csv(speakers, dtype={"zip": str, "speaker_id": str})
        df = decode_cuts(
            loaded.model, loaded.tokenizer, loaded.cmvn, cuts, search=chosen.config,
            lm=chosen.lm, ctc=chosen.ctc, streaming=streaming, chunk_ms=chunk_ms,
            max_duration=max_duration, speakers=spk_table, split=split_name,
            on_error=on_error,  # type: ignore[arg-type]
            progress=not no_progress,
        )
        skipped = list(df.attrs.get("skipped", []))
        decoding = {"checkpoint": str(checkpoint), **chosen.metadata(),
                    "streaming": streaming, "chunk_ms": chunk_ms,
                    "corpus": str(corpus) if corpus else None, "split": split_name,
                    "cuts": str(cuts_path) if cuts_path else None,
                    "skipped": [{"cut_id": c, "reason": r} for c, r in skipped]}
        write_results(df, out, {"train": loaded.config, "decode": decoding})
        if trn_dir is not None:
            write_trn_pair(df, trn_dir)
        by = [b for b in group_by if b in df.columns and df[b].notna().any()]
        summary = summarize_wer(df, by=by)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    overall = summary.iloc[-1]
    click.echo(f"{len(df)} utterances, {int(overall['ref_words'])} words: "
               f"WER {100 * overall['wer']:.2f}% (sub {int(overall['sub'])}, "
               f"del {int(overall['del'])}, ins {int(overall['ins'])})")
    if by:
        shown = summary.assign(wer=(100 * summary["wer"]).round(2))
        click.echo(shown[[*by, "speakers", "utterances", "ref_words", "errors", "wer"]]
                   .to_string(index=False))
    if skipped:
        click.echo(f"skipped {len(skipped)} utterance(s):")
        for cut_id, reason in skipped:
            click.echo(f"  {cut_id}: {reason}")
    click.echo(f"results: {out}")
