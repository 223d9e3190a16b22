"""Training and loading the multi-talker transducers on mixed sessions (``fairstream mt``).

A run starts from a trained single-talker transducer checkpoint (``--init``): its encoder,
predictor, joiner, tokenizer and CMVN are reused, the vocabulary grows by ``<sot>`` and
``<eot>`` (old logits unchanged, :func:`~fairstream.training.warm_start.extend_vocabulary`),
and a separator of ``channels`` channels is added. Sessions come from a directory written by
``fairstream corpus mix`` (``<split>.seglst.json`` and ``audio/<split>/<session>.flac``);
every reference is checked first (:func:`~fairstream.multitalker.targets.check_session`).
Batches hold whole sessions up to ``data.max_duration`` seconds, in an order drawn from the
seed and the epoch; the optimizer, schedule, checkpoints, resumption and logging are the
one training loop's (:func:`fairstream.training.loop.fit`), so ``schedule.max_steps`` is the
stopping rule as for every recipe. SpecAugment is not applied to sessions.

The checkpoint (kind ``multitalker``) stores the whole model, the extended tokenizer, the
CMVN and a ``multitalker`` config section (channels, separator size, λ, turn-token ids);
:func:`load_multitalker` rebuilds it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fairstream.errors import CheckpointError, CorpusError, InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.metrics.multitalker import Segment, read_seglst
from fairstream.multitalker.model import MultiTalkerTransducer
from fairstream.multitalker.targets import EOT, SOT, ChannelTarget, channel_targets, check_session
from fairstream.tokenizer import Tokenizer
from fairstream.training.loop import LossOutput, TrainResult

__all__ = [
    "LoadedMultiTalker",
    "Session",
    "SessionSource",
    "load_multitalker",
    "load_sessions",
    "train_multitalker",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """One mixed session: its audio file, duration and reference turns."""

    session_id: str
    audio: Path
    duration: float
    turns: tuple[Segment, ...]


def load_sessions(mix_dir: str | Path, split: str) -> list[Session]:
    """The sessions of ``split`` of a ``fairstream corpus mix`` directory, references checked.

    Raises:
        CorpusError: no such split or a missing audio file (named).
        InputDataError: a bad reference (see
            :func:`~fairstream.multitalker.targets.check_session`).
    """
    import soundfile as sf

    root = Path(mix_dir)
    ref_path = root / f"{split}.seglst.json"
    if not ref_path.is_file():
        raise CorpusError(f"{root} has no {split}.seglst.json: not a `fairstream corpus mix` "
                          f"directory, or no {split!r} split mixed")
    by_session: dict[str, list[Segment]] = {}
    for seg in read_seglst(ref_path):
        by_session.setdefault(seg.session_id, []).append(seg)
    out = []
    for sid in sorted(by_session):
        audio = root / "audio" / split / f"{sid}.flac"
        if not audio.is_file():
            raise CorpusError(f"session {sid}: audio {audio} does not exist")
        info = sf.info(str(audio))
        duration = info.frames / info.samplerate
        turns = tuple(sorted(by_session[sid], key=lambda s: (s.start_time, s.end_time)))
        check_session(turns, duration)
        out.append(Session(sid, audio, duration, turns))
    return out


def session_features(session: Session, cmvn: Cmvn) -> np.ndarray:
    """Normalized fbank (T, F) of a session's audio."""
    import soundfile as sf

    from fairstream.features.fbank import compute_fbank

    samples, rate = sf.read(str(session.audio), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return cmvn.apply(compute_fbank(samples, rate, resample_input=rate != 16000)).astype(
        np.float32)


@dataclass(frozen=True)
class MtBatch:
    """Sessions of one step: padded features, lengths, channel targets, ids."""

    features: Tensor
    feature_lens: Tensor
    targets: tuple[tuple[ChannelTarget, ...], ...]
    session_ids: tuple[str, ...]


class SessionSource:
    """Batches of whole sessions up to ``max_duration`` seconds (a
    :class:`~fairstream.training.loop.DataSource`): sessions shuffled by ``seed`` and the
    epoch (``shuffle``), cut into batches in that order; features computed once and kept."""

    def __init__(self, sessions: Sequence[Session], tokenizer: Tokenizer, cmvn: Cmvn, *,
                 channels: int, max_duration: float, seed: int = 0, shuffle: bool = True
                 ) -> None:
        longest = max((s.duration for s in sessions), default=0.0)
        if longest > max_duration:
            raise InputDataError(f"data.max_duration={max_duration:g} s is shorter than the "
                                 f"longest session ({longest:.2f} s)")
        self.sessions = list(sessions)
        self.cmvn = cmvn
        self.max_duration = max_duration
        self.seed, self.shuffle = seed, shuffle
        sot, eot = tokenizer.encode(SOT), tokenizer.encode(EOT)
        if len(sot) != 1 or len(eot) != 1:
            raise InputDataError("the tokenizer has no <sot>/<eot> tokens")
        self.targets = [tuple(channel_targets(s.turns, tokenizer.encode, sot[0], eot[0],
                                              channels)) for s in self.sessions]
        self._feats: dict[int, np.ndarray] = {}

    def _plan(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.sessions)))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        batches: list[list[int]] = [[]]
        total = 0.0
        for i in order:
            d = self.sessions[i].duration
            if batches[-1] and total + d > self.max_duration:
                batches.append([])
                total = 0.0
            batches[-1].append(i)
            total += d
        return [b for b in batches if b]

    def _features(self, i: int) -> np.ndarray:
        if i not in self._feats:
            self._feats[i] = session_features(self.sessions[i], self.cmvn)
        return self._feats[i]

    def batches(self, epoch: int, *, skip: int = 0) -> Iterable[MtBatch]:
        for idx in self._plan(epoch)[skip:]:
            feats = [self._features(i) for i in idx]
            lens = torch.tensor([f.shape[0] for f in feats])
            x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
            for j, f in enumerate(feats):
                x[j, :f.shape[0]] = torch.from_numpy(f)
            yield MtBatch(x, lens, tuple(self.targets[i] for i in idx),
                          tuple(self.sessions[i].session_id for i in idx))

    def __iter__(self) -> Iterator[MtBatch]:
        return iter(self.batches(0))


