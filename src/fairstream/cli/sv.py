"""``fairstream sv``: speaker embeddings, verification trials, and SV fairness evaluation."""

from __future__ import annotations

from pathlib import Path

import click

from fairstream.errors import FairstreamError

__all__ = ["sv"]

_CTX = {"help_option_names": ["-h", "--help"]}
_IN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_IN_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT_DIR = click.Path(file_okay=False, path_type=Path)
_OUT_FILE = click.Path(dir_okay=False, path_type=Path)


def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


@click.group(context_settings=_CTX)
def sv() -> None:
    """Speaker embeddings, speaker verification (SV) and its fairness across groups.

    \b
    The whole SV story on a corpus directory:
      fairstream sv train --corpus data/demo --out exp/sv_base
      fairstream sv train --corpus data/demo --out exp/sv_arw --arw
      fairstream sv trials --corpus data/demo --out exp/trials.txt
      fairstream sv embed --checkpoint exp/sv_base/final.pt --corpus data/demo \\
          --out exp/sv_base/embeddings.parquet
      fairstream sv eval --trials exp/trials.txt --embeddings exp/sv_base/embeddings.parquet \\
          --group-by gender,accent --out exp/sv_base/eval

    \b
    Trial lists use the VoxCeleb format ("1 enroll.wav test.wav"), so VoxCeleb's own
    veri_test2.txt works: embed its files with `sv embed --wav-root DIR --trials LIST`.
    Every metric is defined in the report it appears in (EER, minDCF with its P_target and
    Kaldi normalization, gaps, spread, fairness discrepancy rate, bootstrap intervals).
    """


@sv.command(context_settings=_CTX)
@click.option("--corpus", type=_IN_DIR, required=True,
              help="Corpus directory; its train split's speakers are the training classes.")
@click.option("--out", type=_OUT_DIR, required=True,
              help="Experiment directory (checkpoints, metrics.jsonl, final.pt, averaged.pt).")
@click.option("--arw/--no-arw", default=None,
              help="Adversarial reweighting of the pairwise loss "
                   "(default: the config's choice; baseline).")
@click.option("--balance", type=click.Choice(["none", "sampling", "weights"]),
              help="Group balancing by speaker metadata (--balance-by): 'sampling' draws "
                   "speakers inversely to their group's share, 'weights' weights the loss by "
                   "inverse group frequency (default: the config's choice; none).")
@click.option("--balance-by", metavar="COLUMN",
              help="speakers.csv column whose groups --balance evens out (default accent).")
@click.option("--config", "config_path", type=_IN_FILE,
              help="Optional YAML with any SvTrainConfig fields "
                   "(model, data, loss, optim, schedule, arw).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set model.channels=256 (repeatable).")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Sets schedule.max_steps (default 400).")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Stop cleanly after this much training time.")
@click.option("--feature-cache", type=_OUT_DIR,
              help="Directory to cache training fbank features (reused by later runs).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the newest checkpoint in --out, or start over.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def train(corpus: Path, out: Path, arw: bool | None, balance: str | None,
          balance_by: str | None, config_path: Path | None,
          overrides: tuple[str, ...], max_steps: int | None, budget_minutes: float | None,
          feature_cache: Path | None, threads: int | None, resume: bool,
          no_progress: bool) -> None:
    """Train the speaker-embedding extractor (small ECAPA-TDNN, 192-dim embeddings).

    \b
    Loss: AAM-softmax over the training speakers + a pairwise (same/different speaker)
    loss over all pairs of each speaker-balanced batch, with noise augmentation.
    With --arw an adversary weights each sample from its embedding and k-means cluster
    (weights 1 + n*w_i/sum(w), pair weight = sum of the two); the extractor minimizes the
    weighted pairwise loss, the adversary maximizes it, alternating every step. Without
    --arw: the same model, data and schedule, uniform weights (the baseline).
    Training runs through the project's one training loop (resumable, checkpointed).

    \b
    Example (the demo's baseline and ARW runs, one CPU thread each):
      fairstream sv train --corpus data/demo --out exp/sv_base --threads 1
      fairstream sv train --corpus data/demo --out exp/sv_arw --arw --threads 1
    """
    from fairstream.sv.train import load_sv_config, method_name, train_speaker_model

    _threads(threads)
    sets = list(overrides) + [f"data.corpus={corpus}"]
    if balance is not None:
        sets.append(f"data.balance={balance}")
    if balance_by is not None:
        sets.append(f"data.balance_by={balance_by}")
    if max_steps is not None:
        sets.append(f"schedule.max_steps={max_steps}")
    if budget_minutes is not None:
        sets.append(f"schedule.budget_minutes={budget_minutes}")
    if feature_cache is not None:
        sets.append(f"data.feature_cache={feature_cache}")
    try:
        config = load_sv_config(config_path, sets, arw=arw)
        result = train_speaker_model(config, out, resume=resume, progress=not no_progress)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{method_name(config)} extractor: stopped ({result.stop_reason}) "
               f"after {result.steps} steps, {result.elapsed_s / 60:.1f} min")
    click.echo(f"final model {result.final_checkpoint}")


