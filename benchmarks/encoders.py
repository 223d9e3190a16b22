"""Encoder comparison: equal steps, equal data order, speaker-bootstrap intervals.

For every (encoder, seed) the encoder's recipe (``src/fairstream/recipes``) trains a
transducer for exactly ``--steps`` optimizer steps: ``schedule.max_steps`` is the stopping
rule, the wall-clock budget is off and the epoch limit out of reach, the learning-rate
schedule is the recipe's with its cosine decaying over the step budget
(``optim.decay_steps = --steps``), and ``seed`` fixes both the data order and augmentation
(the same for every encoder at that seed) and the model's initialization. Then, on one
thread:

* ``params``: parameters of the whole transducer (``encoder_params``: the encoder's);
* ``flops_per_audio_s``: FLOPs of the **encoder**'s full-utterance forward per second of
  audio (``torch.utils.flop_counter``, FLOPs = 2 x multiply-accumulates; ``nn.LSTM`` layers,
  which the counter does not see on CPU, are counted analytically: 2 x 4H(I + H) per frame
  and layer); ``model_flops_per_audio_s``: the whole model's training forward (encoder,
  predictor, joiner over the T' x (U+1) lattice, CTC head) on the same utterances with
  their transcripts. Element-wise operations are not counted. Measured on the test
  utterances used for the RTF, one at a time;
* ``rtf_1thread``: real-time factor of the streaming recognizer (fbank, CMVN, encoder
  ``stream``, greedy search) fed ``--chunk-ms`` chunks, median of ``--rtf-runs`` runs over
  the first ``--rtf-seconds`` of test speech (the measurement of ``benchmarks/streaming.py``).
  An encoder that cannot stream (ConvRNN-T with utterance SE) is timed offline instead
  (whole utterance: fbank, CMVN, encoder forward, greedy search); ``rtf_mode`` says which;
* ``algorithmic_latency_ms``: ``(1 + right_context) x subsampling x 10 ms`` from the
  encoder's declared ``subsampling`` and ``right_context``: the audio an encoder frame waits
  for, from its first feature frame to its last lookahead frame (the Conformer's chunk plus
  lookahead; one encoder frame for frame-causal encoders); ``null`` for an encoder that
  cannot stream. ``streaming_latency_ms`` adds what the recognizer waits for: the chunk,
  the 15 ms analysis window beyond the frame shift, the lookahead;
* the test split decoded offline (streaming gives the same result) with greedy search, no
  LM (the headline, ``greedy_wer``), and with the recipe's search (``recipe_wer``: beam search
  fusing a token n-gram LM fitted on the training transcripts, as ``make demo`` does);
* 95 % speaker-bootstrap intervals (``--bootstrap`` replicates resampling test speakers, the
  same draws for every run) of each WER, and of the paired difference to the LSTM run of the
  same size, seed and steps on the same utterances (``paired_diff_vs_lstm``: this run's WER
  minus the LSTM's; ``null`` on LSTM rows). WERs and differences are fractions.

Each finished run is written to ``--out`` at once (atomically); per-utterance errors, the
checkpoints and the LM stay in ``--workdir/<encoder>-<size>-seed<seed>``. A killed benchmark
restarts where it stopped with ``--resume``: runs already in ``--out`` (same steps) are
skipped, and an interrupted training continues from its last checkpoint.

Examples::

    # the comparison at the demo size (hours; plan it over several sessions)
    .venv/bin/python benchmarks/encoders.py --corpus demo_out/corpus \\
        --encoders lstm,convrnnt,conformer,contextnet --seeds 0,1 --steps 2700 --resume
    # the ConvRNN-T ablations, appended to the same results file
    .venv/bin/python benchmarks/encoders.py --corpus demo_out/corpus --steps 2700 --resume \\
        --encoders lstm,convrnnt-no-global,convrnnt-no-local,convrnnt-utterance-se
    # redraw the plot and the table from the results file
    .venv/bin/python benchmarks/encoders.py --plot-only
    # costs only, no training (minutes): untrained seed-0 models of every recipe, in one
    # process, to benchmarks/results/encoders_cost.json (never mixed with trained runs)
    .venv/bin/python benchmarks/encoders.py --cost-only --corpus demo_out/corpus \\
        --encoders lstm,convrnnt,conformer,contextnet

``--cost-only`` trains nothing: for each recipe's model freshly initialized with the first
seed it measures ``params``, ``encoder_params``, ``flops_per_audio_s``, ``train_s_per_step``
(``--train-steps`` forward + backward + optimizer steps on training batches of the recipe's
per-process batch for ``--nproc`` processes, after a warm-up step, 1 thread),
``encoder_rtf_1thread`` (the encoder's own ``stream`` over ``--chunk-ms`` chunks of test
features), ``rtf_1thread_greedy_untrained`` (the recognizer's RTF as above, on untrained
weights: their token count, hence the search's cost, is not a trained model's) and
``algorithmic_latency_ms``, and writes them to ``benchmarks/results/encoders_cost.json``.

Writes ``benchmarks/results/encoders.json`` and ``benchmarks/results/encoders.png`` (greedy
WER with its interval against encoder FLOPs per audio second) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import SR, measure_stream  # noqa: E402  (the sibling benchmark script)

from fairstream._io import atomic_path, atomic_write_text  # noqa: E402
from fairstream._threads import torch_threads  # noqa: E402
from fairstream.metrics.bootstrap import (  # noqa: E402
    SpeakerBootstrap,
    percentile_interval,
    ratio_replicates,
)

RESULTS = Path(__file__).resolve().parent / "results" / "encoders.json"
RECIPES = Path(__file__).resolve().parents[1] / "src" / "fairstream" / "recipes"
REFERENCE = "lstm"
#: the encoder whose ablations (``convrnnt-...``) are also compared with it
ABLATED = "convrnnt"
SIZES = ("demo", "8m")
#: encoder name -> recipe file stem at the demo size (``<stem>_8m.yaml`` at 8 M)
ENCODERS = {
    "lstm": "lstm_transducer",
    "convrnnt": "convrnnt_transducer",
    "conformer": "conformer_transducer",
    "contextnet": "contextnet_transducer",
    "transformer": "transformer_transducer",
    "convrnnt-no-global": "convrnnt_no_global",
    "convrnnt-no-local": "convrnnt_no_local",
    "convrnnt-utterance-se": "convrnnt_utterance_se",
}
FRAME_SHIFT_MS = 10.0
WINDOW_BEYOND_SHIFT_MS = 15.0

# Any: a run record is plain JSON data of mixed types
Run = dict[str, Any]
log = logging.getLogger("benchmarks.encoders")


@dataclass(frozen=True)
class BenchSettings:
    """What to compare and how (the command-line options, see ``--help``).

    Attributes:
        overrides: ``key.path=value`` applied to every run's recipe after the protocol's own.
        encoder_overrides: per encoder name, overrides applied after ``overrides``.
    """

    corpus: Path
    encoders: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    out: Path = RESULTS
    size: str = "demo"
    workdir: Path = Path("runs/encoders")
    resume: bool = False
    overrides: tuple[str, ...] = ()
    encoder_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    chunk_ms: int = 160
    rtf_seconds: float = 30.0
    rtf_runs: int = 3
    bootstrap: int = 1000
    recipe_search: bool = True
    progress: bool = True


def recipe_path(encoder: str, size: str) -> Path:
    """The recipe of ``encoder`` at ``size``.

    Raises:
        ValueError: an unknown encoder or size, or a recipe that does not exist (named).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    stem = ENCODERS[encoder] + ("" if size == "demo" else f"_{size}")
    path = RECIPES / f"{stem}.yaml"
    if not path.is_file():
        raise ValueError(f"no {size} recipe for {encoder}: {path} does not exist")
    return path