class MtObjective:
    """Summed channel transducer losses (with the end-of-turn penalty) of a batch."""

    def __call__(self, model: nn.Module, batch: MtBatch) -> LossOutput:
        out = model(batch.features, batch.feature_lens, batch.targets)
        metrics = {f"loss_ch{c}": float(v) for c, v in enumerate(out.channel_losses)}
        return LossOutput(out.loss, out.num_utterances, metrics)


@dataclass(frozen=True)
class LoadedMultiTalker:
    """A multi-talker checkpoint ready for decoding."""

    model: MultiTalkerTransducer
    tokenizer: Tokenizer
    cmvn: Cmvn
    config: dict[str, Any]  # Any: plain JSON data, as stored
    path: Path


def _section(channels: int, separator_dim: int, eot_weight: float, sot_id: int, eot_id: int
             ) -> dict[str, Any]:  # Any: plain JSON data
    return {"channels": channels, "separator_dim": separator_dim, "eot_weight": eot_weight,
            "sot_id": sot_id, "eot_id": eot_id}


def train_multitalker(config: Any, mix_dir: str | Path, out_dir: str | Path, *,
                      init: str | Path, channels: int = 2, separator_dim: int = 256,
                      eot_weight: float = 1.0, resume: bool = True, progress: bool = True
                      ) -> TrainResult:  # Any: a TrainConfig
    """Train a multi-talker transducer (see the module docstring).

    Args:
        config: the resolved recipe (optim, schedule, data.max_duration, seed, threads; its
            model section is replaced by the init checkpoint's).
        mix_dir: a ``fairstream corpus mix`` directory (its ``data.train_split`` and
            ``data.valid_split`` sessions are used).
        out_dir: experiment directory.
        init: the single-talker transducer checkpoint to start from.
        channels: 2 for the separator-transducer-segmenter, 1 for the MT-RNN-T baseline.
        separator_dim: bottleneck of each channel's projection.
        eot_weight: λ of the end-of-turn latency penalty, per second (0: none).

    Raises:
        CheckpointError, CorpusError, InputDataError: named problems with the inputs.
    """
    from fairstream.inference import load_transducer
    from fairstream.training.config import config_to_dict
    from fairstream.training.loop import fit, init_distributed
    from fairstream.training.transducer import _tokenizer_files
    from fairstream.training.warm_start import extend_vocabulary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load_transducer(init)
    tokenizer = extend_vocabulary(base.model, base.tokenizer, [SOT, EOT])
    tokenizer.save(out / "tokenizer")
    sot_id, eot_id = tokenizer.encode(SOT)[0], tokenizer.encode(EOT)[0]
    torch.manual_seed(config.seed)
    model = MultiTalkerTransducer(base.model.train(), channels=channels,
                                  separator_dim=separator_dim, eot_weight=eot_weight,
                                  sot_id=sot_id, eot_id=eot_id)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        train_s = load_sessions(mix_dir, config.data.train_split)
        valid_s = load_sessions(mix_dir, config.data.valid_split)
        common = {"channels": channels, "max_duration": config.data.max_duration,
                  "seed": config.seed}
        train_data = SessionSource(train_s, tokenizer, base.cmvn, **common)
        valid_data = SessionSource(valid_s, tokenizer, base.cmvn, shuffle=False, **common)
        run_config = config_to_dict(replace(config, init=str(init)))
        run_config["model"] = dict(base.config["model"], vocab_size=tokenizer.vocab_size)
        run_config["multitalker"] = {**_section(channels, separator_dim, eot_weight, sot_id,
                                                eot_id), "mix": str(mix_dir)}
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("multi-talker model: %d channel(s), %.2f M parameters, %d train / %d "
                    "dev sessions", channels, n_params / 1e6, len(train_s), len(valid_s))
        extra = {"kind": "multitalker", "tokenizer_files": _tokenizer_files(out / "tokenizer"),
                 "cmvn_mean": torch.from_numpy(base.cmvn.mean.copy()),
                 "cmvn_std": torch.from_numpy(base.cmvn.std.copy()),
                 "num_parameters": n_params}
        return fit(model=model, objective=MtObjective(), train_data=train_data,
                   valid_data=valid_data, optim=config.optim, schedule=config.schedule,
                   out_dir=out, run_config=run_config, hooks=[], extra=extra, resume=resume,
                   progress=progress, dist_info=init_distributed())
    finally:
        torch.set_num_threads(threads)