@sv.command(context_settings=_CTX)
@click.option("--checkpoint", type=_IN_FILE, required=True,
              help="Speaker checkpoint (OUT/final.pt or OUT/averaged.pt of `sv train`).")
@click.option("--corpus", type=_IN_DIR,
              help="Corpus directory to embed (with --split).")
@click.option("--split", "splits", multiple=True, default=("test",), show_default=True,
              help="Corpus split(s) to embed (repeatable).")
@click.option("--cuts", "cuts_path", type=_IN_FILE,
              help="A Lhotse cuts manifest to embed instead of a corpus split.")
@click.option("--wav-root", type=_IN_DIR,
              help="Embed the audio files a trial list names, relative to this directory.")
@click.option("--trials", "trials_path", type=_IN_FILE,
              help="Trial list whose files to embed (with --wav-root).")
@click.option("--out", type=_OUT_FILE, required=True,
              help="embeddings.parquet; per-speaker means go to <stem>_speakers.parquet.")
@click.option("--crop-seconds", type=click.FloatRange(min=0, min_open=True),
              help="Embed a random window of this length of each utterance (harder trials).")
@click.option("--snr-db", type=float,
              help="Add white/pink/brown noise at this SNR before embedding (harder trials).")
@click.option("--degrade-seed", default=0, show_default=True,
              help="Seed of the crops and noise (with each utterance's path).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def embed(checkpoint: Path, corpus: Path | None, splits: tuple[str, ...], cuts_path: Path | None,
          wav_root: Path | None, trials_path: Path | None, out: Path, crop_seconds: float | None,
          snr_db: float | None, degrade_seed: int, threads: int | None,
          no_progress: bool) -> None:
    """Embed utterances: one row per utterance plus per-speaker mean embeddings.

    \b
    Sources (choose one):
      --corpus DIR [--split test ...]   cuts of a corpus (speaker metadata columns kept)
      --cuts FILE                       any Lhotse cuts manifest (keys: audio paths)
      --wav-root DIR --trials LIST      the files of a VoxCeleb-format trial list
    The `path` column is the key trial lists refer to.
    --crop-seconds / --snr-db make every utterance a short, noisy segment (the same segment
    for every checkpoint given the same --degrade-seed), for trials hard enough to tell
    systems apart.
    """
    import pandas as pd
    from lhotse import CutSet

    from fairstream.data.corpus import load_corpus
    from fairstream.data.trials import check_files, read_trials
    from fairstream.sv.embed import Degradation, embed_cuts, embed_files, write_embeddings
    from fairstream.sv.train import load_extractor
    from fairstream.sv.utterances import utterance_table

    _threads(threads)
    chosen = [x is not None for x in (corpus, cuts_path, wav_root)]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --corpus, --cuts, --wav-root")
    progress = not no_progress
    try:
        degradation = None
        if crop_seconds is not None or snr_db is not None:
            degradation = Degradation(crop_seconds, snr_db, degrade_seed)
        ext = load_extractor(checkpoint)
        if corpus is not None:
            c = load_corpus(corpus)
            parts = []
            for split in splits:
                cuts = c.cuts(split)
                table = utterance_table(cuts, c.root, c.speakers, split=split)
                parts.append(embed_cuts(ext, cuts, table, progress=progress,
                                        degradation=degradation))
            df = pd.concat(parts, ignore_index=True)
        elif cuts_path is not None:
            cuts = CutSet.from_file(cuts_path)
            table = utterance_table(cuts, cuts_path.parent, None, split="")
            df = embed_cuts(ext, cuts, table, progress=progress, degradation=degradation)
        else:
            if trials_path is None:
                raise click.UsageError("--wav-root needs --trials")
            trials = read_trials(trials_path)
            assert wav_root is not None
            check_files(trials, wav_root)
            paths = sorted({p for t in trials for p in (t.enroll, t.test)})
            df = embed_files(ext, paths, wav_root, progress=progress, degradation=degradation)
        meta: dict[str, object] = {"checkpoint": str(checkpoint),
                                   "config": ext.config.__class__.__name__}
        if degradation is not None:
            meta["degradation"] = degradation.describe()
        utt, spk = write_embeddings(df, out, meta=meta)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{len(df)} utterance embeddings -> {utt}")
    click.echo(f"{df['speaker_id'].nunique()} speaker means -> {spk}")


@sv.command(context_settings=_CTX)
@click.option("--corpus", type=_IN_DIR, required=True, help="Corpus directory.")
@click.option("--split", default="test", show_default=True,
              help="Held-out split to draw trials from.")
