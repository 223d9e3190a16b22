"""The compute-amortized Transformer's trade-off curve: compute and wall-clock against WER.

Every compared model starts from the same dense streaming Transformer transducer
(``transformer_transducer.yaml``, trained ``--base-steps`` steps by the encoder comparison's
protocol: ``benchmarks/encoders.py --encoders transformer``) and trains ``--steps`` more
optimizer steps with the same data order (the seed), learning rate and schedule:

* ``ungated``: the dense model, trained on (the reference every share is a ratio to);
* ``target_rate`` points: arbitrators added (``gated: true``), the target-rate compute loss
  ``λ · (share − target)²`` with ``λ = --weight``, one point per ``--targets`` value;
* ``sliding_window_W`` baseline: the dense model with attention narrowed to a window of ``W``
  frames (the current one and ``W − 1`` before it; the position biases of the nearest ``W``
  offsets are kept);
* ``dense_small`` baseline: a narrower dense Transformer (``--small-d-model``,
  ``--small-ffn``) whose block FLOPs are close to the gated models', trained from scratch for
  ``--base-steps + --steps`` steps (the same total) by the encoder comparison's protocol.

Each model is then measured on the test split, in the same process as its seed's ungated
reference:

* ``greedy_wer`` (no LM) with a speaker-bootstrap 95 % interval, ``rel_wer_increase`` against
  the ungated model of the same seed, with a paired speaker-bootstrap interval;
* ``compute_share``: encoder-block FLOPs executed on the test split, counting the arbitrators
  and the keys/values and attention scores every frame still computes (the scores as the
  offline banded kernel does them, 2W − 1 keys a query), over the ungated model's (the front end —
  subsampling convs and input projection — is excluded and reported as ``frontend_flops_share``
  of the ungated encoder);
* ``wallclock_share_batch``: whole-encoder wall-clock (front end included) of an offline
  batch, over the ungated encoder's, one thread, median of ``--runs`` interleaved runs;
  ``wallclock_share_stream``: the same for streaming one utterance at batch 1 in 160 ms chunks;
* gate statistics per layer and sub-block, the on-rate against the CTC head's blank posterior,
  and the compute share and WER cost per accent and per noise condition with intervals.

Writes ``benchmarks/results/amortized.json`` (``points``, ``baselines``, ``reference``,
``gates``, ``groups``) and ``amortized.png``, and prints a table. Runs resume: a finished
training is reused, a killed one continues from its last checkpoint.

    .venv/bin/python benchmarks/amortized.py --corpus demo_out/corpus \\
        --base runs/encoders/transformer-demo-seed0/averaged.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoders import paired_difference, wer_interval  # noqa: E402  (sibling benchmark)

from fairstream._io import atomic_path, atomic_write_text  # noqa: E402
from fairstream._threads import torch_threads  # noqa: E402
from fairstream.metrics.bootstrap import (  # noqa: E402
    SpeakerBootstrap,
    percentile_interval,
    ratio_replicates,
)

RESULTS = ROOT / "benchmarks" / "results" / "amortized.json"
RECIPE = ROOT / "src" / "fairstream" / "recipes" / "transformer_transducer.yaml"
log = logging.getLogger("benchmarks.amortized")
# Any: records are plain JSON data of mixed types
Record = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """The command-line options (see ``--help``)."""

    corpus: Path
    base: Path
    base_steps: int = 1400
    steps: int = 300
    seeds: tuple[int, ...] = (0, 1)
    targets: tuple[float, ...] = (0.6, 0.45, 0.35, 0.27, 0.2)
    weight: float = 100.0
    lr: float = 3e-4
    warmup: int = 30
    windows: tuple[int, ...] = (5,)
    window_seeds: tuple[int, ...] = (0,)
    small_d_model: int = 96
    small_ffn: int = 384
    small_seeds: tuple[int, ...] = (0,)
    workdir: Path = Path("runs/amortized")
    out: Path = RESULTS
    runs: int = 5
    batch: int = 16
    stream_utterances: int = 4
    bootstrap: int = 1000
    max_utterances: int | None = None
    timing: bool = True
    progress: bool = True


@dataclass(frozen=True)
class Spec:
    """One model to train: ``kind`` is ``ungated``, ``target``, ``sliding_window`` or
    ``dense_small``; ``value`` the target rate or the window."""

    kind: str
    seed: int
    value: float | None = None

    @property
    def name(self) -> str:
        if self.kind == "target":
            return f"target_{self.value:g}"
        if self.kind == "sliding_window":
            return f"sliding_window_{int(self.value or 0)}"
        return self.kind

    @property
    def run_dir_name(self) -> str:
        return f"{self.name}-seed{self.seed}"


def specs(s: Settings) -> list[Spec]:
    """Every model of the benchmark, the ungated references first, then in seed order so an
    interrupted run has finished whole seeds."""
    out = [Spec("ungated", seed) for seed in s.seeds]
    for seed in s.seeds:
        out += [Spec("target", seed, t) for t in s.targets]
    out += [Spec("sliding_window", seed, w) for w in s.windows for seed in s.window_seeds]
    out += [Spec("dense_small", seed) for seed in s.small_seeds]
    return out


# ----------------------------------------------------------------------------- training

def narrowed_init(s: Settings, window: int) -> Path:
    """The base checkpoint with its attention narrowed to ``window`` frames: each layer's
    position biases of the ``window`` nearest offsets (the last columns), written once into
    the work directory."""
    from fairstream.checkpoint import load_checkpoint, save_checkpoint
    from fairstream.inference.sharding import file_digest

    path = s.workdir / f"base-window{window}.pt"
    digest = file_digest(s.base)
    if path.is_file() and load_checkpoint(path).extra.get("narrowed_from") == digest:
        return path
    ck = load_checkpoint(s.base)
    state = dict(ck.model)
    found = 0
    for key, value in list(state.items()):
        if key.endswith(".pos_bias"):
            if value.shape[1] < window:
                raise ValueError(f"{s.base}: window {window} is wider than the base's "
                                 f"{value.shape[1]} ({key})")
            state[key] = value[:, -window:].clone()
            found += 1
    if not found:
        raise ValueError(f"{s.base} has no attention position biases: not a transformer "
                         "encoder checkpoint")
    config = json.loads(json.dumps(ck.config))
    config["model"]["encoder"]["kwargs"]["left_context"] = window - 1
    s.workdir.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, config=config, model=state, progress=ck.progress,
                           extra={**ck.extra, "narrowed_from": digest}, kind=ck.kind)


def overrides(s: Settings, spec: Spec) -> list[str]:
    """The recipe overrides of one model (see the module docstring)."""
    enc = "model.encoder.kwargs."
    common = [f"data.corpus={s.corpus}", f"seed={spec.seed}", "schedule.budget_minutes=null",
              "schedule.max_epochs=1000000"]
    if spec.kind == "dense_small":
        total = s.base_steps + s.steps
        return [*common, f"schedule.max_steps={total}", f"optim.decay_steps={total}",
                f"{enc}d_model={s.small_d_model}", f"{enc}ffn_dim={s.small_ffn}"]
    tune = [*common, f"schedule.max_steps={s.steps}", f"optim.decay_steps={s.steps}",
            f"optim.lr={s.lr}", f"optim.warmup_steps={s.warmup}"]
    if spec.kind == "ungated":
        return [*tune, f"init={s.base}"]
    if spec.kind == "sliding_window":
        window = int(spec.value or 0)
        return [*tune, f"init={narrowed_init(s, window)}", f"{enc}left_context={window - 1}"]
    return [*tune, f"init={s.base}", f"{enc}gated=true", f"{enc}target_share={spec.value}",
            f"{enc}compute_weight={s.weight}"]


def train_spec(s: Settings, spec: Spec) -> Path:
    """Train (or reuse, or resume) one model; its averaged checkpoint."""
    from fairstream.checkpoint import config_differences, load_checkpoint
    from fairstream.training.config import config_to_dict, load_config
    from fairstream.training.transducer import train

    run_dir = s.workdir / spec.run_dir_name
    done = run_dir / "averaged.pt"
    expected = s.base_steps + s.steps if spec.kind == "dense_small" else s.steps
    config = load_config(RECIPE, overrides(s, spec))
    if done.is_file() and _finished_steps(run_dir) == expected:
        stored = load_checkpoint(done).config
        wanted = config_to_dict(config)
        differ = [(k, a, b) for k, a, b in config_differences(stored, wanted)
                  if not k.startswith(("model.vocab_size", "tokenizer"))
                  and not k.endswith("arbitrator_gain")]
        if differ:
            shown = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in differ[:3])
            raise ValueError(f"{run_dir} holds a run with other settings ({shown}); use "
                             "another --workdir")
        return done
    log.info("training %s (%d steps) -> %s", spec.run_dir_name, expected, run_dir)
    result = train(config, out_dir=run_dir, resume=True, progress=s.progress)
    if result.stop_reason != "max_steps" or result.steps != expected:
        raise RuntimeError(f"{run_dir}: training stopped by {result.stop_reason} at step "
                           f"{result.steps}, not by the step budget {expected}")
    return result.averaged_checkpoint


def _finished_steps(run_dir: Path) -> int | None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    for line in reversed(metrics.read_text().splitlines()):
        row = json.loads(line)
        if row.get("event") == "stop":
            return int(row["step"]) if row.get("reason") == "max_steps" else None
    return None


# ----------------------------------------------------------------------------- measures

FRAME_S = 0.01
STREAM_CHUNK_FRAMES = 16  # 160 ms of 10 ms feature frames


@dataclass
class TestSet:
    """The test split's cuts (id order), their raw fbank and per-utterance metadata."""

    cuts: list[Any]  # Any: lhotse cuts
    fbank: list[np.ndarray]
    meta: pd.DataFrame  # utt_id, speaker_id, accent, noise_type, telephone, snr_db