def load_multitalker(path: str | Path) -> LoadedMultiTalker:
    """Rebuild a checkpoint written by :func:`train_multitalker`.

    Raises:
        CheckpointError: not a multi-talker checkpoint, or its parts do not fit (named).
    """
    from fairstream.checkpoint import load_checkpoint
    from fairstream.inference.model import stored_tokenizer
    from fairstream.models.factory import build_model, model_config_from_dict

    ck = load_checkpoint(Path(path))
    section = ck.config.get("multitalker")
    files = ck.extra.get("tokenizer_files")
    if ck.kind != "multitalker" or not isinstance(section, dict) or not files:
        raise CheckpointError(f"{ck.path} is not a multi-talker checkpoint written by "
                              f"`fairstream mt train` (kind {ck.kind!r})")
    try:
        base = build_model(model_config_from_dict(ck.config["model"]))
        model = MultiTalkerTransducer(
            base, channels=int(section["channels"]),
            separator_dim=int(section["separator_dim"]),
            eot_weight=float(section["eot_weight"]), sot_id=int(section["sot_id"]),
            eot_id=int(section["eot_id"]))
        model.load_state_dict(ck.model)
    except (KeyError, InputDataError, RuntimeError) as exc:
        raise CheckpointError(f"{ck.path}: the stored model does not rebuild: "
                              f"{str(exc).splitlines()[0]}") from exc
    tokenizer = stored_tokenizer(ck)
    cmvn = Cmvn(mean=ck.extra["cmvn_mean"].numpy(), std=ck.extra["cmvn_std"].numpy())
    return LoadedMultiTalker(model.eval(), tokenizer, cmvn, ck.config, ck.path)