@click.option("--out", type=_OUT_FILE, required=True, help="trials.txt")
@click.option("--targets", default=20, show_default=True, help="Target trials per speaker.")
@click.option("--same-gender", default=20, show_default=True,
              help="Same-gender non-target trials per speaker.")
@click.option("--same-accent", default=20, show_default=True,
              help="Same-accent non-target trials per speaker.")
@click.option("--random", "random_", default=20, show_default=True,
              help="Random non-target trials per speaker.")
@click.option("--seed", default=0, show_default=True)
def trials(corpus: Path, split: str, out: Path, targets: int, same_gender: int, same_accent: int,
           random_: int, seed: int) -> None:
    """Build a VoxCeleb-format trial list ("label enroll test") from held-out speakers.

    \b
    Paths are relative to the corpus audio/ directory. Besides random impostors, each
    speaker gets same-gender and same-accent impostors: the hard trials, and the only
    non-target trials that count in per-gender / per-accent EERs.
    """
    from fairstream.data.corpus import load_corpus
    from fairstream.data.trials import TrialSpec, build_trials, write_trials
    from fairstream.sv.utterances import utterance_table

    try:
        c = load_corpus(corpus)
        table = utterance_table(c.cuts(split), c.root, c.speakers, split=split)
        spec = TrialSpec(targets=targets, same_gender=same_gender, same_accent=same_accent,
                         random=random_, seed=seed)
        result = build_trials(table, spec)
        write_trials(result, out)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    n_t = sum(t.label for t in result)
    click.echo(f"{len(result)} trials ({n_t} target, {len(result) - n_t} non-target) over "
               f"{table['speaker_id'].nunique()} speakers -> {out}")


@sv.command("eval", context_settings=_CTX)
@click.option("--trials", "trials_path", type=_IN_FILE, required=True,
              help="VoxCeleb-format trial list.")
@click.option("--embeddings", type=_IN_FILE, required=True,
              help="embeddings.parquet from `sv embed`.")
@click.option("--group-by", default="gender,accent", show_default=True,
              help="Comma-separated metadata columns for per-group results ('' for none).")
@click.option("--snorm", is_flag=True, help="Adaptive symmetric score normalization (AS-norm).")
@click.option("--cohort", type=_IN_FILE,
              help="AS-norm cohort: an embeddings file (its speaker means are used). Default: the "
                   "train-split rows of --embeddings.")
@click.option("--top-k", default=200, show_default=True, help="AS-norm adaptive cohort size.")
@click.option("--p-target", "p_targets", multiple=True, type=float, default=(0.01, 0.05),
              show_default=True, help="minDCF target prior (repeatable).")
@click.option("--n-boot", default=1000, show_default=True,
              help="Speaker-bootstrap replicates (0: none).")
@click.option("--min-group-speakers", default=5, show_default=True,
              help="Suppress groups with fewer speakers.")
@click.option("--wav-root", type=_IN_DIR,
              help="Also check that every trial file exists under this directory.")
