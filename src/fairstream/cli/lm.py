"""``fairstream lm``: fit a token n-gram LM for shallow fusion in beam search."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.decoding.search import DEFAULT_LM_ORDER
from fairstream.errors import FairstreamError

__all__ = ["lm"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Transducer checkpoint: the LM uses its tokenizer.")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Corpus directory whose transcripts the LM is fitted on.")
@click.option("--split", default="train", show_default=True,
              help="Split to fit on (never the split you evaluate on).")
@click.option("--eval-split", default="dev", show_default=True,
              help="Split whose per-token perplexity is printed ('' to skip).")
@click.option("--order", type=click.IntRange(min=2), default=None,
              help="n of the n-gram (over tokens, so 6 spans about three words)  [default: the "
                   f"checkpoint recipe's decode.lm_order, else {DEFAULT_LM_ORDER}]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="LM file (JSON)  [default: lm.json beside the checkpoint, where "
                   "`--search recipe` finds it]")
def lm(checkpoint: Path, corpus: Path, split: str, eval_split: str, order: int | None,
       out: Path | None) -> None:
    """Fit an interpolated Kneser-Ney n-gram over the checkpoint's tokens on the transcripts of
    one corpus split, for shallow fusion in beam search (`fairstream decode --search recipe`,
    or `--search beam --lm FILE`).

    \b
    Example:
      fairstream lm --checkpoint exp/lstm/averaged.pt --corpus data/demo
      fairstream decode --checkpoint exp/lstm/averaged.pt --corpus data/demo \\
          --search recipe --out results.parquet
    """
    from fairstream.data.corpus import load_corpus
    from fairstream.inference import lm_beside, load_transducer, recipe_search
    from fairstream.lm import NgramLM

    try:
        loaded = load_transducer(checkpoint)
        tokenizer = loaded.tokenizer
        if order is None:
            order = recipe_search(loaded.config, checkpoint).lm_order or DEFAULT_LM_ORDER
        out = out if out is not None else lm_beside(checkpoint)
        c = load_corpus(corpus)
        texts = [s.text for cut in c.cuts(split) for s in cut.supervisions if s.text]
        model = NgramLM.fit_texts(texts, tokenizer, order=order)
        model.save(out)
        click.echo(f"fitted {model} on {len(texts)} {split} transcripts")
        if eval_split:
            from fairstream.data.text import normalize

            held = [tokenizer.encode(normalize(s.text)) for cut in c.cuts(eval_split)
                    for s in cut.supervisions if s.text]
            click.echo(f"{eval_split} perplexity per token: {model.perplexity(held):.3f}")
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"LM: {out}")