def load_test(corpus_dir: Path, limit: int | None = None, cache: Path | None = None
              ) -> TestSet:
    """The test split (its first ``limit`` cuts in id order) with its raw fbank (cached in
    ``cache``)."""
    from fairstream.data.corpus import load_corpus

    corpus = load_corpus(corpus_dir)
    cuts = sorted(corpus.cuts("test"), key=lambda c: c.id)[:limit]
    rows = []
    for c in cuts:
        sup = c.supervisions[0]
        custom = sup.custom or {}
        rows.append({"utt_id": c.id, "speaker_id": sup.speaker,
                     "accent": custom.get("accent"), "noise_type": custom.get("noise_type"),
                     "telephone": bool(custom.get("telephone")),
                     "snr_db": custom.get("snr_db")})
    return TestSet(cuts, _fbank(cuts, cache), pd.DataFrame(rows))


def _fbank(cuts: Sequence[Any], cache: Path | None) -> list[np.ndarray]:  # Any: lhotse cuts
    """The raw fbank of ``cuts``, read from ``cache`` (an ``.npz`` keyed by cut id) when it
    holds them all, else computed and written there."""
    from fairstream.inference import cut_fbank

    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if all(c.id in stored for c in cuts):
                return [stored[c.id] for c in cuts]
    log.info("computing the fbank of %d test utterances", len(cuts))
    feats = [cut_fbank(c) for c in cuts]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{c.id: f for c, f in zip(cuts, feats, strict=True)})
    return feats