@click.option("--out", type=_OUT_DIR, required=True, help="Output directory.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def eval_(trials_path: Path, embeddings: Path, group_by: str, snorm: bool, cohort: Path | None,
          top_k: int, p_targets: tuple[float, ...], n_boot: int, min_group_speakers: int,
          wav_root: Path | None, out: Path, no_progress: bool) -> None:
    """Score trials (cosine) and report EER, minDCF and their fairness across groups.

    \b
    Writes OUT/metrics.json and OUT/report.md (every number with its definition), the
    DET curve OUT/det.png, per-group tables OUT/groups_<column>.csv and bar charts
    OUT/eer_by_<column>.png, and the trial scores OUT/scores.txt.
    minDCF is min over thresholds of C_miss*P_miss*P_target + C_fa*P_fa*(1-P_target),
    divided by min(C_miss*P_target, C_fa*(1-P_target)) (Kaldi), C_miss = C_fa = 1.
    Per group: EER of trials with both sides in the group, gap (max - min, and relative),
    std across groups, fairness discrepancy rate (alpha = beta = 0.5, at the overall
    EER threshold), speaker-bootstrap intervals.
    """
    import numpy as np

    from fairstream.data.trials import check_files, read_trials
    from fairstream.sv.embed import read_embeddings, speaker_means
    from fairstream.sv.evaluate import SvEvalConfig, evaluate_sv, write_evaluation

    cols = tuple(c.strip() for c in group_by.split(",") if c.strip())
    try:
        trial_list = read_trials(trials_path)
        if wav_root is not None:
            check_files(trial_list, wav_root)
        table, emb = read_embeddings(embeddings)
        cohort_emb = None
        if snorm:
            if cohort is not None:
                ctab, cemb = read_embeddings(cohort)
            else:
                if "split" in table.columns:
                    mask = (table["split"] == "train").to_numpy()
                else:
                    mask = np.zeros(len(table), bool)
                if not mask.any():
                    raise click.UsageError(
                        "--snorm needs a cohort: pass --cohort FILE (e.g. embeddings of the "
                        "train split) or embed the train split into --embeddings")
                ctab, cemb = table[mask].reset_index(drop=True), emb[mask]
            ctab = ctab.assign(embedding=list(cemb))
            if "speaker_id" in ctab.columns:
                cohort_emb = np.stack(speaker_means(ctab)["embedding"].to_numpy())
            else:
                cohort_emb = cemb
        config = SvEvalConfig(p_targets=tuple(p_targets), group_by=cols, n_boot=n_boot,
                              min_group_speakers=min_group_speakers)
        ev = evaluate_sv(trial_list, table, emb, config=config, cohort=cohort_emb, top_k=top_k,
                         progress=not no_progress)
        files = write_evaluation(ev, trial_list, out)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    ci = ev.overall_ci.eer if ev.overall_ci else None
    ci_text = f" [{100 * ci.low:.2f}, {100 * ci.high:.2f}]" if ci else ""
    click.echo(f"{ev.n_trials} trials, {ev.scoring}")
    dcfs = ", ".join(f"minDCF(P_target={p.p_target:g}, Kaldi-normalized) {p.min_dcf:.4f}"
                     for p in ev.overall.min_dcf)
    click.echo(f"EER {100 * ev.overall.eer:.2f}%{ci_text}; {dcfs}")
    for col, g in ev.groups.items():
        per = ", ".join(f"{k} {100 * v.eer:.2f}%" for k, v in g.by_group.items())
        click.echo(f"by {col}: {per}; gap {100 * g.difference:.2f} pts, "
                   f"std {100 * g.std:.2f} pts, FDR {g.fdr:.3f}")
    click.echo(f"report {files['report']}, metrics {files['metrics']}")


@sv.command(context_settings=_CTX)
@click.option("--trials", "trials_path", type=_IN_FILE, required=True,
              help="VoxCeleb-format trial list shared by both systems.")
@click.option("--embeddings", "embedding_files", multiple=True, required=True,
              type=_IN_FILE,
              help="Embeddings of system A, then of system B (give the option twice).")
@click.option("--names", default="baseline,arw", show_default=True, help="Names of A and B.")
@click.option("--group-by", default="gender,accent", show_default=True,
              help="Comma-separated metadata columns.")
@click.option("--n-boot", default=1000, show_default=True,
              help="Paired speaker-bootstrap replicates.")
@click.option("--min-group-speakers", default=5, show_default=True,
              help="Suppress groups with fewer speakers.")
@click.option("--out", type=_OUT_DIR, required=True, help="Output directory.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def compare(trials_path: Path, embedding_files: tuple[Path, ...], names: str, group_by: str,
            n_boot: int, min_group_speakers: int, out: Path, no_progress: bool) -> None:
    """Compare two systems (e.g. baseline vs ARW) on one trial list.

    \b
    Writes OUT/comparison.md (+ .csv, .json, det.png): overall EER and minDCF, per-group EER,
    group EER gap and std, FDR for both systems; the change B − A with a PAIRED
    speaker-bootstrap interval (each replicate scores both systems on the same speakers);
    the relative change next to the ARW paper's (EER −7.6%, gender gap −17%, spread −10%).

    \b
    Example:
      fairstream sv compare --trials runs/sv/trials.txt \\
          --embeddings runs/sv/base/embeddings.parquet \\
          --embeddings runs/sv/arw/embeddings.parquet \\
          --out runs/sv/compare
    """
    from fairstream.data.trials import read_trials
    from fairstream.sv.compare import compare_systems, comparison_markdown, write_comparison
    from fairstream.sv.embed import read_embeddings
    from fairstream.sv.evaluate import SvEvalConfig

    labels = [n.strip() for n in names.split(",")]
    if len(embedding_files) != 2 or len(labels) != 2 or labels[0] == labels[1]:
        raise click.UsageError("give --embeddings twice and two distinct --names")
    cols = tuple(c.strip() for c in group_by.split(",") if c.strip())
    try:
        trial_list = read_trials(trials_path)
        systems = {name: read_embeddings(path) for name, path in zip(labels, embedding_files)}
        config = SvEvalConfig(group_by=cols, n_boot=n_boot, min_group_speakers=min_group_speakers)
        result = compare_systems(trial_list, systems, config=config, progress=not no_progress)
        files = write_comparison(result, out)
    except FairstreamError as e:
        raise click.ClickException(str(e)) from e
    click.echo(comparison_markdown(result), nl=False)
    click.echo(f"written {files['markdown']}")
