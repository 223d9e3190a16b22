"""``fairstream train``: train a model from a recipe (YAML config)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["train"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Recipe, e.g. recipes/lstm_transducer.yaml.")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Corpus directory (sets data.corpus).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Experiment directory (checkpoints, metrics.jsonl, final.pt, averaged.pt).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set optim.lr=0.002 (repeatable).")
@click.option("--init", "init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from this checkpoint's weights, tokenizer and feature normalization "
                   "(fine-tuning; sets init).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the newest checkpoint in --out, or start over.")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Stop cleanly after this much training time (sets schedule.budget_minutes).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Sets schedule.max_steps.")
@click.option("--threads", type=click.IntRange(min=1),
              help="PyTorch threads per process (sets threads; 1 helps on busy machines).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train(config_path: Path, corpus: Path | None, out: Path, overrides: tuple[str, ...],
          init: Path | None, resume: bool, budget_minutes: float | None, max_steps: int | None,
          threads: int | None, no_progress: bool) -> None:
    """Train a transducer on a corpus directory.

    \b
    The resolved config is written to OUT/config.yaml and stored in every checkpoint.
    Killed runs continue exactly where the last checkpoint left off (same losses as an
    uninterrupted run). For data-parallel training on N processes:
      torchrun --standalone --nproc_per_node 2 -m fairstream train --config ... --out ...

    \b
    Example:
      fairstream train --config recipes/lstm_transducer.yaml --corpus data/demo \\
          --out exp/lstm --budget-minutes 15

    \b
    Fine-tuning: --init CKPT starts from a trained checkpoint (its weights, tokenizer and
    feature normalization; a new optimizer and schedule); data.select.* chooses the speakers
    to train on or oversample (see recipes/lstm_transducer.yaml).
    """
    from fairstream.training.config import load_config
    from fairstream.training.transducer import train as run_training

    sets = list(overrides)
    if corpus is not None:
        sets.append(f"data.corpus={corpus}")
    if init is not None:
        sets.append(f"init={init}")
    if budget_minutes is not None:
        sets.append(f"schedule.budget_minutes={budget_minutes}")
    if max_steps is not None:
        sets.append(f"schedule.max_steps={max_steps}")
    if threads is not None:
        sets.append(f"threads={threads}")
    try:
        config = load_config(config_path, sets)
        result = run_training(config, out_dir=out, resume=resume, progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    click.echo(f"stopped ({result.stop_reason}) after {result.steps} steps, {result.epochs} "
               f"epochs, {result.elapsed_s / 60:.1f} min; skipped batches {result.skipped_batches}")
    if result.valid_loss is not None:
        click.echo(f"last validation loss {result.valid_loss:.4f}")
    click.echo(f"final model    {result.final_checkpoint}")
    click.echo(f"averaged model {result.averaged_checkpoint}")
