"""``fairstream mitigate`` and ``fairstream compare``: act on an audit's cohort, then measure."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["compare", "mitigate"]

_CTX = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=_CTX)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The recognizer to mitigate (e.g. demo_out/exp/averaged.pt).")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Its corpus: fine-tuning data (train) and the measured split.")
@click.option("--cohorts", "cohorts_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="cohorts.json written by `fairstream audit` (next to report.html).")
@click.option("--cohort", default=None, metavar="METHOD=LABEL",
              help="Which cohort, e.g. attribute:accent=en-029 (default: the bottom cohort with "
                   "the strongest selection-corrected evidence across the audit's methods).")
@click.option("--method",
              type=click.Choice(["ewc", "finetune", "l2sp", "oversample", "cohort-input"]),
              default="ewc", show_default=True, help="How to fine-tune (see the list above).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (checkpoints, results, comparison.{json,md,png}).")
@click.option("--steps", type=click.IntRange(min=1), default=150, show_default=True,
              help="Optimizer steps (the same for every method, for a fair comparison).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5,
              show_default=True, help="Peak learning rate (cosine decay over the steps); the "
                                      "default was chosen on the demo corpus's dev split.")
@click.option("--lam", type=click.FloatRange(min=0), default=100.0, show_default=True,
              help="λ of ewc / l2sp (the Fisher is normalized to mean 1); the default was "
                   "chosen for ewc on the demo corpus's dev split; choose yours on dev.")
@click.option("--fisher-batches", type=click.IntRange(min=1), default=30, show_default=True,
              help="General training batches the Fisher is estimated from (ewc).")
@click.option("--oversample", type=click.IntRange(min=1), default=4, show_default=True,
              help="oversample: times each cohort cut is shown per epoch.")
@click.option("--general-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Mix this share of general training cuts into the cohort data "
                                 "(ewc, finetune, l2sp).")
@click.option("--eval-split", default="test", show_default=True,
              help="Split measured before and after (speakers disjoint from the audited ones).")
@click.option("--zip-demographics", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Zip table for a geodemographic cohort (default: the one the audit read).")
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-speaker embeddings of the training speakers, for an embedding cohort.")
@click.option("--eval-embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The same for the evaluation speakers.")
@click.option("--seed", type=int, default=0, show_default=True, help="Data order and dropout seed.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Speaker-bootstrap replicates of the comparison.")
@click.option("--report", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Add the before/after section to this audit report.html (e.g. the one "
                   "beside cohorts.json); an earlier mitigation section is replaced.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def mitigate(checkpoint: Path, corpus: Path, cohorts_path: Path, cohort: str | None, method: str,
             out: Path, steps: int, lr: float, lam: float, fisher_batches: int, oversample: int,
             general_share: float | None, eval_split: str, zip_demographics: Path | None,
             embeddings: Path | None, eval_embeddings: Path | None, seed: int, bootstrap: int,
             report: Path | None, no_progress: bool) -> None:
    """Fine-tune a recognizer for the cohort an audit found; measure before and after.

    \b
    The cohort's definition (attribute values, a tree region's box, a zip predicate or an
    embedding centre) is mapped onto the corpus's training speakers; then, from CHECKPOINT,
    exactly --steps optimizer steps of:
      ewc         the cohort's data + λ/2 Σ F_i (θ_i − θ*_i)², F the diagonal empirical
                  Fisher of general training data (stored as CHECKPOINT.fisher.pt, reused)
      finetune    the cohort's data only (the forgetting baseline)
      l2sp        the cohort's data + λ/2 Σ (θ_i − θ*_i)²
      oversample  all training data, the cohort's cuts --oversample times per epoch
      cohort-input  all training data, plus a learned cohort vector added to the input
                  features (from the speaker's metadata, at test time too; stored as
                  OUT/cohort_input.pt, applied as a per-cohort CMVN mean)
    The eval split is decoded before and after (greedy search) and compared per cohort of
    the method that found the cohort, with paired speaker-bootstrap intervals: WER, overall
    WER, mean / max / variance across cohorts, the gap, and forgetting. A killed run resumes.

    \b
    Example (after `make demo`):
      fairstream mitigate --checkpoint demo_out/exp/averaged.pt --corpus demo_out/corpus \\
          --cohorts demo_out/audit/cohorts.json --method ewc --out runs/ewc
    """
    from fairstream.mitigation.run import MitigationConfig
    from fairstream.mitigation.run import mitigate as run_mitigation

    try:
        cfg = MitigationConfig(method=method, steps=steps, lr=lr, lam=lam,
                               fisher_batches=fisher_batches, oversample=oversample,
                               general_share=general_share, seed=seed)
        result = run_mitigation(checkpoint, corpus, cohorts_path, out, cfg, cohort=cohort,
                                eval_split=eval_split, zip_table=zip_demographics,
                                embeddings=embeddings, eval_embeddings=eval_embeddings,
                                n_boot=bootstrap, progress=not no_progress, echo=click.echo)
        if report is not None:
            from fairstream.mitigation.report import add_to_report, mitigation_section

            add_to_report(report, mitigation_section(result, cfg))
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(result.comparison.markdown())
    if report is not None:
        click.echo(f"before/after section added to {report}")
    click.echo(f"new checkpoint {result.checkpoint}")
    click.echo(f"comparison     {out / 'comparison.md'} (.json, .png)")


@click.command(context_settings=_CTX)
@click.argument("before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", default=None, help="Cohort column of the results (default: accent, or the "
                                         "cohort's method with --cohorts).")
@click.option("--cohorts", "cohorts_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="cohorts.json: cohorts of --cohort's method, mapped onto the test speakers.")
@click.option("--cohort", default=None, metavar="METHOD=LABEL",
              help="The mitigated cohort (with --cohorts: default the strongest; with --by: "
                   "a value of the column).")
@click.option("--speakers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="speakers.csv with the metadata the cohort definitions read (default: the "
                   "columns of the results table).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write comparison.json, .md and .png here.")
@click.option("--bootstrap", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def compare(before: Path, after: Path, by: str | None, cohorts_path: Path | None,
            cohort: str | None, speakers: Path | None, out: Path | None, bootstrap: int,
            seed: int) -> None:
    """Compare two results tables of the same utterances, cohort by cohort, paired.

    \b
    Per cohort: WER before and after and the difference with a paired speaker-bootstrap
    95 % interval (the same resampled speakers for both); overall WER; mean, max and
    variance of WER across the cohorts; the mitigated cohort's gap against the rest; and
    forgetting (the largest WER increase on another cohort).

    \b
    Example:
      fairstream compare before.parquet runs/ewc/results_test.parquet --by accent \\
          --cohort en-gb-scotland --out runs/ewc/compare
    """
    import pandas as pd

    from fairstream.audit.cohorts import choose_cohort, load_cohorts
    from fairstream.mitigation.compare import compare_results
    from fairstream.mitigation.run import cohort_labels
    from fairstream.results import read_results

    try:
        b, _ = read_results(before)
        a, _ = read_results(after)
        bottom = cohort
        if cohorts_path is not None and by is None:
            cohorts = load_cohorts(cohorts_path)
            chosen = choose_cohort(cohorts, cohort)
            table = pd.read_csv(speakers, dtype={"zip": str}) if speakers is not None else \
                b.drop_duplicates("speaker_id")
            labels = cohort_labels(cohorts, chosen.method, table)
            bottom = chosen.label
        else:
            col = by or "accent"
            if col not in b.columns:
                raise click.ClickException(f"the results have no column {col!r}; columns: "
                                           f"{list(b.columns)}")
            labels = b.drop_duplicates("speaker_id").set_index("speaker_id")[col].astype(str)
        comp = compare_results(b, a, labels, bottom=bottom, n_boot=bootstrap, seed=seed)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(comp.markdown())
    if out is not None:
        paths = comp.write(out)
        click.echo(f"written: {', '.join(str(p) for p in paths.values())}")
