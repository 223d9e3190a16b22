"""``fairstream corpus``: build, import and inspect corpora."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from fairstream.errors import FairstreamError

if TYPE_CHECKING:
    import pandas as pd

_OnError = Literal["raise", "skip"]

__all__ = ["corpus"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def corpus() -> None:
    """Build, import and inspect speech corpora.

    \b
    A corpus is a directory with Lhotse manifests (manifests/<split>_{recordings,
    supervisions,cuts}.jsonl.gz), audio, speakers.csv, zip_demographics.csv, cmvn.json,
    corpus_card.md and corpus.json (which lists the splits: train, dev, test by default).
    Every other command reads this layout; docs/corpus.md describes it.

    \b
    Examples:
      fairstream corpus build --preset tiny --out data/tiny          # seconds
      fairstream corpus build --preset demo --out data/demo --jobs 2 # a few minutes, ~5 h audio
      fairstream corpus info data/demo
      fairstream corpus import-kaldi /path/to/kaldi/data/train --out data/mine
    """


@corpus.command("build")
@click.option("--preset", type=click.Choice(["tiny", "demo", "demo-clean", "full"]),
              default="demo", show_default=True,
              help="Corpus size: tiny (~200 utterances, for tests), demo (~5 h, 400 training "
                   "speakers), demo-clean (demo with no test sentence in training and 20% of "
                   "the names, artists, songs, cities and groceries held out of training), "
                   "full (~33 h).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (new or empty; or an unfinished build of the same corpus "
                   "with --resume).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Corpus seed. The same preset and seed give byte-identical audio and manifests.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes for synthesis (eSpeak NG is single-threaded per process).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted build in --out; finished utterances are not "
                   "synthesized again.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def build(preset: str, out: Path, seed: int, jobs: int, resume: bool, no_progress: bool) -> None:
    """Synthesize the multi-accent English corpus with eSpeak NG.

    \b
    Speakers differ in accent (en-us, en-us-nyc, en-gb, en-gb-x-rp, en-gb-scotland,
    en-gb-x-gbclan, en-gb-x-gbcwmd, en-029), voice variant, pitch, rate, noise, SNR and
    channel, and carry metadata (gender, age band, a real US zip code and its lat/lon).
    The PLANTED DISPARITY: en-gb-scotland and en-029 make up only ~3% of the training
    speakers each but their normal share of dev/test, so a model trained on it is worse on
    them. corpus_card.md documents all of it. Splits have disjoint speakers.

    \b
    An interrupted build is never marked complete; finish it with --resume.
    """
    from fairstream.data.presets import get_preset
    from fairstream.data.synthesis import build_corpus

    try:
        summary = build_corpus(get_preset(preset), out, seed=seed, jobs=jobs, resume=resume,
                               progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    by_split = ", ".join(f"{k} {v:.2f}" for k, v in summary.hours_by_split.items())
    click.echo(f"corpus {summary.out} (preset {summary.preset}, seed {summary.seed}) complete")
    click.echo(f"  speakers {summary.n_speakers}, utterances {summary.n_utterances}, "
               f"hours {summary.hours:.2f} ({by_split})")
    click.echo(f"  synthesized {summary.n_synthesized} utterances in "
               f"{summary.synthesis_seconds:.1f} s with {summary.jobs} job(s): "
               f"{summary.utterances_per_second:.1f} utt/s, real-time factor "
               f"{summary.real_time_factor:.4f} (CPU {summary.synthesis_cpu_seconds:.1f} s); "
               f"reused {summary.n_reused}")
    click.echo(f"  CMVN {summary.cmvn_seconds:.1f} s; "
               f"total wall time {summary.total_seconds:.1f} s")
    click.echo(f"  corpus card: {Path(summary.out) / 'corpus_card.md'}")


def _table(df: pd.DataFrame, index: str) -> str:
    import pandas as pd

    from fairstream.data.layout import order_splits

    spk = df.groupby([index, "split"])["speaker"].nunique().unstack("split", fill_value=0)
    utt = df.groupby([index, "split"]).size().unstack("split", fill_value=0)
    hrs = (df.groupby([index, "split"])["duration"].sum() / 3600).unstack("split", fill_value=0.0)
    parts = {}
    for s in order_splits(spk.columns):
        parts[(s, "spk")] = spk[s]
        parts[(s, "utt")] = utt[s]
        parts[(s, "h")] = hrs[s].round(2)
    table = pd.DataFrame(parts)
    table.columns = [f"{a}:{b}" for a, b in table.columns]
    text: str = table.to_string()
    return text


@corpus.command("mix")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory for the sessions.")
@click.option("--sessions", "sessions", multiple=True, metavar="SPLIT=N",
              help="Sessions per split (repeatable; default train=400 dev=40 test=80).")
@click.option("--max-turns", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-overlap", type=click.FloatRange(0, 1, max_open=True), default=0.4,
              show_default=True, help="Largest overlap, as a share of the shorter turn.")
@click.option("--single-speaker-share", type=click.FloatRange(0, 1), default=0.15,
              show_default=True, help="Share of sessions with one speaker.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def mix(directory: Path, out: Path, sessions: tuple[str, ...], max_turns: int,
        max_overlap: float, single_speaker_share: float, seed: int, no_progress: bool) -> None:
    """Mix two-speaker sessions (1-4 turns, 0-40 % overlap) from a corpus's utterances.

    \b
    Speakers of a session come from one split, so train/dev/test sessions have disjoint
    speakers. Writes OUT/audio/<split>/<session>.flac, OUT/<split>.seglst.json (the SegLST
    reference meeteval reads), Lhotse manifests in OUT/manifests, OUT/sessions.csv and
    OUT/mix.json. The same corpus, settings and seed give the same sessions.

    \b
    Example:
      fairstream corpus mix demo_out/corpus --out data/mix --sessions train=400 \\
          --sessions test=80
    """
    from fairstream.data.mixing import MixConfig, mix_corpus

    try:
        counts = []
        for item in sessions:
            split, sep, n = item.partition("=")
            if not sep or not n.isdigit():
                raise click.BadParameter(f"{item!r} is not SPLIT=N", param_hint="--sessions")
            counts.append((split, int(n)))
        kw: dict[str, object] = {"sessions": tuple(counts)} if counts else {}
        cfg = MixConfig(max_turns=max_turns, max_overlap=max_overlap,
                        single_speaker_share=single_speaker_share, seed=seed,
                        **kw)  # type: ignore[arg-type]
        summary = mix_corpus(directory, out, cfg, progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"mixed {summary['sessions']} sessions -> {out} ({summary['overlapped_sessions']} "
               f"overlapped; mean overlap ratio {summary['mean_overlap_ratio']:.3f})")


@corpus.command("info")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def info(directory: Path) -> None:
    """Print counts, hours and per-accent / per-gender / per-split tables of a corpus.

    Columns are <split>:spk (speakers), <split>:utt (utterances) and <split>:h (hours).
    """
    import pandas as pd

    from fairstream.data.corpus import load_corpus

    try:
        c = load_corpus(directory)
        rows = []
        for split in c.splits:
            for sup in c.supervisions(split):
                custom = sup.custom or {}
                rows.append({"split": split, "speaker": sup.speaker, "duration": sup.duration,
                             "accent": custom.get("accent", "unknown"),
                             "gender": custom.get("gender", sup.gender or "unknown")})
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    df = pd.DataFrame(rows, columns=["split", "speaker", "duration", "accent", "gender"])
    click.echo(f"corpus {c.root}: preset {c.info.get('preset', '-')}, "
               f"seed {c.info.get('seed', '-')}, "
               f"fingerprint {str(c.info.get('fingerprint', '-'))[:12]}")
    click.echo(f"speakers {df['speaker'].nunique()}, utterances {len(df)}, "
               f"hours {df['duration'].sum() / 3600:.2f}")
    if df.empty:
        return
    per_split = df.groupby("split").agg(speakers=("speaker", "nunique"),
                                        utterances=("speaker", "size"),
                                        hours=("duration", lambda d: round(d.sum() / 3600, 3)))
    per_split = per_split.reindex([s for s in c.splits if s in per_split.index])
    click.echo("\nper split:\n" + per_split.to_string())
    click.echo("\nper accent:\n" + _table(df, "accent"))
    click.echo("\nper gender:\n" + _table(df, "gender"))
    planted = c.planted
    if planted.get("under_represented_accents"):
        click.echo("\nplanted under-represented accents: "
                   + ", ".join(planted["under_represented_accents"]))
        for a in planted["under_represented_accents"]:
            click.echo(f"  {a}: train share {planted['train_share'].get(a, 0):.1%}, "
                       f"test share {planted['test_share'].get(a, 0):.1%}")


_split_option = click.option(
    "--split", default="train", show_default=True,
    help="Split the imported data becomes (train, dev, test, or another name such as audit); "
         "import several times to add more splits.")
_on_error_option = click.option(
    "--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
    help="Stop at the first bad item (missing audio, empty transcript, duplicate id, ...) or skip "
         "bad items and list them at the end (and in import_report_<split>.json).")
_overwrite_option = click.option("--overwrite", is_flag=True,
                                 help="Replace the split if --out already has it.")


@corpus.command("import-kaldi")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output corpus directory (new, or an imported corpus to add a split to).")
@_split_option
@_on_error_option
@_overwrite_option
def import_kaldi(data_dir: Path, out: Path, split: str, on_error: _OnError,
                 overwrite: bool) -> None:
    """Import a Kaldi data directory (wav.scp, text, utt2spk, optional spk2gender, segments).

    \b
    The result has the same layout as a built corpus, so train, decode and audit work on
    it unchanged. Audio stays where it is; non-16 kHz files are resampled on load.
    Example:
      fairstream corpus import-kaldi ~/kaldi/egs/x/data/train --out data/mine
      fairstream corpus import-kaldi ~/kaldi/egs/x/data/test --out data/mine --split test
    """
    from fairstream.data.importers import import_kaldi_dir

    try:
        report = import_kaldi_dir(data_dir, out, split=split, on_error=on_error,
                                  overwrite=overwrite)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"imported {data_dir} into {out}: {report}")


@corpus.command("import-lhotse")
@click.option("--recordings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Lhotse RecordingSet manifest (JSONL or JSONL.gz).")
@click.option("--supervisions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Lhotse SupervisionSet manifest (JSONL or JSONL.gz).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output corpus directory (new, or an imported corpus to add a split to).")
@_split_option
@_on_error_option
@_overwrite_option
def import_lhotse(recordings: Path, supervisions: Path, out: Path, split: str,
                  on_error: _OnError, overwrite: bool) -> None:
    """Import existing Lhotse recording + supervision manifests into a corpus directory.

    Supervision `custom` fields (accent, age_band, zip, ...) are kept, so the audit can
    use them.
    """
    from fairstream.data.importers import import_lhotse_manifests

    try:
        report = import_lhotse_manifests(recordings, supervisions, out, split=split,
                                         on_error=on_error, overwrite=overwrite)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"imported {recordings} + {supervisions} into {out}: {report}")


@corpus.command("import-mix")
@click.option("--ref", "reference", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Reference turns: SegLST (.json) or NIST STM.")
@click.option("--recordings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="One '<session_id> <audio path>' per line (a wav.scp "
                                  "without pipes); relative paths are relative to this file.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output sessions directory (new, or one to add a split to).")
@click.option("--split", default="test", show_default=True,
              help="Split the sessions become (import again to add train or dev).")
@_on_error_option
def import_mix(reference: Path, recordings: Path, out: Path, split: str,
               on_error: _OnError) -> None:
    """Import real multi-talker recordings (meetings, calls) as a sessions directory.

    \b
    The result has the layout `fairstream corpus mix` writes (audio/<split>/*.flac,
    <split>.seglst.json, manifests, sessions.csv, mix.json), so `fairstream mt train`,
    `mt decode` and `mt score` run on it unchanged. Words are normalized as the corpus's
    transcripts are; empty segments (STM's ignore_time_segment_in_scoring) are dropped
    and counted.

    \b
    Example:
      fairstream corpus import-mix --ref meeting.stm --recordings wav.scp --out data/meet
      fairstream mt decode --checkpoint exp/sts/averaged.pt --mix data/meet --split test \\
          --out exp/sts/meet.seglst.json
    """
    from fairstream.data.mix_import import import_sessions

    try:
        report = import_sessions(reference, recordings, out, split=split, on_error=on_error)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"imported {reference} into {out}: {report}")
