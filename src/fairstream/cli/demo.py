"""``fairstream demo``: the whole story on the embedded demo corpus."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["demo"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"),
              show_default=True, help="Output directory; a rerun resumes what is missing.")
@click.option("--preset", type=click.Choice(["tiny", "demo-clean", "demo", "full"]),
              default="demo-clean", show_default=True,
              help="Corpus preset. demo-clean: the demo corpus with clean test text (no test "
                   "sentence occurs in training; a fifth of the names, places and songs never "
                   "appear in training); demo: the same without that, so an LM fitted on the "
                   "training text can have seen test sentences; tiny: a smoke run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Corpus and training seed.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes for corpus synthesis.")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training recipe (default: the packaged lstm_transducer.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set optim.lr=0.001 (repeatable).")
@click.option("--steps", type=click.IntRange(min=1),
              help="Optimizer steps to train, the stopping rule (default: the recipe's "
                   "schedule.max_steps, 2800).")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Wall-clock safety cap on training (default: the recipe's, 60 min); "
                   "training stops at --steps, and the demo warns when this cap stopped it "
                   "first.")
@click.option("--nproc", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training processes (data-parallel under torchrun, one thread each).")
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True,
              help="Streaming chunk size for decoding the test split.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="PyTorch threads for decoding, embedding and the audit (streams are decoded "
                   "one at a time, so more threads mostly contend).")
@click.option("--n-boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Speaker-bootstrap replicates in the audit.")
@click.option("--speaker-model/--no-speaker-model", default=True, show_default=True,
              help="Train a speaker-embedding model for the audit's automatic cohorts "
                   "(else the audit uses its fbank-statistics fallback).")
@click.option("--speaker-steps", type=click.IntRange(min=1),
              help="Training steps of the speaker model (default: its schedule, 400).")
@click.option("--mitigate/--no-mitigate", default=True, show_default=True,
              help="Fine-tune with EWC on the audit's strongest bottom cohort and add the "
                   "before/after (on the test speakers) to the report.")
@click.option("--mitigate-steps", type=click.IntRange(min=1), default=150, show_default=True,
              help="Fine-tuning steps of the mitigation stage.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def demo(out: Path, preset: str, seed: int, jobs: int, recipe: Path | None,
         overrides: tuple[str, ...], steps: int | None, budget_minutes: float | None,
         nproc: int, chunk_ms: int, threads: int,
         n_boot: int, speaker_model: bool, speaker_steps: int | None, mitigate: bool,
         mitigate_steps: int, no_progress: bool) -> None:
    """Build the demo corpus, train the streaming transducer, decode, audit, report.

    \b
    Stages, each skipped when its output exists (so a killed demo resumes):
      1. corpus   OUT/corpus           synthetic multi-accent corpus with a planted disparity
      2. train    OUT/exp/averaged.pt  default recipe, a fixed 2,800 steps (~28 min on
                                       2 quiet CPU cores; the global batch whatever --nproc)
      3. decode   OUT/results.parquet  streaming decode of the unseen test speakers with the
                                       recipe's search (beam + token n-gram LM fitted on the
                                       training transcripts); greedy baseline in
                                       OUT/results_greedy.parquet; the audit split's 400
                                       unseen speakers in OUT/results_audit.parquet
      4. speaker  OUT/sv/final.pt      speaker-embedding model; audited speakers embedded
      5. audit    OUT/audit/report.html  cohorts the model serves worst on the audit split,
                                       planted-cohort recovery; OUT/audit/cohorts.json
      6. mitigate OUT/mitigate/        EWC fine-tuning on the audit's strongest bottom cohort
                                       (mapped onto the training speakers), measured on the
                                       test speakers; before/after added to the report
    The headline numbers land in OUT/summary.md.
    """
    from fairstream.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, preset=preset, seed=seed, jobs=jobs, recipe=recipe,
                     overrides=overrides, steps=steps, budget_minutes=budget_minutes,
                     nproc=nproc,
                     chunk_ms=chunk_ms, threads=threads, n_boot=n_boot, speaker_model=speaker_model,
                     speaker_steps=speaker_steps, mitigate=mitigate,
                     mitigate_steps=mitigate_steps, progress=not no_progress)
    try:
        result = run_demo(cfg, echo=click.echo)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo("")
    click.echo(result.summary.read_text(encoding="utf-8"))
