"""``fairstream mt``: multi-talker recognition (train, decode, score) on mixed sessions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["mt"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def mt() -> None:
    """Multi-talker streaming recognition: the separator-transducer-segmenter.

    \b
    Sessions come from `fairstream corpus mix` (two-speaker conversations with overlap)
    or `fairstream corpus import-mix` (real recordings with a SegLST or STM reference).
    A model starts from a trained single-talker transducer, adds <sot>/<eot> turn tokens
    and a separator with --channels outputs (1 channel: the multi-turn RNN-T baseline).

    \b
    Example:
      fairstream corpus mix data/demo --out data/mix
      fairstream mt train --config recipes/lstm_transducer.yaml --mix data/mix \\
          --init exp/lstm/averaged.pt --out exp/sts --max-steps 600
      fairstream mt decode --checkpoint exp/sts/averaged.pt --mix data/mix --split test \\
          --out exp/sts/test.seglst.json --stream
      fairstream mt score --ref data/mix/test.seglst.json --hyp exp/sts/test.seglst.json
    """


@mt.command("train")
@click.option("--config", "config_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Recipe: its optim, schedule, data.max_duration (seconds of sessions per "
                   "step), data.train_split/valid_split and seed are used.")
@click.option("--mix", "mix_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="A `fairstream corpus mix` or `import-mix` directory.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Single-talker transducer checkpoint to start from.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--channels", type=click.IntRange(1, 4), default=2, show_default=True,
              help="Output channels (2: separator-transducer-segmenter; 1: MT-RNN-T).")
@click.option("--eot-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="λ of the end-of-turn latency penalty, per second of delay (0: none).")
@click.option("--separator-dim", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set optim.lr=0.0005.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Sets schedule.max_steps.")
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.option("--no-progress", is_flag=True)
def train_cmd(config_path: Path, mix_dir: Path, init: Path, out: Path, channels: int,
              eot_weight: float, separator_dim: int, overrides: tuple[str, ...],
              max_steps: int | None, resume: bool, no_progress: bool) -> None:
    """Train a multi-talker transducer on mixed sessions."""
    from fairstream.multitalker.train import train_multitalker
    from fairstream.training.config import load_config

    sets = list(overrides) + ([f"schedule.max_steps={max_steps}"] if max_steps else [])
    try:
        config = load_config(config_path, sets)
        result = train_multitalker(config, mix_dir, out, init=init, channels=channels,
                                   separator_dim=separator_dim, eot_weight=eot_weight,
                                   resume=resume, progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"stopped ({result.stop_reason}) after {result.steps} steps, "
               f"{result.elapsed_s / 60:.1f} min")
    click.echo(f"averaged model {result.averaged_checkpoint}")


@mt.command("decode")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)
@click.option("--mix", "mix_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="A `fairstream corpus mix` or `import-mix` directory.")
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Hypothesis SegLST JSON (speakers are the channels: ch0, ch1).")
@click.option("--stream", "streaming", is_flag=True,
              help="Decode chunk by chunk (the same result as offline).")
@click.option("--chunk-ms", type=click.IntRange(min=10), default=160, show_default=True)
@click.option("--no-progress", is_flag=True)
def decode_cmd(checkpoint: Path, mix_dir: Path, split: str, out: Path, streaming: bool,
               chunk_ms: int, no_progress: bool) -> None:
    """Decode the sessions of a split into SegLST turns."""
    from fairstream.metrics.multitalker import write_seglst
    from fairstream.multitalker.decode import decode_sessions
    from fairstream.multitalker.train import load_multitalker, load_sessions

    try:
        loaded = load_multitalker(checkpoint)
        sessions = load_sessions(mix_dir, split)
        hyp = decode_sessions(loaded, sessions, streaming=streaming, chunk_ms=chunk_ms,
                              progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    write_seglst(hyp, out)
    click.echo(f"{len(sessions)} sessions, {len(hyp)} turns -> {out}")


@mt.command("score")
@click.option("--ref", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Reference SegLST (e.g. MIX/test.seglst.json).")
@click.option("--hyp", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Hypothesis SegLST (`fairstream mt decode`).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the scores (and per-session rows) as JSON.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise",
              show_default=True,
              help="skip: leave out hypothesis sessions the reference lacks, and count them.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a results table (Parquet) for `fairstream audit`: one row per "
                   "session and reference speaker, errors from the cpWER assignment.")
@click.option("--speakers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="speakers.csv whose metadata (accent, gender, ...) the --results rows get.")
def score_cmd(ref: Path, hyp: Path, out: Path | None, on_error: str, results: Path | None,
              speakers: Path | None) -> None:
    """cpWER, ORC-WER, turn-counting accuracy and <eot> latency of a hypothesis."""
    from fairstream._io import atomic_write_text
    from fairstream.metrics.multitalker import read_seglst
    from fairstream.multitalker.decode import score_sessions, session_results

    try:
        reference, hypothesis = read_seglst(ref), read_seglst(hyp)
        scores = score_sessions(reference, hypothesis, on_error=on_error)
        if results is not None:
            import pandas as pd

            from fairstream.results import write_results

            known = {s.session_id for s in reference}
            table = session_results(
                reference, [h for h in hypothesis if h.session_id in known],
                pd.read_csv(speakers, dtype={"zip": str, "speaker_id": str})
                if speakers is not None else None)
            write_results(table, results, {"multitalker": {"ref": str(ref), "hyp": str(hyp)}})
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e

    def ms(x: float | None) -> str:
        return "—" if x is None else f"{x:.0f} ms"

    click.echo(f"{scores['sessions']} sessions, {scores['ref_words']} words: "
               f"cpWER {100 * scores['cpwer']:.2f}%, ORC-WER {100 * scores['orc_wer']:.2f}%, "
               f"turn counting {100 * scores['turn_count_acc']:.1f}%, <eot> latency p50 "
               f"{ms(scores['eot_latency_ms_p50'])}, p90 {ms(scores['eot_latency_ms_p90'])}")
    if scores["excluded"]:
        click.echo(f"excluded {len(scores['excluded'])} hypothesis session(s) not in the "
                   f"reference: {', '.join(e['session_id'] for e in scores['excluded'][:5])}")
    if out is not None:
        atomic_write_text(out, json.dumps(scores, indent=1) + "\n")
        click.echo(f"scores: {out}")
    if results is not None:
        click.echo(f"results table (one row per session and speaker): {results}")