def block_flops(encoder: Any) -> dict[str, float]:  # Any: a TransformerEncoder
    """Per-frame, per-layer FLOPs of the block parts (``TransformerEncoder.frame_flops``)
    and the number of layers."""
    return {**{k: float(v) for k, v in encoder.frame_flops().items()},
            "layers": float(len(encoder.blocks))}


def frontend_flops_per_frame(encoder: Any, fbank: np.ndarray) -> float:
    """FLOPs of the front end (subsampling convs and input projection) per encoder frame,
    counted by ``torch.utils.flop_counter`` on one utterance."""
    from torch.utils.flop_counter import FlopCounterMode

    from fairstream.models.encoders.common import subsampling_full

    x = torch.from_numpy(fbank).unsqueeze(0)
    lens = torch.tensor([x.shape[1]])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        h, out_lens = subsampling_full(encoder.convs, x, lens)
        encoder._project(h)
    return counter.get_total_flops() / max(int(out_lens[0]), 1)


def _batches(n_items: int, lengths: Sequence[int], frames: int) -> list[list[int]]:
    order = sorted(range(n_items), key=lambda i: lengths[i])
    out: list[list[int]] = [[]]
    total = 0
    for i in order:
        if out[-1] and total + lengths[i] > frames:
            out.append([])
            total = 0
        out[-1].append(i)
        total += lengths[i]
    return out


