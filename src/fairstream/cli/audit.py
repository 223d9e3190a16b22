"""``fairstream audit``: find the speaker cohorts a recognizer serves worst."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["audit"]

_OPEN_UNIT = click.FloatRange(0, 1, min_open=True, max_open=True)
_ENCODER = "encoder:"


class _Embeddings(click.ParamType):
    """An embeddings file, or ``encoder:CKPT`` (a checkpoint whose encoder computes them)."""

    name = "PATH|encoder:CKPT"
    _file = click.Path(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: str | Path, param: click.Parameter | None,
                ctx: click.Context | None) -> Path | str:
        if isinstance(value, str) and value.startswith(_ENCODER):
            ckpt = Path(value[len(_ENCODER):])
            if not ckpt.is_file():
                self.fail(f"encoder checkpoint {str(ckpt)!r} does not exist or is not a file "
                          f"(from {value!r}); give encoder:PATH/TO/averaged.pt", param, ctx)
            return value
        converted: Path = self._file.convert(value, param, ctx)
        return converted


def _one_table(results: str, fmt: str | None) -> Path | pd.DataFrame:
    """``--results`` for the in-memory engine: a file, or a glob/directory of Parquet files
    read into one table (in sorted file order, as the Dask engine reads them)."""
    path = Path(results)
    if path.is_file():
        return path
    if not path.is_dir() and not any(ch in results for ch in "*?["):
        raise click.BadParameter(f"{results!r} does not exist", param_hint="--results")
    import pandas as pd

    from fairstream.audit.dask_engine import expand_results
    from fairstream.results import read_results as read_results_table

    files = expand_results(results)
    if len(files) == 1:
        return files[0]
    return pd.concat([read_results_table(f)[0] for f in files], ignore_index=True)


def _k_range(value: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value.split("-", 1))
    except ValueError as exc:
        raise click.BadParameter(f"expected LOW-HIGH such as 2-10, got {value!r}") from exc
    if lo < 2 or hi < lo:
        raise click.BadParameter(f"need 2 <= LOW <= HIGH, got {value!r}")
    return lo, hi


@click.command(
    "audit",
    epilog="""\b
Examples:
  # the results table written by `fairstream decode`, metadata from the corpus
  fairstream audit --results results.parquet --corpus-dir data/demo --out audit/
\b
  # another recognizer's CSV with its own column names and text to score
  fairstream audit --results other.csv --column utt_id=id --column speaker_id=spk \\
      --column ref=reference --column hyp=transcript --speakers speakers.csv \\
      --methods attribute:accent,attribute:accent+gender,geo --out audit/
\b
  # Kaldi or sclite outputs
  fairstream audit --kaldi-text data/test/text --kaldi-hyp exp/hyp.txt \\
      --utt2spk data/test/utt2spk --speakers spk.csv --out audit/
  fairstream audit --trn-ref ref.trn --trn-hyp hyp.trn --speakers spk.csv --out audit/
\b
  # logs partitioned into Parquet files, summed per speaker on Dask (local or a cluster)
  fairstream audit --results 'logs/*.parquet' --engine dask --speakers spk.parquet --out audit/
  fairstream audit --results logs/ --engine dask --scheduler tcp://10.0.0.5:8786 \\
      --speakers spk.parquet --out audit/