def run_name(encoder: str, size: str, seed: int) -> str:
    """Directory name of a run inside the work directory."""
    return f"{encoder}-{size}-seed{seed}"


# ----------------------------------------------------------------------------- measures


def can_stream(encoder: object, feature_dim: int) -> bool:
    """Whether the encoder's ``stream`` accepts a chunk (ConvRNN-T with utterance SE refuses)."""
    from fairstream.errors import InputDataError

    frames = max(int(getattr(encoder, "chunk_frames_min", 1)),
                 int(getattr(encoder, "chunk_frames_multiple", 1)))
    x = torch.zeros(1, frames, feature_dim)
    try:
        with torch.no_grad():
            getattr(encoder, "stream")(x, torch.tensor([frames]), None)
    except InputDataError:
        return False
    return True


def algorithmic_latency_ms(encoder: object) -> float:
    """``(1 + right_context) * subsampling * 10 ms``: from the first feature frame of an
    encoder frame to the last frame it waits for (its lookahead included)."""
    right = int(getattr(encoder, "right_context"))
    sub = int(getattr(encoder, "subsampling"))
    return (1 + right) * sub * FRAME_SHIFT_MS


def _lstm_flops(lstm: nn.LSTM, frames: int) -> int:
    """Multiply-accumulate FLOPs (x 2) of ``frames`` time steps through every layer."""
    dirs = 2 if lstm.bidirectional else 1
    hid = lstm.hidden_size
    out = lstm.proj_size or hid
    total = 0
    for layer in range(lstm.num_layers):
        inp = lstm.input_size if layer == 0 else out * dirs
        per_step = 4 * hid * (inp + out) + (hid * out if lstm.proj_size else 0)
        total += 2 * frames * dirs * per_step
    return total