def _pad(feats: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        x[i, :f.shape[0]] = torch.from_numpy(f)
    return x, lens


def decode_and_profile(loaded: Any, test: TestSet) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Greedy search (no LM, up to 3 tokens a frame) over the test split, with the hard gate
    decisions of every frame taken from the same encoder pass (eval mode, as inference runs
    them).

    Returns:
        The per-utterance table (utt_id, speaker_id, n_ref_words, greedy errors, ref, hyp) in
        test order, and the profile: ``frames`` (N,) encoder frames per utterance; ``on``
        (N, L, 2) frames per utterance, layer and sub-block (attention, feed-forward) whose
        gate is on (all frames ungated); ``blank`` and ``frame_on`` (per encoder frame over
        the split: the CTC head's blank posterior and the mean on-rate over layers of each
        sub-block), or None without a CTC head.
    """
    from fairstream.data.text import normalize
    from fairstream.decoding.greedy import greedy_search
    from fairstream.metrics.wer import score_pairs

    model = loaded.model.eval()
    enc = model.encoder
    layers = len(enc.blocks)
    feats = [loaded.cmvn.apply(f).astype(np.float32) for f in test.fbank]
    n = len(feats)
    frames = np.zeros(n, dtype=np.int64)
    on = np.zeros((n, layers, 2), dtype=np.int64)
    hyps = [""] * n
    blank_all: list[np.ndarray] = []
    frame_on_all: list[np.ndarray] = []
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    if enc.gated:
        for i, block in enumerate(enc._blocks()):
            hooks.append(block.arbitrator.register_forward_hook(
                lambda _m, _i, out, i=i: captured.__setitem__(i, out > 0)))
    try:
        with torch.inference_mode():
            for idx in _batches(n, [f.shape[0] for f in feats], 6000):
                x, lens = _pad([feats[i] for i in idx])
                y, y_lens = model.encode(x, lens)
                for j, h in zip(idx, greedy_search(model, y, y_lens, max_symbols_per_frame=3),
                                strict=True):
                    hyps[j] = loaded.tokenizer.decode(list(h.tokens))
                valid = (torch.arange(y.shape[1]).unsqueeze(0) < y_lens.unsqueeze(1))
                if enc.gated:
                    g = torch.stack([captured[i] for i in range(layers)], dim=1)  # B,L,T,2
                else:
                    g = torch.ones(len(idx), layers, y.shape[1], 2, dtype=torch.bool)
                g = g & valid[:, None, :, None]
                for j, i in enumerate(idx):
                    frames[i] = int(y_lens[j])
                    on[i] = g[j].sum(dim=1).numpy()
                if model.ctc_head is not None:
                    post = torch.softmax(model.ctc_head(y), dim=-1)[..., model.blank_id]
                    rate = g.float().mean(dim=1)  # B,T,2
                    blank_all.append(post[valid].numpy())
                    frame_on_all.append(rate[valid].numpy())
    finally:
        for hook in hooks:
            hook.remove()
    refs = [normalize(c.supervisions[0].text or "") for c in test.cuts]
    hyp_texts = [normalize(h) for h in hyps]
    counts = score_pairs(refs, hyp_texts, normalized=True)
    df = pd.DataFrame({
        "utt_id": test.meta["utt_id"], "speaker_id": test.meta["speaker_id"],
        "n_ref_words": [c.ref_words for c in counts],
        "greedy": [c.substitutions + c.deletions + c.insertions for c in counts],
        "ref": refs, "hyp": hyp_texts})
    profile = {"frames": frames, "on": on,
               "blank": np.concatenate(blank_all) if blank_all else None,
               "frame_on": np.concatenate(frame_on_all) if frame_on_all else None}
    return df, profile


def executed_flops(encoder: Any, profile: dict[str, Any]) -> np.ndarray:
    """(N,) encoder-block FLOPs executed per test utterance: every frame's keys/values and
    arbitrators, and the sub-blocks whose gate is on."""
    f = block_flops(encoder)
    frames = profile["frames"].astype(np.float64)
    on = profile["on"].astype(np.float64).sum(axis=1)  # N, 2 summed over layers
    return (frames * f["layers"] * (f["kv"] + f["core"] + f["arb"]) + on[:, 0] * f["att"]
            + on[:, 1] * f["ffn"])


def _speaker_totals(meta: pd.DataFrame, columns: dict[str, np.ndarray]) -> np.ndarray:
    df = meta[["speaker_id"]].copy()
    for k, v in columns.items():
        df[k] = v
    return df.groupby("speaker_id", sort=True)[list(columns)].sum().to_numpy(np.float64).T


def share_interval(meta: pd.DataFrame, num: np.ndarray, den: np.ndarray, n_boot: int,
                   mask: np.ndarray | None = None) -> tuple[float, list[float]]:
    """Σnum / Σden over utterances (``mask``: a subset) with its speaker-bootstrap 95 %
    interval."""
    m = np.ones(len(meta), dtype=bool) if mask is None else mask
    x = _speaker_totals(meta[m], {"a": num[m], "b": den[m]})
    boot = SpeakerBootstrap.draw(x.shape[1], n_boot, seed=0)
    tot = boot.totals(x)
    lo, hi = percentile_interval(ratio_replicates(tot[0], tot[1]), 0.95)
    return float(x[0].sum() / x[1].sum()), [float(lo), float(hi)]


def relative_increase(df: pd.DataFrame, ref: pd.DataFrame, n_boot: int
                      ) -> tuple[float, list[float]]:
    """(WER − WER_ref) / WER_ref on the same utterances, with a paired speaker-bootstrap
    interval (the same replicates for both)."""
    both = df[["utt_id", "speaker_id", "greedy", "n_ref_words"]].merge(
        ref[["utt_id", "greedy"]], on="utt_id", suffixes=("", "_ref"))
    x = both.groupby("speaker_id", sort=True)[["greedy", "greedy_ref"]].sum().to_numpy(
        np.float64).T
    boot = SpeakerBootstrap.draw(x.shape[1], n_boot, seed=0)
    tot = boot.totals(x)
    reps = ratio_replicates(tot[0] - tot[1], tot[1])
    lo, hi = percentile_interval(reps, 0.95)
    return float((x[0].sum() - x[1].sum()) / x[1].sum()), [float(lo), float(hi)]


def accuracy_record(s: Settings, spec: Spec, loaded: Any, test: TestSet) -> Record:
    """Everything about one model that does not need a clock (cached in its run directory
    as ``amortized_accuracy.json`` with its per-utterance table)."""
    from fairstream.inference.sharding import file_digest

    run_dir = s.workdir / spec.run_dir_name
    cache = run_dir / "amortized_accuracy.json"
    table = run_dir / "amortized_test.csv.gz"
    identity = {"checkpoint_sha256": file_digest(run_dir / "averaged.pt"),
                "test_utterances": len(test.cuts)}
    if cache.is_file() and table.is_file():
        cached = dict(json.loads(cache.read_text()))
        if all(cached.get(k) == v for k, v in identity.items()):
            return cached
        log.info("%s: measured on another checkpoint or test set; measuring again",
                 spec.run_dir_name)
    log.info("decoding the test split and profiling the gates: %s", spec.run_dir_name)
    df, prof = decode_and_profile(loaded, test)
    enc = loaded.model.encoder
    df["frames"] = prof["frames"]
    df["flops"] = executed_flops(enc, prof)
    for li in range(prof["on"].shape[1]):
        df[f"att_on_{li}"] = prof["on"][:, li, 0]
        df[f"ffn_on_{li}"] = prof["on"][:, li, 1]
    wer, ci = wer_interval(df, "greedy", s.bootstrap)
    total_frames = float(prof["frames"].sum())
    per_layer = [{"layer": li,
                  "att_rate": float(prof["on"][:, li, 0].sum() / total_frames),
                  "ffn_rate": float(prof["on"][:, li, 1].sum() / total_frames)}
                 for li in range(prof["on"].shape[1])]
    blank_bins = []
    if prof["blank"] is not None:
        edges = np.linspace(0.0, 1.0, 11)
        which = np.clip(np.digitize(prof["blank"], edges) - 1, 0, 9)
        for b in range(10):
            sel = which == b
            blank_bins.append({
                "blank_lo": float(edges[b]), "blank_hi": float(edges[b + 1]),
                "frames": int(sel.sum()),
                "att_rate": float(prof["frame_on"][sel, 0].mean()) if sel.any() else None,
                "ffn_rate": float(prof["frame_on"][sel, 1].mean()) if sel.any() else None})
        corr = (float(np.corrcoef(prof["blank"], prof["frame_on"].mean(axis=1))[0, 1])
                if enc.gated and prof["frame_on"].std() > 0 else None)
    else:
        corr = None
    record: Record = {
        "name": spec.name, "seed": spec.seed, "kind": spec.kind,
        "greedy_wer": wer, "greedy_wer_ci": ci,
        "executed_block_flops": float(df["flops"].sum()),
        "frames": int(total_frames),
        "block_flops_per_frame": block_flops(enc),
        "frontend_flops_per_frame": frontend_flops_per_frame(
            enc, loaded.cmvn.apply(test.fbank[0]).astype(np.float32)),
        "att_rate": float(sum(r["att_rate"] for r in per_layer) / len(per_layer)),
        "ffn_rate": float(sum(r["ffn_rate"] for r in per_layer) / len(per_layer)),
        "per_layer": per_layer, "blank_bins": blank_bins,
        "blank_gate_correlation": corr,
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "encoder_params": sum(p.numel() for p in enc.parameters()),
        "run_dir": str(run_dir), **identity,
    }
    with atomic_path(table) as tmp:
        df.to_csv(tmp, index=False, compression="gzip")
    atomic_write_text(cache, json.dumps(record, indent=1) + "\n")
    return record


def read_table(s: Settings, spec: Spec) -> pd.DataFrame:
    return pd.read_csv(s.workdir / spec.run_dir_name / "amortized_test.csv.gz",
                       keep_default_na=False)


def encoder_batch_seconds(encoder: Any, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
                          ) -> float:
    """Wall-clock of the encoder's full pass over ``batches`` (one pass)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, lens in batches:
            encoder(x, lens)
    return time.perf_counter() - t0


def frontend_batch_seconds(encoder: Any, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
                           ) -> float:
    """Wall-clock of the encoder's front end alone (subsampling convs, input projection)
    over ``batches`` (one pass)."""
    from fairstream.models.encoders.common import subsampling_full

    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, lens in batches:
            h, _ = subsampling_full(encoder.convs, x, lens)
            encoder._project(h)
    return time.perf_counter() - t0


def encoder_stream_seconds(encoder: Any, feats: Sequence[torch.Tensor]) -> float:
    """Wall-clock of streaming each of ``feats`` through the encoder at batch 1 in 160 ms
    chunks (one pass)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for f in feats:
            state = None
            n = int(f.shape[0])
            for start in range(0, n, STREAM_CHUNK_FRAMES):
                x = f[start:start + STREAM_CHUNK_FRAMES].unsqueeze(0)
                _, _, state = encoder.stream(x, torch.tensor([x.shape[1]]), state,
                                             final=start + STREAM_CHUNK_FRAMES >= n)
    return time.perf_counter() - t0


def timing_record(s: Settings, spec: Spec, loaded: Any, ref: Any, test: TestSet) -> Record:
    """Wall-clock shares against the ungated reference, measured interleaved in this process
    on one thread (median of ``s.runs`` after a warm-up)."""
    feats = [loaded.cmvn.apply(f).astype(np.float32) for f in test.fbank]
    n_batch = min(3 * s.batch, len(feats))
    offline = [_pad(feats[i:i + s.batch]) for i in range(0, n_batch, s.batch)]
    stream = [torch.from_numpy(f) for f in feats[:s.stream_utterances]]
    model_enc, ref_enc = loaded.model.eval().encoder, ref.model.eval().encoder
    times: dict[str, list[float]] = {"batch": [], "batch_ref": [], "stream": [],
                                     "stream_ref": [], "front": [], "front_ref": []}
    for i in range(s.runs + 1):
        b = encoder_batch_seconds(model_enc, offline)
        br = encoder_batch_seconds(ref_enc, offline)
        st = encoder_stream_seconds(model_enc, stream)
        sr = encoder_stream_seconds(ref_enc, stream)
        fm = frontend_batch_seconds(model_enc, offline)
        fr = frontend_batch_seconds(ref_enc, offline)
        if i:  # the first pass warms up
            for k, v in zip(times, (b, br, st, sr, fm, fr), strict=True):
                times[k].append(v)
    med = {k: statistics.median(v) for k, v in times.items()}
    audio_batch = sum(int(feats[i].shape[0]) for i in range(n_batch)) * FRAME_S
    audio_stream = sum(int(f.shape[0]) for f in stream) * FRAME_S
    return {
        "wallclock_share_batch": med["batch"] / med["batch_ref"],
        "wallclock_share_stream": med["stream"] / med["stream_ref"],
        "wallclock_share_batch_blocks": (med["batch"] - med["front"])
        / (med["batch_ref"] - med["front_ref"]),
        "frontend_wallclock_share_batch": med["front_ref"] / med["batch_ref"],
        "encoder_rtf_batch": med["batch"] / audio_batch,
        "encoder_rtf_batch_ungated": med["batch_ref"] / audio_batch,
        "encoder_rtf_stream": med["stream"] / audio_stream,
        "encoder_rtf_stream_ungated": med["stream_ref"] / audio_stream,
        "timing": {"runs": s.runs, "batch_size": s.batch, "batches": len(offline),
                   "batch_audio_s": audio_batch, "stream_utterances": len(stream),
                   "stream_audio_s": audio_stream, "chunk_ms": 160, "threads": 1},
    }


# ----------------------------------------------------------------------------- assembly

GROUP_COLUMNS = ("accent", "planted", "noise_type", "telephone")


def _loaded(s: Settings, spec: Spec) -> Any:  # Any: LoadedModel
    from fairstream.inference import load_transducer

    path = s.workdir / spec.run_dir_name / "averaged.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train {spec.run_dir_name} first "
                                f"(run without --measure-only)")
    return load_transducer(path)


def cached_timing(s: Settings, spec: Spec, test: TestSet) -> Record | None:
    """The timing record of ``spec`` (measured now unless cached; None with --no-timing)."""
    from fairstream.inference.sharding import file_digest

    cache = s.workdir / spec.run_dir_name / "amortized_timing.json"
    ref_dir = s.workdir / Spec("ungated", spec.seed).run_dir_name
    identity = {"checkpoint_sha256": file_digest(s.workdir / spec.run_dir_name / "averaged.pt"),
                "reference_sha256": file_digest(ref_dir / "averaged.pt"), "runs": s.runs}
    if cache.is_file():
        cached = dict(json.loads(cache.read_text()))
        if all(cached.get(k) == v for k, v in identity.items()):
            return cached
    if not s.timing:
        return None
    log.info("timing %s against ungated-seed%d", spec.run_dir_name, spec.seed)
    record = {**timing_record(s, spec, _loaded(s, spec),
                              _loaded(s, Spec("ungated", spec.seed)), test), **identity}
    atomic_write_text(cache, json.dumps(record, indent=1) + "\n")
    return record


def group_rows(s: Settings, spec: Spec, df: pd.DataFrame, ref: pd.DataFrame,
               meta: pd.DataFrame, planted: Sequence[str]) -> list[Record]:
    """Compute share and WER cost of one model per accent, planted-accent group, noise type
    and telephone band, each with a speaker-bootstrap interval."""
    m = meta.copy()
    m["planted"] = np.where(m["accent"].isin(list(planted)), "under-represented", "rest")
    rows = []
    for col in GROUP_COLUMNS:
        for value in sorted(m[col].astype(str).unique()):
            mask = (m[col].astype(str) == value).to_numpy()
            share, share_ci = share_interval(m, df["flops"].to_numpy(float),
                                             ref["flops"].to_numpy(float), s.bootstrap, mask)
            sub, sub_ref = df[mask], ref[mask]
            wer = float(sub["greedy"].sum() / sub["n_ref_words"].sum())
            wer_ref = float(sub_ref["greedy"].sum() / sub_ref["n_ref_words"].sum())
            cost, cost_ci, _ = paired_difference(
                sub[["utt_id", "speaker_id", "n_ref_words", "greedy"]],
                sub_ref[["utt_id", "speaker_id", "n_ref_words", "greedy"]], "greedy",
                s.bootstrap)
            rows.append({"run": spec.run_dir_name, "name": spec.name, "seed": spec.seed,
                         "by": col, "value": value, "utterances": int(mask.sum()),
                         "speakers": int(sub["speaker_id"].nunique()),
                         "compute_share": share, "compute_share_ci": share_ci,
                         "greedy_wer": wer, "ungated_greedy_wer": wer_ref,
                         "wer_cost": cost, "wer_cost_ci": cost_ci})
    return rows


def assemble(s: Settings, todo: Sequence[Spec], test: TestSet) -> Record:
    """Measure every trained model of ``todo`` and build the results document."""
    import json as _json

    corpus_card = _json.loads((s.corpus / "corpus.json").read_text())
    planted = corpus_card.get("planted", {}).get("under_represented_accents", [])
    acc: dict[str, Record] = {}
    for spec in todo:
        acc[spec.run_dir_name] = accuracy_record(s, spec, _loaded(s, spec), test)
    points, baselines, reference, groups = [], [], [], []
    gates: dict[str, Record] = {}
    for spec in todo:
        a = acc[spec.run_dir_name]
        ref_spec = Spec("ungated", spec.seed)
        if ref_spec.run_dir_name not in acc:
            raise ValueError(f"{spec.run_dir_name} has no reference: ungated-seed{spec.seed} "
                             f"is not among the runs")
        r = acc[ref_spec.run_dir_name]
        if spec.kind == "ungated":
            reference.append({k: a[k] for k in (
                "seed", "greedy_wer", "greedy_wer_ci", "executed_block_flops", "frames",
                "block_flops_per_frame", "frontend_flops_per_frame", "params",
                "encoder_params", "run_dir")})
            continue
        df, ref = read_table(s, spec), read_table(s, ref_spec)
        rel, rel_ci = relative_increase(df, ref, s.bootstrap)
        diff, diff_ci, _ = paired_difference(
            df[["utt_id", "speaker_id", "n_ref_words", "greedy"]],
            ref[["utt_id", "speaker_id", "n_ref_words", "greedy"]], "greedy", s.bootstrap)
        ref_dense = r["block_flops_per_frame"]
        timing = cached_timing(s, spec, test) or {}
        row: Record = {
            "seed": spec.seed,
            "compute_share": a["executed_block_flops"] / r["executed_block_flops"],
            "gateable_share": None,
            "frontend_flops_share": r["frontend_flops_per_frame"] / (
                r["frontend_flops_per_frame"] + ref_dense["layers"] * (
                    ref_dense["att"] + ref_dense["kv"] + ref_dense["core"]
                    + ref_dense["ffn"])),
            "wallclock_share_stream": timing.get("wallclock_share_stream"),
            "wallclock_share_batch": timing.get("wallclock_share_batch"),
            "wallclock_share_batch_blocks": timing.get("wallclock_share_batch_blocks"),
            "frontend_wallclock_share_batch": timing.get("frontend_wallclock_share_batch"),
            "greedy_wer": a["greedy_wer"], "greedy_wer_ci": a["greedy_wer_ci"],
            "ungated_greedy_wer": r["greedy_wer"],
            "rel_wer_increase": rel, "rel_wer_increase_ci": rel_ci,
            "wer_diff": diff, "wer_diff_ci": diff_ci,
            "att_rate": a["att_rate"], "ffn_rate": a["ffn_rate"],
            "params": a["params"], "encoder_params": a["encoder_params"],
            **{k: v for k, v in timing.items() if k.startswith("encoder_rtf")},
            "run_dir": a["run_dir"],
        }
        if spec.kind == "target":
            f = a["block_flops_per_frame"]
            gateable = a["frames"] * f["layers"] * (f["att"] + f["ffn"])
            on_flops = a["executed_block_flops"] - a["frames"] * f["layers"] * (
                f["kv"] + f["core"] + f["arb"])
            row = {"target_rate": spec.value, "lambda": s.weight, **row,
                   "gateable_share": on_flops / gateable}
            points.append(row)
            gates[spec.run_dir_name] = {"per_layer": a["per_layer"],
                                        "blank_bins": a["blank_bins"],
                                        "blank_gate_correlation": a["blank_gate_correlation"]}
        else:
            baselines.append({"name": spec.name, **row})
        groups += group_rows(s, spec, df, ref, test.meta, planted)
    return {"benchmark": "amortized", "points": points, "baselines": baselines,
            "reference": reference, "gates": gates, "groups": groups,
            "protocol": {"base": str(s.base), "base_steps": s.base_steps,
                         "steps_after_base": s.steps, "lr": s.lr, "warmup": s.warmup,
                         "weight": s.weight, "recipe": RECIPE.name,
                         "bootstrap_replicates": s.bootstrap,
                         "planted_accents": list(planted),
                         "compute_share": "encoder-block FLOPs executed on the test split "
                                          "(keys/values, attention scores and arbitrators "
                                          "of every frame, projections and feed-forwards "
                                          "whose gate is on) / the ungated model's; front "
                                          "end excluded",
                         "wallclock": "whole encoder (front end included), one thread, "
                                      "median of interleaved runs against the ungated model "
                                      "of the same seed"},
            "machine": {"platform": platform.platform(), "torch": torch.__version__}}


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _ci(ci: Sequence[float] | None, signed: bool = True) -> str:
    if not ci:
        return ""
    fmt = "+.1f" if signed else ".1f"
    return f" [{100 * ci[0]:{fmt}}, {100 * ci[1]:{fmt}}]"


def format_table(doc: Record) -> str:
    """The points and baselines as a Markdown table (percent)."""
    lines = ["| model | seed | compute share % | gateable share % | wall-clock share % "
             "(batch / stream) | greedy WER % | rel. WER increase % |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["reference"]:
        lines.append(f"| ungated | {r['seed']} | 100 | 100 | 100 / 100 | "
                     f"{_pct(r['greedy_wer'], 2)}{_ci(r['greedy_wer_ci'], False)} | 0 |")
    for r in [*doc["points"], *doc["baselines"]]:
        name = r.get("name") or f"target {r['target_rate']:g}"
        lines.append(
            f"| {name} | {r['seed']} | {_pct(r['compute_share'])} | "
            f"{_pct(r.get('gateable_share'))} | {_pct(r['wallclock_share_batch'])} / "
            f"{_pct(r['wallclock_share_stream'])} | {_pct(r['greedy_wer'], 2)}"
            f"{_ci(r['greedy_wer_ci'], False)} | {_pct(r['rel_wer_increase'])}"
            f"{_ci(r['rel_wer_increase_ci'])} |")
    return "\n".join(lines)


def format_groups(doc: Record, by: Sequence[str] = ("planted", "noise_type", "telephone")
                  ) -> str:
    """Compute share and WER cost per group and model, one value per seed (``a / b``)."""
    lines = ["| model | by | group | compute share % (seeds) | WER cost, points (seeds) |",
             "|---|---|---|---|---|"]
    rows = [g for g in doc["groups"] if g["by"] in by]
    keys = sorted({(g["name"], g["by"], g["value"]) for g in rows})
    for name, col, value in keys:
        sel = [g for g in rows if (g["name"], g["by"], g["value"]) == (name, col, value)]
        share = " / ".join(f"{_pct(g['compute_share'])}{_ci(g['compute_share_ci'], False)}"
                           for g in sel)
        cost = " / ".join(f"{100 * g['wer_cost']:+.2f}{_ci(g['wer_cost_ci'])}" for g in sel)
        lines.append(f"| {name} | {col} | {value} | {share} | {cost} |")
    return "\n".join(lines)


def plot(doc: Record, path: Path) -> Path:
    """Three panels: WER against compute share, WER against offline wall-clock share, and
    the gates' on-rate against the CTC blank posterior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {0: "tab:blue", 1: "tab:orange", 2: "tab:green"}
    for ax, key, label in ((axes[0], "compute_share", "encoder-block compute share"),
                           (axes[1], "wallclock_share_batch",
                            "encoder wall-clock share (offline batch, 1 thread)")):
        for ref in doc["reference"]:
            ax.scatter([1.0], [100 * ref["greedy_wer"]], marker="s", s=50,
                       color=colors.get(ref["seed"], "k"),
                       label=f"ungated, seed {ref['seed']}")
        for seed in sorted({p["seed"] for p in doc["points"]}):
            pts = sorted((p for p in doc["points"] if p["seed"] == seed and p[key] is not None),
                         key=lambda p: p[key])
            ax.errorbar([p[key] for p in pts], [100 * p["greedy_wer"] for p in pts],
                        yerr=[[100 * (p["greedy_wer"] - p["greedy_wer_ci"][0]) for p in pts],
                              [100 * (p["greedy_wer_ci"][1] - p["greedy_wer"]) for p in pts]],
                        marker="o", capsize=3, color=colors.get(seed, "k"),
                        label=f"gated (target rates), seed {seed}")
        for b in doc["baselines"]:
            if b[key] is not None:
                ax.scatter([b[key]], [100 * b["greedy_wer"]], marker="^", s=60, color="k")
                ax.annotate(f"{b['name']} s{b['seed']}", (b[key], 100 * b["greedy_wer"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("greedy WER % (test, no LM)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    ax = axes[2]
    for run, g in doc["gates"].items():
        if not run.endswith("seed0") or not g["blank_bins"]:
            continue
        bins = [b for b in g["blank_bins"] if b["frames"] > 0]
        ax.plot([(b["blank_lo"] + b["blank_hi"]) / 2 for b in bins],
                [(b["att_rate"] + b["ffn_rate"]) / 2 for b in bins], marker=".",
                label=run.replace("-seed0", ""))
    ax.set_xlabel("CTC blank posterior of the frame")
    ax.set_ylabel("share of sub-blocks run (mean over layers)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _csv(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    d = Settings(corpus=Path("."), base=Path("."))
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="corpus directory")
    p.add_argument("--base", type=Path, required=True,
                   help="the dense Transformer checkpoint every fine-tuned model starts from")
    p.add_argument("--base-steps", type=int, default=d.base_steps,
                   help="steps the base was trained (dense_small trains base+steps)")
    p.add_argument("--steps", type=int, default=d.steps, help="steps after the base")
    p.add_argument("--seeds", type=_csv(int), default=d.seeds)
    p.add_argument("--targets", type=_csv(float), default=d.targets,
                   help="target shares of the gateable sub-block FLOPs, one point each")
    p.add_argument("--weight", type=float, default=d.weight, help="λ of the target-rate loss")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate after the base")
    p.add_argument("--windows", type=_csv(int), default=d.windows,
                   help="sliding_window_W baselines (attention window in encoder frames)")
    p.add_argument("--window-seeds", type=_csv(int), default=d.window_seeds)
    p.add_argument("--small-d-model", type=int, default=d.small_d_model)
    p.add_argument("--small-ffn", type=int, default=d.small_ffn)
    p.add_argument("--small-seeds", type=_csv(int), default=d.small_seeds)
    p.add_argument("--workdir", type=Path, default=d.workdir)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--max-utterances", type=int, default=None,
                   help="measure on the first N test utterances only (a quick check; the "
                        "results are not the benchmark's)")
    p.add_argument("--runs", type=int, default=d.runs, help="timing repetitions")
    p.add_argument("--only", default=None,
                   help="comma-separated run names (e.g. target_0.6-seed1) to train only")
    p.add_argument("--train-only", action="store_true", help="train, do not measure")
    p.add_argument("--measure-only", action="store_true",
                   help="measure the trained models, train nothing")
    p.add_argument("--no-timing", dest="timing", action="store_false",
                   help="skip the wall-clock measurements not yet cached (they need a quiet "
                        "machine; run again without this flag later)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    s = Settings(corpus=a.corpus, base=a.base, base_steps=a.base_steps, steps=a.steps,
                 seeds=a.seeds, targets=a.targets, weight=a.weight, lr=a.lr,
                 windows=a.windows, window_seeds=a.window_seeds,
                 small_d_model=a.small_d_model, small_ffn=a.small_ffn,
                 small_seeds=a.small_seeds, workdir=a.workdir, out=a.out, runs=a.runs,
                 max_utterances=a.max_utterances, timing=a.timing, progress=a.progress)
    return s, a


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    s, a = parse_args(argv)
    todo = specs(s)
    if a.only:
        names = set(a.only.split(","))
        todo = [t for t in todo if t.run_dir_name in names]
        if not todo:
            raise SystemExit(f"--only {a.only}: no such run; runs: "
                             f"{', '.join(t.run_dir_name for t in specs(s))}")
    with torch_threads(1):
        if not a.measure_only:
            for spec in todo:
                train_spec(s, spec)
        if a.train_only:
            return
        if a.measure_only:
            todo = [t for t in todo if (s.workdir / t.run_dir_name / "averaged.pt").is_file()
                    and _finished_steps(s.workdir / t.run_dir_name) == (
                        s.base_steps + s.steps if t.kind == "dense_small" else s.steps)]
        doc = assemble(s, todo, load_test(s.corpus, s.max_utterances,
                                          s.workdir / "test_fbank.npz"))
    atomic_write_text(s.out, json.dumps(doc, indent=1) + "\n")
    print(format_table(doc))
    print()
    print(format_groups(doc))
    print(f"wrote {s.out} and {plot(doc, s.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
