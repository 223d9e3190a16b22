"""``fairstream decode``: decode a cut set with a checkpoint into a results table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fairstream.cli._search import choose_search, search_options
from fairstream.errors import FairstreamError

if TYPE_CHECKING:
    import pandas as pd

    from fairstream.inference.sharding import PartSpec, ShardEnv

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
              help="PyTorch threads (default: one per core; 1 per process under torchrun).")
@click.option("--wait-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Under torchrun: rank 0 stops waiting for a missing part whose rank has "
                   "shown no sign of life for this many seconds.")
@click.option("--keep-parts", is_flag=True,
              help="Under torchrun: keep OUT.parts/ after the merge (a rerun then reuses "
                   "every part).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def decode(checkpoint: Path, corpus: Path | None, split: str, cuts_path: Path | None,
           speakers: Path | None, out: Path, method: str | None, beam: int | None,
           max_symbols: int | None, lm_path: Path | None, lm_weight: float | None,
           token_bonus: float | None, streaming: bool,
           chunk_ms: int, max_duration: float, group_by: tuple[str, ...], trn_dir: Path | None,
           on_error: str, threads: int | None, wait_timeout: float, keep_parts: bool,
           no_progress: bool) -> None:
    """Decode utterances and write the results table (ids, ref, hyp, error counts, duration,
    token timestamps, speaker metadata) with the resolved config in its Parquet metadata.
    Greedy search unless --search (or --beam) says otherwise; `--search recipe` runs the
    search stored in the checkpoint (its `decode` section), with the LM `fairstream lm`
    stored beside the checkpoint. The search used is printed on stderr.

    Under torchrun (RANK / WORLD_SIZE set) each process decodes its share of the cuts into
    OUT.parts/part-RRRRR-of-NNNNN.parquet; rank 0 waits for every part, merges them into OUT
    (the rows and metadata a single process writes), then writes --trn-dir and prints the
    summary. A rerun decodes only the parts that are missing or stale. --out must be on a
    filesystem every process sees. See docs/decoding.md.

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
      torchrun --nproc-per-node 2 -m fairstream decode --checkpoint exp/lstm/averaged.pt \\
          --corpus data/demo --out results.parquet
    """
    import pandas as pd
    from lhotse import CutSet

    from fairstream.inference import decode_cuts, load_transducer, summarize_wer, write_trn_pair
    from fairstream.inference.sharding import file_digest, remove_parts, shard_env
    from fairstream.results import write_results

    if (corpus is None) == (cuts_path is None):
        raise click.UsageError("give exactly one of --corpus or --cuts")
    try:
        env = shard_env()
        if threads is None and env is not None:
            threads = 1  # one process per core: no oversubscription
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
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
        decoding: dict[str, Any] = {  # Any: JSON metadata
            "checkpoint": str(checkpoint), **chosen.metadata(),
            "streaming": streaming, "chunk_ms": chunk_ms,
            "corpus": str(corpus) if corpus else None, "split": split_name,
            "cuts": str(cuts_path) if cuts_path else None}
        config = {"train": loaded.config, "decode": decoding}

        def run(some_cuts: Any, progress: bool) -> pd.DataFrame:  # Any: a CutSet
            return decode_cuts(
                loaded.model, loaded.tokenizer, loaded.cmvn, some_cuts, search=chosen.config,
                lm=chosen.lm, ctc=chosen.ctc, streaming=streaming, chunk_ms=chunk_ms,
                max_duration=max_duration, speakers=spk_table, split=split_name,
                on_error=on_error,  # type: ignore[arg-type]
                progress=progress,
            )

        start_tally = getattr(loaded.model.encoder, "start_gate_tally", None)
        gated = bool(getattr(loaded.model.encoder, "gated", False))
        tally = start_tally() if start_tally is not None and gated else None  # gate shares
        specs: list[PartSpec] = []
        if env is None:
            df = run(cuts, not no_progress)
            skipped = list(df.attrs.get("skipped", []))
        else:
            identity = {**config, "on_error": on_error,
                        "checkpoint_sha256": file_digest(checkpoint),
                        "lm_sha256": file_digest(chosen.lm_path) if chosen.lm_path else None,
                        "speakers": None if spk_table is None else spk_table.to_csv()}
            merged = _decode_shard(env, out, list(cuts), run, config, identity, streaming,
                                   wait_timeout=wait_timeout, progress=not no_progress)
            if merged is None:
                return
            df, skipped, specs = merged
        decoding["skipped"] = [{"cut_id": c, "reason": r} for c, r in skipped]
        write_results(df, out, config)
        if specs and not keep_parts:
            remove_parts(out, specs)
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
    if tally is not None and sum(tally.frames):
        click.echo(tally.describe())
    if skipped:
        click.echo(f"skipped {len(skipped)} utterance(s):")
        for cut_id, reason in skipped:
            click.echo(f"  {cut_id}: {reason}")
    click.echo(f"results: {out}")


def _decode_shard(env: ShardEnv, out: Path, cut_list: list[Any],
                  run: Callable[[Any, bool], pd.DataFrame], config: dict[str, Any],
                  identity: dict[str, Any], streaming: bool, *, wait_timeout: float,
                  progress: bool,  # Any: lhotse cuts and JSON config values
                  ) -> tuple[pd.DataFrame, list[tuple[str, str]], list[PartSpec]] | None:
    """Decode this rank's shard into its part (or reuse the part when it is complete and
    current). On rank 0, wait for every part and return the merged rows, the skipped cuts in
    single-process order, and the parts; on other ranks, return None.
    """
    from lhotse import CutSet

    from fairstream.inference.sharding import (
        PartSpec,
        assign_shards,
        failure_marks,
        fingerprint,
        heartbeat,
        merge_parts,
        order_skipped,
        part_path,
        part_problem,
        read_part,
        report_failure,
        wait_for_parts,
        write_part,
    )

    by_id = {c.id: c for c in cut_list}
    shards = assign_shards({c.id: c.duration for c in cut_list}, env.world_size)
    base = fingerprint(identity)
    specs = [PartSpec(r, env.world_size, tuple(ids),
                      fingerprint([base, [by_id[i].to_dict() for i in ids]]))
             for r, ids in enumerate(shards)]
    spec = specs[env.rank]
    path = part_path(out, spec)
    old_failures = failure_marks(specs, out) if env.rank == 0 else {}
    failed = part_path(out, spec, ".failed")
    failed.unlink(missing_ok=True)
    who = f"rank {env.rank} of {env.world_size}"
    with heartbeat(part_path(out, spec, ".alive")):
        problem = part_problem(path, spec)
        if problem is None:
            click.echo(f"{who}: reusing the complete part {path}", err=True)
        else:
            if path.exists():
                click.echo(f"{who}: {problem}; decoding its {len(spec.cut_ids)} cuts again",
                           err=True)
            try:
                df = run(CutSet.from_cuts(by_id[i] for i in spec.cut_ids),
                         progress and env.rank == 0)
                skipped = list(df.attrs.get("skipped", []))
                gone = {cid for cid, _ in skipped}
                write_part(df, path, config, spec, [i for i in spec.cut_ids if i not in gone],
                           skipped)
            except Exception as exc:
                report_failure(failed, f"{type(exc).__name__}: {exc}")
                raise
            click.echo(f"{who}: wrote {path} ({len(df)} utterances)", err=True)
    if env.rank != 0:
        return None
    wait_for_parts(out, specs, timeout=wait_timeout, old_failures=old_failures)
    parts = [read_part(part_path(out, s)) for s in specs]
    df = merge_parts((rows, ids) for rows, ids, _ in parts)
    unscored = [c.id for c in cut_list
                if len(c.supervisions) != 1 or c.supervisions[0].text is None]
    skipped = order_skipped([s for _, _, sk in parts for s in sk],
                            {c.id: c.duration for c in cut_list}, unscored, streaming)
    df.attrs = {"skipped": skipped}  # as decode_cuts leaves it (Parquet keeps the attrs)
    return df, skipped, specs