def count_flops(model: nn.Module, fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` (which runs ``model``): the flop counter's total plus the ``nn.LSTM``
    layers it does not see (a layer it does count is not counted twice)."""
    from torch.nn.utils.rnn import PackedSequence
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    extra = [0]
    seen: list[int] = []

    def before(module: nn.Module, inputs: tuple[Any, ...]) -> None:  # Any: hook inputs
        seen.append(counter.get_total_flops())

    def after(module: nn.Module, inputs: tuple[Any, ...], output: object) -> None:  # Any: ditto
        start = seen.pop()
        if counter.get_total_flops() > start:  # the counter saw the layer's matmuls
            return
        x = inputs[0]
        assert isinstance(module, nn.LSTM)
        if isinstance(x, PackedSequence):
            frames = int(x.data.shape[0])
        else:
            frames = int(x.shape[0] * x.shape[1]) if x.dim() == 3 else int(x.shape[0])
        extra[0] += _lstm_flops(module, frames)

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.LSTM):
            handles.append(mod.register_forward_pre_hook(before))
            handles.append(mod.register_forward_hook(after))
    try:
        with torch.no_grad(), counter:
            fn()
    finally:
        for h in handles:
            h.remove()
    return int(counter.get_total_flops()) + extra[0]


def _first_test_cuts(corpus: Any, seconds: float) -> list[Any]:  # Any: lhotse cuts
    """The test split's first cuts in id order adding up to about ``seconds`` (as
    ``benchmarks/streaming.py --corpus`` picks them)."""
    picked, total = [], 0.0
    for cut in sorted(corpus.cuts("test"), key=lambda c: c.id):
        picked.append(cut)
        total += float(cut.duration)
        if total >= seconds:
            break
    return picked


def flops_per_audio_s(loaded: Any, cuts: Sequence[Any]) -> tuple[float, float]:
    """(encoder forward, whole-model training forward) FLOPs per second of audio.

    Args:
        loaded: a :class:`fairstream.inference.LoadedModel`.
        cuts: utterances with transcripts, each passed alone (no padding).
    """
    from fairstream.data.text import normalize
    from fairstream.inference import cut_fbank

    model = loaded.model.eval()
    enc_flops = model_flops = 0
    seconds = 0.0
    for cut in cuts:
        feats = torch.from_numpy(loaded.cmvn.apply(cut_fbank(cut))).unsqueeze(0)
        lens = torch.tensor([feats.shape[1]])
        ids = loaded.tokenizer.encode(normalize(cut.supervisions[0].text or ""))
        tokens = torch.tensor([ids or [1]], dtype=torch.long)
        token_lens = torch.tensor([len(ids)])
        enc_flops += count_flops(model, lambda: model.encode(feats, lens))
        model_flops += count_flops(model, lambda: model(feats, lens, tokens, token_lens))
        seconds += feats.shape[1] * FRAME_SHIFT_MS / 1000
    return enc_flops / seconds, model_flops / seconds


# Any: a JSON record of numbers
def measure_offline(loaded: Any, segments: list[np.ndarray], runs: int) -> dict[str, Any]:
    """RTF of whole-utterance recognition (fbank, CMVN, encoder forward, greedy search),
    median of ``runs`` after a warm-up: for encoders that cannot stream."""
    from fairstream.decoding.greedy import greedy_search
    from fairstream.features.fbank import compute_fbank

    model = loaded.model.eval()
    duration = sum(s.size for s in segments) / SR

    def one_pass() -> tuple[float, float]:
        t0, p0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for audio in segments:
                feats = torch.from_numpy(loaded.cmvn.apply(compute_fbank(audio))).unsqueeze(0)
                enc, enc_lens = model.encode(feats, torch.tensor([feats.shape[1]]))
                hyp = greedy_search(model, enc, enc_lens)
                loaded.tokenizer.decode(list(hyp[0].tokens))
        return time.perf_counter() - t0, time.process_time() - p0

    one_pass()
    walls, cpus = zip(*(one_pass() for _ in range(runs)))
    return {"rtf": statistics.median(walls) / duration,
            "rtf_cpu": statistics.median(cpus) / duration}


# ----------------------------------------------------------------------------- intervals


def _speaker_sums(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """(K, S) per-speaker sums of ``columns`` (speakers in sorted order)."""
    return df.groupby("speaker_id", sort=True)[list(columns)].sum().to_numpy(np.float64).T


def wer_interval(df: pd.DataFrame, errors: str, n_boot: int, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, list[float]]:
    """WER Σerrors / Σwords of a per-utterance table and its speaker-bootstrap interval."""
    x = _speaker_sums(df, [errors, "n_ref_words"])
    boot = SpeakerBootstrap.draw(x.shape[1], n_boot, seed=seed)
    tot = boot.totals(x)
    lo, hi = percentile_interval(ratio_replicates(tot[0], tot[1]), confidence)
    return float(x[0].sum() / x[1].sum()), [float(lo), float(hi)]


def paired_difference(df: pd.DataFrame, ref: pd.DataFrame, errors: str, n_boot: int,
                      seed: int = 0, confidence: float = 0.95
                      ) -> tuple[float, list[float], int]:
    """WER of ``df`` minus WER of ``ref`` on the utterances both decoded, with the interval of
    the same speaker-bootstrap replicates applied to both (paired).

    Returns:
        (difference, [low, high], utterances compared).

    Raises:
        ValueError: the tables share no utterance, or disagree on a shared one's speaker or
            reference length.
    """
    both = df.merge(ref, on="utt_id", suffixes=("", "_ref"))
    if both.empty:
        raise ValueError("the run and its reference share no utterance")
    for col in ("speaker_id", "n_ref_words"):
        if not (both[col] == both[f"{col}_ref"]).all():
            raise ValueError(f"the run and its reference disagree on {col} of shared utterances")
    x = _speaker_sums(both, [errors, f"{errors}_ref", "n_ref_words"])
    boot = SpeakerBootstrap.draw(x.shape[1], n_boot, seed=seed)
    tot = boot.totals(x)
    reps = ratio_replicates(tot[0], tot[2]) - ratio_replicates(tot[1], tot[2])
    lo, hi = percentile_interval(reps, confidence)
    diff = float((x[0].sum() - x[1].sum()) / x[2].sum())
    return diff, [float(lo), float(hi)], len(both)


# ----------------------------------------------------------------------------- one run


def train_overrides(s: BenchSettings, encoder: str, seed: int) -> list[str]:
    """The protocol's overrides of a recipe, then the user's."""
    return [
        f"data.corpus={s.corpus}", f"seed={seed}", f"schedule.max_steps={s.steps}",
        "schedule.budget_minutes=null", "schedule.max_epochs=1000000",
        f"optim.decay_steps={s.steps}",
        *s.overrides, *s.encoder_overrides.get(encoder, ()),
    ]


def _utterance_errors(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per utterance: ids, reference words, the errors of search ``name`` (column ``name``),
    the normalized reference and that search's hypothesis (``<name>_hyp``)."""
    out = df[["utt_id", "speaker_id", "n_ref_words", "ref"]].copy()
    out[name] = df["sub"] + df["del"] + df["ins"]
    out[f"{name}_hyp"] = df["hyp"].fillna("")
    return out


def heldout_rates(df: pd.DataFrame, corpus_root: Path) -> Run:
    """Error rate on held-out slot words (names, places, songs kept out of training; see
    :mod:`fairstream.metrics.heldout`) of each search in a per-utterance table:
    ``greedy_heldout_slot_er``, ``recipe_heldout_slot_er`` (``null`` without that search's
    hypotheses or without ``heldout_slots.json`` in the corpus) and ``heldout_slot_words``."""
    from fairstream.data.layout import read_heldout_slots
    from fairstream.metrics.heldout import heldout_slot_score

    heldout = read_heldout_slots(corpus_root)
    out: Run = {"greedy_heldout_slot_er": None, "recipe_heldout_slot_er": None,
                "heldout_slot_words": 0}
    if not heldout:
        return out
    for name in ("greedy", "recipe"):
        col = f"{name}_hyp"
        if col in df and df[col].notna().all():
            score = heldout_slot_score(zip(df["ref"], df[col]), heldout, normalized=True)
            out["heldout_slot_words"] = score.slot_words
            out[f"{name}_heldout_slot_er"] = (None if math.isnan(score.error_rate)
                                              else score.error_rate)
    return out


def decode_test(loaded: Any, corpus: Any, train_split: str, s: BenchSettings,
                echo: Callable[[str], None], *, lm_path: Path | None = None
                ) -> pd.DataFrame:  # Any: LoadedModel, Corpus
    """Decode the test split greedily (no LM) and, with ``s.recipe_search``, with the
    recipe's search; its token LM is read from ``lm_path`` when given, else fitted on the
    ``train_split`` transcripts and saved beside the checkpoint.

    Returns:
        The per-utterance table (:func:`_utterance_errors` columns of both searches).
    """
    from fairstream.inference import SearchConfig, decode_cuts, lm_beside, recipe_search
    from fairstream.lm import NgramLM

    model = loaded.model.eval()
    echo("  decoding the test split: greedy")
    recipe_cfg = recipe_search(loaded.config, loaded.path)
    greedy = SearchConfig(method="greedy", max_symbols_per_frame=recipe_cfg.max_symbols_per_frame)
    test = corpus.cuts("test")
    with torch_threads(1):
        df = _utterance_errors(decode_cuts(model, loaded.tokenizer, loaded.cmvn, test,
                                           search=greedy, progress=s.progress), "greedy")
        if not s.recipe_search:
            return df
        lm = None
        if recipe_cfg.method == "beam" and recipe_cfg.lm_order > 0:
            if lm_path is not None:
                lm = NgramLM.load(lm_path)
            else:
                texts = [sup.text for c in corpus.cuts(train_split)
                         for sup in c.supervisions if sup.text]
                lm = NgramLM.fit_texts(texts, loaded.tokenizer, order=recipe_cfg.lm_order)
                lm.save(lm_beside(loaded.path))
        echo(f"  decoding the test split: the recipe's search ({recipe_cfg.method}"
             f"{f' {recipe_cfg.beam}' if recipe_cfg.method == 'beam' else ''}"
             f"{' + LM' if lm is not None else ''})")
        rdf = decode_cuts(model, loaded.tokenizer, loaded.cmvn, test, search=recipe_cfg, lm=lm,
                          progress=s.progress)
    cols = ["utt_id", "recipe", "recipe_hyp"]
    return df.merge(_utterance_errors(rdf, "recipe")[cols], on="utt_id", how="left")


def run_one(s: BenchSettings, encoder: str, seed: int, echo: Callable[[str], None]) -> Run:
    """Train one (encoder, seed), measure it and decode the test split; the run record
    (without the paired difference, see :func:`add_paired_differences`)."""
    from fairstream.data.corpus import load_corpus
    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.inference import (
        cut_audio,
        load_transducer,
        recipe_search,
    )
    from fairstream.training.config import load_config
    from fairstream.training.transducer import train

    recipe = recipe_path(encoder, s.size)
    overrides = train_overrides(s, encoder, seed)
    config = load_config(recipe, overrides)
    run_dir = s.workdir / run_name(encoder, s.size, seed)
    echo(f"  training {s.steps} steps -> {run_dir}")
    result = train(config, out_dir=run_dir, resume=s.resume, progress=s.progress)
    if result.stop_reason != "max_steps" or result.steps != s.steps:
        raise RuntimeError(f"{run_dir}: training stopped by {result.stop_reason} at step "
                           f"{result.steps}, not by the step budget {s.steps}")
    loaded = load_transducer(result.averaged_checkpoint)
    model = loaded.model.eval()
    corpus = load_corpus(s.corpus)
    record: Run = {"encoder": encoder, "size": s.size, "seed": seed}

    with torch_threads(1):
        echo("  measuring parameters, FLOPs, RTF")
        cuts = _first_test_cuts(corpus, s.rtf_seconds)
        segments = [cut_audio(c, SR) for c in cuts]
        enc_flops, model_flops = flops_per_audio_s(loaded, cuts)
        streams = can_stream(model.encoder, loaded.cmvn.dim)
        if streams:
            rec = StreamingRecognizer(model, loaded.tokenizer, loaded.cmvn, chunk_ms=s.chunk_ms)
            timing = measure_stream(rec, segments, s.rtf_runs)
            latency: float | None = algorithmic_latency_ms(model.encoder)
            lookahead = model.encoder.right_context * model.subsampling * FRAME_SHIFT_MS
            stream_latency: float | None = s.chunk_ms + WINDOW_BEYOND_SHIFT_MS + lookahead
        else:
            timing = measure_offline(loaded, segments, s.rtf_runs)
            latency = stream_latency = None

        recipe_cfg = recipe_search(loaded.config, loaded.path)
        df = decode_test(loaded, corpus, config.data.train_split, s, echo)
        recipe_wer: float | None = None
        recipe_ci: list[float] | None = None
        if "recipe" in df and df["recipe"].notna().all():
            recipe_wer, recipe_ci = wer_interval(df, "recipe", s.bootstrap)
    with atomic_path(run_dir / "test_utterances.csv") as tmp:
        df.to_csv(tmp, index=False)
    greedy_wer, greedy_ci = wer_interval(df, "greedy", s.bootstrap)
    n_params = sum(p.numel() for p in model.parameters())
    record.update({
        "params": n_params,
        "encoder_params": sum(p.numel() for n, p in model.named_parameters()
                              if n.startswith("encoder.")),
        "steps": result.steps,
        "train_s": result.elapsed_s,
        "train_s_per_step": result.elapsed_s / max(result.steps, 1),
        "flops_per_audio_s": enc_flops,
        "model_flops_per_audio_s": model_flops,
        "rtf_1thread": timing["rtf"],
        "rtf_cpu_1thread": timing["rtf_cpu"],
        "rtf_mode": "streaming" if streams else "offline",
        "chunk_ms": s.chunk_ms if streams else None,
        "rtf_audio_s": sum(x.size for x in segments) / SR,
        "algorithmic_latency_ms": latency,
        "streaming_latency_ms": stream_latency,
        "greedy_wer": greedy_wer,
        "greedy_wer_ci": greedy_ci,
        "recipe_wer": recipe_wer,
        "recipe_wer_ci": recipe_ci,
        "recipe_search": {k: getattr(recipe_cfg, k) for k in
                          ("method", "beam", "max_symbols_per_frame", "lm_order", "lm_weight",
                           "token_bonus")} if s.recipe_search else None,
        **heldout_rates(df, s.corpus),
        "paired_diff_vs_lstm": None,
        "paired_diff_vs_lstm_ci": None,
        "test_utterances": len(df),
        "test_speakers": int(df["speaker_id"].nunique()),
        "test_words": int(df["n_ref_words"].sum()),
        "bootstrap_replicates": s.bootstrap,
        "config": {"recipe": recipe.name, "overrides": overrides},
        "run_dir": str(run_dir),
    })
    return record


def _same_run(a: Run, b: Run) -> bool:
    return all(a.get(k) == b.get(k) for k in ("encoder", "size", "seed", "steps"))


def _reference_errors(runs: Sequence[Run], run: Run, reference: str, size: str | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Per-utterance errors of ``run`` and of the ``reference`` encoder's run with the same
    seed and steps, and the same size (or ``size``); ``None`` without such a run or when a
    table is missing (a removed work directory: the stored difference is kept, with a
    warning)."""
    want = {**run, "size": size or run["size"]}
    ref = next((r for r in runs if r["encoder"] == reference
                and _same_run({**r, "encoder": run["encoder"]}, want)), None)
    if ref is None:
        return None
    files = [Path(r["run_dir"]) / "test_utterances.csv" for r in (run, ref)]
    if not all(f.is_file() for f in files):
        log.warning("per-utterance errors missing (%s): paired difference of %s seed %s to "
                    "%s not recomputed", ", ".join(map(str, files)), run["encoder"],
                    run["seed"], reference)
        return None
    mine, theirs = (pd.read_csv(f, dtype={"speaker_id": str, "utt_id": str}) for f in files)
    return mine, theirs


def add_paired_differences(runs: list[Run], n_boot: int) -> None:
    """Fill ``paired_diff_vs_lstm`` (and ``recipe_paired_diff_vs_lstm``) of every run whose
    LSTM reference (same size, seed and steps) is in ``runs``, ``paired_diff_vs_convrnnt``
    of every ConvRNN-T ablation (``convrnnt-...``) whose full ConvRNN-T run is, and
    ``paired_diff_vs_demo`` of every run of another size (``8m``) whose same encoder, seed
    and steps at the demo size is, from the per-utterance errors in the runs' directories;
    LSTM rows keep ``null``."""
    for run in runs:
        pair: tuple[pd.DataFrame, pd.DataFrame] | None
        if run["encoder"] == REFERENCE:
            run["paired_diff_vs_lstm"] = run["paired_diff_vs_lstm_ci"] = None
            pair = None
        else:
            pair = _reference_errors(runs, run, REFERENCE)
        if pair is not None:
            mine, theirs = pair
            diff, ci, n = paired_difference(mine, theirs, "greedy", n_boot)
            run.update({"paired_diff_vs_lstm": diff, "paired_diff_vs_lstm_ci": ci,
                        "paired_utterances": n})
            if "recipe" in mine.columns and "recipe" in theirs.columns \
                    and mine["recipe"].notna().all() and theirs["recipe"].notna().all():
                rdiff, rci, _ = paired_difference(mine, theirs, "recipe", n_boot)
                run.update({"recipe_paired_diff_vs_lstm": rdiff,
                            "recipe_paired_diff_vs_lstm_ci": rci})
        pair = (_reference_errors(runs, run, ABLATED)
                if run["encoder"].startswith(f"{ABLATED}-") else None)
        if pair is not None:
            diff, ci, _ = paired_difference(*pair, "greedy", n_boot)
            run.update({"paired_diff_vs_convrnnt": diff, "paired_diff_vs_convrnnt_ci": ci})
        pair = (_reference_errors(runs, run, run["encoder"], "demo")
                if run["size"] != "demo" else None)
        if pair is not None:
            diff, ci, _ = paired_difference(*pair, "greedy", n_boot)
            run.update({"paired_diff_vs_demo": diff, "paired_diff_vs_demo_ci": ci})



def backfill_heldout(s: BenchSettings, echo: Callable[[str], None] = print) -> list[Run]:
    """Add the held-out slot error rates (:func:`heldout_rates`) to the runs of ``s.out``
    that predate them: each run's averaged checkpoint decodes the test split again, greedy
    and with the recipe's search and the LM stored beside it, and the new per-utterance
    errors must equal the stored ones (decoding is deterministic; a mismatch is an error
    naming the run). The hypotheses join ``test_utterances.csv``.

    Returns:
        The runs of the results file.
    """
    from fairstream.data.corpus import load_corpus
    from fairstream.inference import lm_beside, load_transducer

    corpus = load_corpus(s.corpus)
    runs = load_results(s.out)["runs"]
    todo = [r for r in runs if "greedy_heldout_slot_er" not in r]
    for i, run in enumerate(todo, 1):
        run_dir = Path(run["run_dir"])
        echo(f"[{i}/{len(todo)}] {run['encoder']} seed {run['seed']}: held-out slot words")
        loaded = load_transducer(run_dir / "averaged.pt")
        lm_path = lm_beside(loaded.path)
        df = decode_test(loaded, corpus, "train", s, echo,
                            lm_path=lm_path if lm_path.is_file() else None)
        stored = pd.read_csv(run_dir / "test_utterances.csv",
                             dtype={"speaker_id": str, "utt_id": str})
        cols = [c for c in ("greedy", "recipe") if c in stored and c in df]
        joined = stored.merge(df, on="utt_id", suffixes=("_stored", ""))
        if len(joined) != len(stored) or any(
                not joined[f"{c}_stored"].equals(joined[c]) for c in cols):
            raise RuntimeError(f"{run_dir}: decoding again does not give the stored "
                               f"per-utterance errors ({', '.join(cols)})")
        with atomic_path(run_dir / "test_utterances.csv") as tmp:
            df.to_csv(tmp, index=False)
        record = {**run, **heldout_rates(df, s.corpus)}
        runs = merge_run(s.out, record, s.bootstrap)
    return runs


# ----------------------------------------------------------------------------- costs only

COST_RESULTS = RESULTS.with_name("encoders_cost.json")


def _untrained(config: Any, corpus: Any, tok_dir: Path, seed: int) -> Any:  # Any: configs
    """A :class:`fairstream.inference.LoadedModel` of the recipe's model, initialized with
    ``seed`` as training initializes it (tokenizer trained on the training transcripts, the
    corpus's CMVN), never trained."""
    from dataclasses import replace

    from fairstream.features.fbank import Cmvn
    from fairstream.inference import LoadedModel
    from fairstream.models.factory import build_model
    from fairstream.tokenizer import Tokenizer
    from fairstream.training.config import config_to_dict

    texts = [sup.text for c in corpus.cuts(config.data.train_split) for sup in c.supervisions
             if sup.text]
    tokenizer = Tokenizer.train(texts, tok_dir, vocab_size=config.tokenizer.vocab_size,
                                model_type=config.tokenizer.kind)
    config = replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))
    mean, std = corpus.cmvn
    torch.manual_seed(seed)
    model = build_model(config.model).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, cmvn=Cmvn(mean=mean, std=std),
                       config=config_to_dict(config), path=tok_dir / "untrained.pt")


def encoder_stream_rtf(encoder: Any, feats: Sequence[torch.Tensor], chunk_frames: int,
                       runs: int) -> float:  # Any: a registered streaming encoder
    """Wall-clock RTF of the encoder's own ``stream`` over ``chunk_frames`` chunks of the
    (normalized) feature matrices ``feats``, each utterance its own stream, the last chunk
    ``final``; median of ``runs`` after a warm-up. Feature extraction is not timed."""
    seconds = sum(int(f.shape[0]) for f in feats) * FRAME_SHIFT_MS / 1000

    def one_pass() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for f in feats:
                state = None
                n = int(f.shape[0])
                for start in range(0, n, chunk_frames):
                    x = f[start:start + chunk_frames].unsqueeze(0)
                    last = start + chunk_frames >= n
                    _, _, state = encoder.stream(x, torch.tensor([x.shape[1]]), state,
                                                 final=last)
        return time.perf_counter() - t0

    one_pass()
    return statistics.median(one_pass() for _ in range(runs)) / seconds


def train_step_seconds(model: nn.Module, config: Any, batches: Sequence[Any]
                       ) -> list[float]:  # Any: TrainConfig and training batches
    """Wall time of one forward + backward + clip + AdamW step on each of ``batches`` (the
    recipe's optimizer settings); the first is the warm-up (returned too, not to be averaged).
    The model's weights change."""
    from fairstream.training.loop import _make_optimizer
    from fairstream.training.transducer import TransducerObjective

    objective = TransducerObjective()
    optimizer = _make_optimizer(model, config.optim)
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
    model.train()
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        loss = objective(model, batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                       clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    model.eval()
    return times


def cost_one(s: BenchSettings, encoder: str, seed: int, train_steps: int, nproc: int,
             echo: Callable[[str], None]) -> Run:
    """The training-independent costs of one encoder's recipe, untrained (``seed`` init)."""
    import tempfile

    from fairstream.data.corpus import load_corpus
    from fairstream.decoding.streaming import StreamingRecognizer
    from fairstream.inference import cut_audio, cut_fbank
    from fairstream.training.config import load_config
    from fairstream.training.data import make_dataloader, precompute_features
    from fairstream.training.transducer import rank_batch_duration

    recipe = recipe_path(encoder, s.size)
    overrides = [f"data.corpus={s.corpus}", f"seed={seed}", *s.overrides,
                 *s.encoder_overrides.get(encoder, ())]
    config = load_config(recipe, overrides)
    corpus = load_corpus(s.corpus)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        loaded = _untrained(config, corpus, Path(tmp), seed)
        model = loaded.model
        enc = model.encoder
        cuts = _first_test_cuts(corpus, s.rtf_seconds)
        segments = [cut_audio(c, SR) for c in cuts]
        echo("  FLOPs")
        enc_flops, model_flops = flops_per_audio_s(loaded, cuts)
        streams = can_stream(enc, loaded.cmvn.dim)
        enc_rtf: float | None = None
        if streams:
            echo(f"  encoder stream RTF ({s.chunk_ms} ms chunks)")
            chunk = round(s.chunk_ms / FRAME_SHIFT_MS)
            feats = [torch.from_numpy(loaded.cmvn.apply(cut_fbank(c))) for c in cuts]
            enc_rtf = encoder_stream_rtf(enc, feats, chunk, s.rtf_runs)
            echo("  recognizer RTF (greedy, untrained weights)")
            rec = StreamingRecognizer(model, loaded.tokenizer, loaded.cmvn, chunk_ms=s.chunk_ms)
            timing = measure_stream(rec, segments, s.rtf_runs)
        else:
            echo("  recognizer RTF offline (the encoder cannot stream)")
            timing = measure_offline(loaded, segments, s.rtf_runs)

        echo(f"  {train_steps} training steps after a warm-up step")
        train_cuts = corpus.cuts(config.data.train_split)
        if config.data.feature_cache:
            cache = Path(config.data.feature_cache)
            train_cuts = precompute_features(
                train_cuts, cache if cache.is_absolute() else corpus.root / cache)
        batch_s = rank_batch_duration(config, train_cuts, nproc)
        loader = make_dataloader(train_cuts, tokenizer=loaded.tokenizer, cmvn=loaded.cmvn,
                                 max_duration=batch_s, shuffle=True,
                                 spec_augment=config.spec_augment, seed=seed)
        batches = []
        for batch in loader:  # loaded before timing: the steps time compute only
            batches.append(batch)
            if len(batches) > train_steps:
                break
        if len(batches) <= train_steps:
            raise ValueError(f"{s.corpus}: {len(batches)} training batches of {batch_s:g} s, "
                             f"fewer than the {train_steps} + 1 asked for")
        step_times = train_step_seconds(model, config, batches)
    timed = step_times[1:]
    return {
        "encoder": encoder, "size": s.size, "seed": seed, "trained": False,
        "params": sum(p.numel() for p in model.parameters()),
        "encoder_params": sum(p.numel() for p in enc.parameters()),
        "flops_per_audio_s": enc_flops,
        "model_flops_per_audio_s": model_flops,
        "train_s_per_step": statistics.mean(timed),
        "train_s_per_step_all": timed,
        "train_steps_timed": len(timed),
        "train_batch_s": batch_s,
        "train_batch_audio_s": [float(b.feature_lens.sum()) * FRAME_SHIFT_MS / 1000
                                for b in batches[1:]],
        "encoder_rtf_1thread": enc_rtf,
        "rtf_1thread_greedy_untrained": timing["rtf"],
        "rtf_untrained_mode": "streaming" if streams else "offline",
        "rtf_untrained_tokens": timing.get("tokens"),
        "chunk_ms": s.chunk_ms,
        "rtf_audio_s": sum(x.size for x in segments) / SR,
        "algorithmic_latency_ms": algorithmic_latency_ms(enc) if streams else None,
        "config": {"recipe": recipe.name, "overrides": overrides},
    }


def run_costs(s: BenchSettings, train_steps: int = 3, nproc: int = 2,
              echo: Callable[[str], None] = print) -> list[Run]:
    """:func:`cost_one` for every encoder of ``s`` at its first seed, in one process; the runs
    replace those of ``s.out`` (a separate file from the trained comparison's)."""
    for enc in s.encoders:
        recipe_path(enc, s.size)
    seed = s.seeds[0]
    runs: list[Run] = []
    load_before = os.getloadavg()
    for i, enc in enumerate(s.encoders, 1):
        echo(f"[{i}/{len(s.encoders)}] {enc} ({s.size}, untrained, seed {seed})")
        runs.append(cost_one(s, enc, seed, train_steps, nproc, echo))
    data = {
        "benchmark": "encoders_cost", "corpus": str(s.corpus),
        "note": "costs of untrained models (seed init, no training); no WER. The recognizer "
                "RTF runs greedy search on untrained weights, which emit a different number "
                "of tokens than a trained model: its search part is not representative.",
        "protocol": {
            "flops": _protocol(s)["flops"],
            "train_s_per_step": f"mean wall time of {train_steps} forward + backward + clip + "
                                "AdamW steps on training batches (loaded beforehand, "
                                "SpecAugment on) of the recipe's per-process batch "
                                f"(data.max_duration / {nproc} processes), after one warm-up "
                                "step, 1 thread",
            "encoder_rtf_1thread": f"encoder stream over {s.chunk_ms} ms chunks of "
                                   "normalized fbank (features not timed), first "
                                   f"{s.rtf_seconds} s of test speech, 1 thread, median of "
                                   f"{s.rtf_runs} runs after a warm-up",
            "rtf_1thread_greedy_untrained": "the streaming recognizer (fbank, CMVN, encoder, "
                                            "greedy search) as for rtf_1thread, untrained",
            "algorithmic_latency": "(1 + right_context) * subsampling * 10 ms",
        },
        "runs": runs,
        "machine": {**_machine(), "load_average_before": list(load_before),
                    "load_average_after": list(os.getloadavg())},
    }
    save_results(s.out, data)
    return runs


def format_cost_table(runs: Sequence[Run]) -> str:
    """The cost runs as a Markdown table, with ratios to the LSTM of the same runs."""
    ref = next((r for r in runs if r["encoder"] == REFERENCE), None)

    def ratio(r: Run, key: str) -> str:
        if ref is None or r[key] is None or not ref[key]:
            return ""
        return f" ({r[key] / ref[key]:.2f}x)"

    def num(x: float | None, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    lines = ["| encoder | params (M) | encoder params (M) | encoder GFLOPs / audio s "
             "| train s / step | encoder RTF 1 thread | RTF greedy, untrained | latency (ms) |",
             "|" + "---|" * 8]
    for r in runs:
        lat = "offline" if r["algorithmic_latency_ms"] is None \
            else f"{r['algorithmic_latency_ms']:.0f}"
        mode = " (offline)" if r["rtf_untrained_mode"] == "offline" else ""
        lines.append(
            f"| {r['encoder']} | {r['params'] / 1e6:.2f} | {r['encoder_params'] / 1e6:.2f} "
            f"| {r['flops_per_audio_s'] / 1e9:.3f}{ratio(r, 'flops_per_audio_s')} "
            f"| {r['train_s_per_step']:.2f}{ratio(r, 'train_s_per_step')} "
            f"| {num(r['encoder_rtf_1thread'], '.4f')}{ratio(r, 'encoder_rtf_1thread')} "
            f"| {r['rtf_1thread_greedy_untrained']:.4f}{mode} | {lat} |")
    return "\n".join(lines)

# ----------------------------------------------------------------------------- the file


# Any: the results file is plain JSON data
def load_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty one."""
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("runs", [])
        return dict(data)
    return {"benchmark": "encoders", "runs": []}


# Any: the results file is plain JSON data
def save_results(path: Path, data: dict[str, Any]) -> None:
    """Write the results file atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (``<path>.lock``): benchmarks running side by
    side into one results file each add their runs without dropping the others'."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_run(path: Path, record: Run | None, n_boot: int,
              header: Mapping[str, object] | None = None) -> list[Run]:
    """Add ``record`` to the results file ``path`` (replacing a run with the same encoder,
    size, seed and steps), re-reading the file under a lock so that runs written meanwhile by
    another process are kept; refresh the paired differences and write it atomically. With
    ``record=None`` only the paired differences are recomputed (``--recompute-pairs``, e.g.
    for runs written by an older version of this script).

    Returns:
        The file's runs after the merge.
    """
    with _locked(path):
        data = load_results(path)
        data.update({"benchmark": "encoders", **(header or {})})
        runs = data["runs"]
        if record is not None:
            runs = [r for r in runs if not _same_run(r, record)] + [record]
            data["machine"] = _machine()
        add_paired_differences(runs, n_boot)
        data["runs"] = runs
        save_results(path, data)
    return runs


def _protocol(s: BenchSettings) -> dict[str, object]:
    return {
        "stopping_rule": "schedule.max_steps (budget_minutes null, max_epochs out of reach)",
        "lr_schedule": "each recipe's, optim.decay_steps = steps",
        "data_order": "seed (the same for every encoder at a seed); model init seeded by seed",
        "flops": "torch.utils.flop_counter (2 x MACs) + nn.LSTM analytically; encoder forward "
                 "per audio second; model_flops_per_audio_s: whole model's training forward",
        "rtf": f"1 thread, streaming recognizer, greedy, {s.chunk_ms} ms chunks, first "
               f"{s.rtf_seconds} s of test speech, median of {s.rtf_runs} runs "
               "(offline for encoders that cannot stream: rtf_mode)",
        "algorithmic_latency": "(1 + right_context) * subsampling * 10 ms",
        "intervals": f"95 % speaker bootstrap, {s.bootstrap} replicates, seed 0, paired "
                     "for differences",
        "greedy": "no LM (headline); recipe: the recipe's decode section with a token LM "
                  "fitted on the training transcripts",
    }


def _machine() -> dict[str, object]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0]}


def run_benchmark(s: BenchSettings, echo: Callable[[str], None] = print) -> list[Run]:
    """Every (encoder, seed) of ``s`` in turn, each saved to ``s.out`` as it finishes.

    Returns:
        The runs of the results file (those of earlier invocations included).
    """
    for enc in s.encoders:
        recipe_path(enc, s.size)  # fail before any training on a bad name
    runs: list[Run] = load_results(s.out)["runs"]
    # the LSTM reference first: every other run can then get its paired difference at once
    order = sorted(s.encoders, key=lambda e: e != REFERENCE)
    todo = [(e, seed) for seed in s.seeds for e in order]
    for i, (enc, seed) in enumerate(todo, 1):
        key: Run = {"encoder": enc, "size": s.size, "seed": seed, "steps": s.steps}
        done = [r for r in runs if _same_run(r, key)]
        if done and s.resume:
            echo(f"[{i}/{len(todo)}] {enc} seed {seed}: in {s.out}, skipped (--resume)")
            continue
        echo(f"[{i}/{len(todo)}] {enc} seed {seed} ({s.size}, {s.steps} steps)")
        t0 = time.perf_counter()
        record = run_one(s, enc, seed, echo)
        runs = merge_run(s.out, record, s.bootstrap,
                         {"corpus": str(s.corpus), "protocol": _protocol(s)})
        echo(f"  done in {time.perf_counter() - t0:.0f} s: greedy WER "
             f"{100 * record['greedy_wer']:.2f} %, saved to {s.out}")
    return runs


# ----------------------------------------------------------------------------- report


def _fmt(x: float | None, scale: float = 100.0, digits: int = 2) -> str:
    return "—" if x is None else f"{scale * x:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def format_table(runs: Sequence[Run]) -> str:
    """The runs as a Markdown table (WERs and differences in %)."""
    head = ("| encoder | size | seed | params (M) | encoder GFLOPs / audio s | train s / step "
            "| RTF 1 thread | latency (ms) | greedy WER % [95 % CI] | recipe WER % "
            "| greedy − LSTM, points [95 % CI] |")
    lines = [head, "|" + "---|" * 11]
    for r in sorted(runs, key=lambda r: (r["size"], r["encoder"] != REFERENCE, r["encoder"],
                                         r["seed"])):
        rtf = f"{r['rtf_1thread']:.4f}" + (" (offline)" if r.get("rtf_mode") == "offline"
                                            else "")
        lat = "offline" if r["algorithmic_latency_ms"] is None \
            else f"{r['algorithmic_latency_ms']:.0f}"
        lines.append(
            f"| {r['encoder']} | {r['size']} | {r['seed']} | {r['params'] / 1e6:.2f} "
            f"| {r['flops_per_audio_s'] / 1e9:.3f} "
            f"| {r['train_s'] / max(r['steps'], 1):.3f} | {rtf} | {lat} "
            f"| {_fmt(r['greedy_wer'])}{_fmt_ci(r['greedy_wer_ci'])} "
            f"| {_fmt(r['recipe_wer'])} "
            f"| {_fmt(r['paired_diff_vs_lstm'])}{_fmt_ci(r['paired_diff_vs_lstm_ci'])} |"
        )
    return "\n".join(lines)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present and len(present) == len(values) else None


def format_summary(runs: Sequence[Run]) -> str:
    """One row per (size, encoder): its seeds, the mean over seeds of the greedy and recipe
    WERs and of the held-out slot error rates, and each seed's paired difference to the
    LSTM with its interval (all in %)."""
    head = ("| encoder | size | seeds | greedy WER % (mean) | recipe WER % (mean) "
            "| held-out slot words missed, greedy / recipe % (mean) "
            "| greedy − LSTM per seed, points [95 % CI] "
            "| ablation − ConvRNN-T per seed, points [95 % CI] |")
    lines = [head, "|" + "---|" * 8]
    keys = sorted({(r["size"], r["encoder"]) for r in runs},
                  key=lambda k: (k[0], k[1] != REFERENCE, k[1]))
    for size, enc in keys:
        mine = sorted((r for r in runs if r["size"] == size and r["encoder"] == enc),
                      key=lambda r: r["seed"])
        diffs = "; ".join(
            f"seed {r['seed']}: {_fmt(r['paired_diff_vs_lstm'])}"
            f"{_fmt_ci(r['paired_diff_vs_lstm_ci'])}"
            for r in mine if r.get("paired_diff_vs_lstm") is not None) or "—"
        vs_full = "; ".join(
            f"seed {r['seed']}: {_fmt(r['paired_diff_vs_convrnnt'])}"
            f"{_fmt_ci(r['paired_diff_vs_convrnnt_ci'])}"
            for r in mine if r.get("paired_diff_vs_convrnnt") is not None) or "—"
        heldout = (f"{_fmt(_mean([r.get('greedy_heldout_slot_er') for r in mine]))} / "
                   f"{_fmt(_mean([r.get('recipe_heldout_slot_er') for r in mine]))}")
        lines.append(
            f"| {enc} | {size} | {', '.join(str(r['seed']) for r in mine)} "
            f"| {_fmt(_mean([r['greedy_wer'] for r in mine]))} "
            f"| {_fmt(_mean([r['recipe_wer'] for r in mine]))} | {heldout} | {diffs} "
            f"| {vs_full} |")
    return "\n".join(lines)


def _label(run: Run) -> str:
    """The encoder's name, with its size unless it is the demo size (``lstm 8m``)."""
    return run["encoder"] + ("" if run.get("size", "demo") == "demo" else f" {run['size']}")


def plot(runs: Sequence[Run], path: Path) -> Path:
    """Greedy WER (95 % interval bars) against encoder FLOPs per audio second, one marker
    and colour per encoder, each seed its own point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^vP*Xh<>"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({_label(r) for r in runs}, key=lambda e: (not e.startswith(REFERENCE), e))
    for i, name in enumerate(names):
        mine = [r for r in runs if _label(r) == name]
        x = np.array([r["flops_per_audio_s"] / 1e9 for r in mine])
        y = np.array([100 * r["greedy_wer"] for r in mine])
        lo = np.array([100 * r["greedy_wer_ci"][0] for r in mine])
        hi = np.array([100 * r["greedy_wer_ci"][1] for r in mine])
        ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), fmt=markers[i % len(markers)],
                    capsize=3, label=f"{name} ({len(mine)} run{'s' * (len(mine) > 1)})")
    ax.set_xlabel("encoder GFLOPs per second of audio")
    ax.set_ylabel("greedy WER, % (95 % speaker-bootstrap interval)")
    ax.set_title("Encoders at equal steps: test WER without LM vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def dev_curve(run: Run) -> list[tuple[int, float]]:
    """``(step, dev greedy WER)`` of a run's validations, read from its training log
    (``<run_dir>/metrics.jsonl``: greedy search without LM on the recipe's
    ``schedule.valid_wer_utterances`` dev utterances at every epoch end); empty when the log
    is not on this machine."""
    log_path = Path(run.get("run_dir", "")) / "metrics.jsonl"
    if not run.get("run_dir") or not log_path.is_file():
        return []
    points = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line) if line.strip() else {}
        if event.get("event") == "validation" and event.get("valid_wer") is not None:
            points.append((int(event["step"]), float(event["valid_wer"])))
    return points


def plot_curves(runs: Sequence[Run], path: Path) -> Path | None:
    """Dev greedy WER against optimizer steps, one line per run (colour per encoder, line
    style per seed), from the runs' training logs; ``None`` when no log is available."""
    curves = [(r, dev_curve(r)) for r in runs]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({_label(r) for r, _ in curves},
                   key=lambda e: (not e.startswith(REFERENCE), e))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, c in sorted(curves, key=lambda rc: (names.index(_label(rc[0])), rc[0]["seed"])):
        steps, wer = zip(*c, strict=True)
        ax.plot(steps, [100 * w for w in wer], styles[r["seed"] % len(styles)], marker=".",
                color=colours[_label(r)], label=f"{_label(r)} seed {r['seed']}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("dev greedy WER, % (validation subset, no LM)")
    ax.set_ylim(0, 100)
    ax.set_title("Dev WER during training (equal steps, same data order per seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:  # Any: int or str items
    def parse(text: str) -> list[Any]:  # Any: ditto
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    return parse


def _per_encoder(parser: argparse.ArgumentParser, items: Sequence[str]
                 ) -> dict[str, tuple[str, ...]]:
    """``--set-for ENC:KEY=VALUE`` items by encoder."""
    per: dict[str, tuple[str, ...]] = {}
    for item in items:
        enc, sep, kv = item.partition(":")
        if not sep or enc not in ENCODERS or "=" not in kv:
            parser.error(f"--set-for {item!r}: expected ENCODER:KEY=VALUE with ENCODER "
                         f"one of {', '.join(ENCODERS)}")
        per[enc] = (*per.get(enc, ()), kv)
    return per


def main(argv: Sequence[str] | None = None) -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] + "\n\n" + doc.split("\n\n", 1)[1].split("Examples")[0],
        epilog="Examples" + doc.split("Examples", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, help="corpus directory (make demo: "
                        "demo_out/corpus); its train, dev and test splits are used")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results file; runs of earlier invocations in it are kept "
                        "(default: %(default)s)")
    parser.add_argument("--encoders", type=_csv(str), default=["lstm", "convrnnt", "conformer",
                                                               "contextnet"],
                        help=f"comma-separated, from: {', '.join(ENCODERS)}; the paired "
                        f"differences need {REFERENCE} (default: the four encoders)")
    parser.add_argument("--seeds", type=_csv(int), default=[0, 1],
                        help="comma-separated seeds (data order and init; default: 0,1)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (required)")
    parser.add_argument("--size", choices=SIZES, default="demo",
                        help="demo: recipes/<name>_transducer.yaml (~2 M parameters); 8m: "
                        "recipes/<recipe>_8m.yaml (~8 M; lstm_transducer_8m, "
                        "convrnnt_transducer_8m, contextnet_transducer_8m)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/encoders"),
                        help="checkpoints, LMs and per-utterance errors (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="skip runs already in --out; continue interrupted trainings")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a recipe key in every run")
    parser.add_argument("--set-for", action="append", default=[], metavar="ENC:KEY=VALUE",
                        help="override a recipe key of one encoder's runs")
    parser.add_argument("--chunk-ms", type=int, default=160, help="streaming chunk for the RTF")
    parser.add_argument("--rtf-seconds", type=float, default=30.0,
                        help="test speech timed for the RTF and counted for FLOPs")
    parser.add_argument("--rtf-runs", type=int, default=3, help="timed runs (after a warm-up)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--no-recipe-search", action="store_true",
                        help="decode greedily only (recipe_wer null)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot and print the table from --out, run nothing")
    parser.add_argument("--backfill-heldout", action="store_true",
                        help="decode the test split again for runs of --out without the "
                        "held-out slot error rates and add them (needs --corpus)")
    parser.add_argument("--recompute-pairs", action="store_true",
                        help="recompute the paired differences of --out from the runs' "
                        "per-utterance errors, then print the tables")
    parser.add_argument("--cost-only", action="store_true",
                        help="no training: the costs of each recipe's untrained model (first "
                        f"seed's init) into --out (default then: {COST_RESULTS})")
    parser.add_argument("--train-steps", type=int, default=3,
                        help="--cost-only: timed training steps after a warm-up step")
    parser.add_argument("--nproc", type=int, default=2,
                        help="--cost-only: processes the recipe's global batch is split over "
                        "(the demo's: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.cost_only:
        if args.corpus is None:
            parser.error("--cost-only needs --corpus")
        if args.train_steps < 1 or args.nproc < 1:
            parser.error("--train-steps and --nproc must be >= 1")
        unknown = [e for e in args.encoders if e not in ENCODERS]
        if unknown:
            parser.error(f"unknown encoder {', '.join(unknown)}; known: {', '.join(ENCODERS)}")
        out = COST_RESULTS if args.out == RESULTS else args.out
        cost = BenchSettings(
            corpus=args.corpus, encoders=tuple(args.encoders), seeds=tuple(args.seeds[:1]),
            steps=0, out=out, size=args.size, overrides=tuple(args.overrides),
            encoder_overrides=_per_encoder(parser, args.set_for), chunk_ms=args.chunk_ms,
            rtf_seconds=args.rtf_seconds, rtf_runs=args.rtf_runs, progress=False,
        )
        runs = run_costs(cost, args.train_steps, args.nproc)
        print(format_cost_table(runs))
        print(f"wrote {out}")
        return
    if args.backfill_heldout:
        if args.corpus is None:
            parser.error("--backfill-heldout needs --corpus")
        backfill_heldout(BenchSettings(
            corpus=args.corpus, encoders=(), seeds=(), steps=0, out=args.out,
            bootstrap=args.bootstrap, recipe_search=not args.no_recipe_search,
            progress=not args.no_progress))
        runs = load_results(args.out)["runs"]
    elif args.recompute_pairs:
        runs = merge_run(args.out, None, args.bootstrap)
    elif not args.plot_only:
        if args.corpus is None or args.steps is None:
            parser.error("--corpus and --steps are required (or --plot-only)")
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        unknown = [e for e in args.encoders if e not in ENCODERS]
        if unknown:
            parser.error(f"unknown encoder {', '.join(unknown)}; known: {', '.join(ENCODERS)}")
        per = _per_encoder(parser, args.set_for)
        settings = BenchSettings(
            corpus=args.corpus, encoders=tuple(args.encoders), seeds=tuple(args.seeds),
            steps=args.steps, out=args.out, size=args.size, workdir=args.workdir,
            resume=args.resume, overrides=tuple(args.overrides), encoder_overrides=per,
            chunk_ms=args.chunk_ms, rtf_seconds=args.rtf_seconds, rtf_runs=args.rtf_runs,
            bootstrap=args.bootstrap, recipe_search=not args.no_recipe_search,
            progress=not args.no_progress,
        )
        runs = run_benchmark(settings)
    else:
        runs = load_results(args.out)["runs"]
    if not runs:
        print(f"no runs in {args.out}")
        return
    png = plot(runs, args.out.with_suffix(".png"))
    curves = plot_curves(runs, args.out.with_name(args.out.stem + "_curves.png"))
    print(format_table(runs))
    print()
    print(format_summary(runs))
    print(f"wrote {args.out} and {png}" + (f" and {curves}" if curves else
                                            " (no training logs here: no dev-WER curves)"))


if __name__ == "__main__":
    main()