\b
Definitions: WER = Σerrors / Σreference words of a cohort. WER gap (%) =
(WER_bottom / WER_rest − 1) × 100, rest = every other audited speaker. Bottom-cohort
share (%) = the bottom cohort's share of speakers (and of reference words).
Intervals come from a speaker-level bootstrap (speakers resampled, not utterances).
\b
Each method reports the worst of the cohorts its search considered, so its
p-value and interval are corrected for that choice: max-statistic over the
candidates (column "candidates"), or, with --confirm-split, found on one half of
the speakers and tested on the other. The figures conditional on this choice
(as if the cohort had been named in advance) are the *_naive columns of
methods.csv.
""",
)
@click.option("--results", "results", metavar="PATH|GLOB|DIR",
              help="Results table, one row per utterance (csv, tsv, jsonl or parquet). Needs "
                   "utt_id and speaker_id, plus error counts (sub, del, ins, hits or "
                   "n_ref_words) or texts (ref, hyp). A quoted glob ('logs/*.parquet') or a "
                   "directory reads a table partitioned into Parquet files.")
@click.option("--engine", type=click.Choice(["memory", "dask"]), default="memory",
              show_default=True,
              help="memory: read the rows into this process. dask: sum them per speaker on a "
                   "Dask cluster, one task per Parquet file, so the rows never need to fit in "
                   "memory (needs the [scale] extra); the audit then runs on the per-speaker "
                   "sums with the same numbers.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler address (tcp://host:8786) for --engine dask; default: a "
                   "local cluster of --workers processes started for this run.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Workers of the local Dask cluster (default: one per CPU).")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "parquet"]),
              help="Format of --results when its suffix does not say it.")
@click.option("--column", "columns", multiple=True, metavar="FIELD=NAME",
              help="Map a results field to your column name, e.g. speaker_id=spk or "
                   "del=deletions. Fields: utt_id speaker_id ref hyp sub del ins hits n_ref_words.")
@click.option("--kaldi-text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Kaldi reference `text` file (use with --kaldi-hyp and --utt2spk).")
@click.option("--kaldi-hyp", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hypotheses in Kaldi `text` format.")
@click.option("--utt2spk", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Kaldi utt2spk file.")
@click.option("--trn-ref", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="sclite reference trn file (use with --trn-hyp); speaker = id before the "
                   "first '-'.")
@click.option("--trn-hyp", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="sclite hypothesis trn file.")
@click.option("--speakers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Speaker metadata table with speaker_id (accent, gender, lat, lon, zip, ...). "
                   "Default: CORPUS_DIR/speakers.csv.")
@click.option("--zip-demographics", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Zip-level demographics table with a zip column (for geodemo). "
                   "Default: CORPUS_DIR/zip_demographics.csv.")
@click.option("--embeddings", type=_Embeddings(),
              help="Speaker or utterance embeddings: .npy (with --embedding-ids) or a "
                   "parquet/csv table with speaker_id and an `embedding` list column; or "
                   "encoder:CKPT to compute them from a fairstream transducer checkpoint (mean "
                   "of its encoder states per speaker, from the audio in --corpus-dir; cached, "
                   "needs the [asr] extra), e.g. --embeddings encoder:exp/averaged.pt. Without "
                   "it, `embedding` uses a fallback fbank-statistics embedding from "
                   "CORPUS_DIR/audio.")
@click.option("--embedding-ids", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ids of the rows of an .npy embedding matrix (text, one per line, or .npy).")
@click.option("--corpus-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A fairstream corpus: default metadata tables, planted cohorts "
                   "(corpus.json) for the recovery scores, audio for fallback embeddings.")
@click.option("--methods", default=None, metavar="LIST",
              help="Comma-separated: attribute:<col>[+<col>...] (WER by a column or an "
                   "intersection), geo (lat/lon tree), geodemo (zip demographics), embedding "
                   "(k-means). Default: every method whose inputs are present.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: report.html, report.json, CSV tables.")
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Speaker-bootstrap replicates.")
@click.option("--confidence", default=0.95, show_default=True, type=_OPEN_UNIT,
              help="Confidence level of the intervals.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap and k-means.")
@click.option("--min-cohort", default=10, show_default=True, type=click.IntRange(min=1),
              help="Smallest cohort (speakers) reported; smaller ones are pooled or suppressed.")
@click.option("--include-speaker-ids", is_flag=True,
              help="Allow speaker ids and exact locations in the outputs (off by default).")
@click.option("--max-regions", default=32, show_default=True, type=click.IntRange(min=1),
              help="Geo tree: maximum number of regions.")
@click.option("--min-region-speakers", default=10, show_default=True, type=click.IntRange(min=1),
              help="Geo tree: minimum speakers per region (never below --min-cohort).")
@click.option("--min-region-words", default=100, show_default=True, type=click.IntRange(min=1),
              help="Geo tree: minimum reference words per region.")
@click.option("--alpha", default=0.05, show_default=True, type=_OPEN_UNIT,
              help="Geo tree: family-wise level of the split tests (a split is kept only if "
                   "significant under the speaker bootstrap).")
@click.option("--k", "k", default=None, type=click.IntRange(min=2),
              help="Embedding: number of k-means clusters (default: best silhouette over "
                   "--k-range).")
@click.option("--k-range", default="2-10", show_default=True, help="Embedding: k tried, LOW-HIGH.")
@click.option("--bottom-share", default=None, type=click.FloatRange(0, 100),
              help="Embedding: bottom cohort = worst clusters while their speaker share (%) "
                   "stays within this (default: the worst cluster only).")
@click.option("--confirm-split", is_flag=True,
              help="Find each method's bottom cohort on a random half of the speakers (drawn "
                   "with --seed) and test it on the other half, instead of correcting the test "
                   "for the search over all speakers. Halves the data of both steps.")
@click.option("--duplicates", type=click.Choice(["error", "first"]), default="error",
              show_default=True,
              help="Repeated utterance ids: stop, or keep the first row (counted).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def audit(
    results: str | None, fmt: str | None, columns: tuple[str, ...],
    kaldi_text: Path | None, kaldi_hyp: Path | None, utt2spk: Path | None,
    trn_ref: Path | None, trn_hyp: Path | None,
    speakers: Path | None, zip_demographics: Path | None, embeddings: Path | str | None,
    embedding_ids: Path | None, corpus_dir: Path | None, methods: str | None, out_dir: Path,
    n_boot: int, confidence: float, seed: int, min_cohort: int, include_speaker_ids: bool,
    max_regions: int, min_region_speakers: int, min_region_words: int, alpha: float,
    k: int | None, k_range: str, bottom_share: float | None, confirm_split: bool,
    duplicates: str, progress: bool, engine: str, scheduler: str | None, workers: int | None,
) -> None:
    """Audit a recognizer's results: WER by cohort with speaker-bootstrap intervals, and the
    cohorts it serves worst found three ways (geographic tree, geodemographic partition,
    embedding k-means). Works on any recognizer's output.

    Writes OUT/report.html (opens offline), OUT/report.json and CSV tables.
    """
    from fairstream.audit import (
        AuditConfig,
        ColumnMap,
        EmbeddingConfig,
        GeodemographicConfig,
        GeoTreeConfig,
        PrivacyConfig,
        ResultsTable,
        read_kaldi,
        read_results,
        read_trn,
        run_audit,
    )
    from fairstream.audit.speaker_stats import SpeakerSums
    from fairstream.errors import FairstreamError

    if engine == "memory" and (scheduler is not None or workers is not None):
        raise click.UsageError("--scheduler and --workers are for --engine dask")
    if engine == "dask" and results is None:
        raise click.UsageError("--engine dask reads Parquet results (--results 'DIR/*.parquet')")
    sources = sum([results is not None, kaldi_text is not None or kaldi_hyp is not None,
                   trn_ref is not None or trn_hyp is not None])
    if sources != 1:
        raise click.UsageError("give exactly one of --results, --kaldi-text/--kaldi-hyp/--utt2spk, "
                               "--trn-ref/--trn-hyp")
    try:
        table: ResultsTable | SpeakerSums
        if results is not None and engine == "dask":
            from fairstream.audit.dask_engine import dask_speaker_sums

            table = dask_speaker_sums(results, columns=ColumnMap.from_pairs(columns),
                                      duplicates=duplicates,  # type: ignore[arg-type]
                                      scheduler=scheduler, n_workers=workers, progress=progress)
        elif results is not None:
            table = read_results(_one_table(results, fmt), columns=ColumnMap.from_pairs(columns),
                                 fmt=fmt, duplicates=duplicates)  # type: ignore[arg-type]
        elif kaldi_text is not None or kaldi_hyp is not None:
            if kaldi_text is None or kaldi_hyp is None or utt2spk is None:
                raise click.UsageError("Kaldi input needs --kaldi-text, --kaldi-hyp and --utt2spk")
            table = read_kaldi(kaldi_text, kaldi_hyp, utt2spk)
        else:
            if trn_ref is None or trn_hyp is None:
                raise click.UsageError("sclite input needs both --trn-ref and --trn-hyp")
            table = read_trn(trn_ref, trn_hyp)
        config = AuditConfig(
            n_boot=n_boot, confidence=confidence, seed=seed, duplicates=duplicates,
            privacy=PrivacyConfig(min_cohort_speakers=min_cohort,
                                  include_speaker_ids=include_speaker_ids),
            geo=GeoTreeConfig(min_speakers=max(min_region_speakers, min_cohort),
                              min_words=min_region_words, max_regions=max_regions, alpha=alpha),
            geodemographic=GeodemographicConfig(min_speakers=min_cohort),
            embedding=EmbeddingConfig(k=k, k_range=_k_range(k_range), bottom_share=bottom_share,
                                      seed=seed, min_speakers=min_cohort),
            confirm_split=confirm_split,
        )
        result = run_audit(
            table, speakers=speakers, zip_demographics=zip_demographics, embeddings=embeddings,
            embedding_ids=embedding_ids, corpus_dir=corpus_dir, methods=methods,
            out_dir=out_dir, config=config, progress=progress,
        )
    except FairstreamError as exc:
        raise click.ClickException(str(exc)) from exc

    def num(v: object, digits: int = 1) -> str:
        return "—" if not isinstance(v, float) or math.isnan(v) else f"{v:.{digits}f}"

    ov = result.overall
    level = f"{100 * confidence:g} %"
    click.echo(f"overall WER {100 * ov['wer']:.2f} % over {int(ov['n_speakers'])} speakers, "
               f"{int(ov['n_utterances'])} utterances")
    click.echo(f"{'method':<24} {'bottom cohort':<26} {'WER gap %':>9} {level + ' CI':>17} "
               f"{'p':>6} {'p cond.':>7} {'candidates':>10} {'share spk %':>11} "
               f"{'precision':>9} {'recall':>6}")
    for _, r in result.methods.iterrows():
        ci = f"[{num(float(r['wer_gap_ci_low']))}, {num(float(r['wer_gap_ci_high']))}]"
        click.echo(f"{str(r['method'])[:24]:<24} {str(r['bottom_cohort'])[:26]:<26} "
                   f"{num(float(r['wer_gap_pct'])):>9} {ci:>17} "
                   f"{num(float(r['p_value']), 3):>6} {num(float(r['p_value_naive']), 3):>7} "
                   f"{int(r['n_candidates']):>10} "
                   f"{num(float(r['bottom_share_speakers_pct'])):>11} "
                   f"{num(float(r['precision']), 2):>9} {num(float(r['recall']), 2):>6}")
    split = " (found on one half of the speakers, tested on the other)" if confirm_split else ""
    click.echo(f"CI and p: corrected for choosing the bottom cohort among the candidates{split}")
    click.echo("p cond.: conditional on this choice (as if the cohort had been named in advance)")
    excluded = sum(x.count for x in result.exclusions)
    if excluded:
        click.echo(f"excluded: {excluded} rows/speakers in total (see report, 'Excluded')")
    click.echo(f"report: {out_dir / 'report.html'}")
