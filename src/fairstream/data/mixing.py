"""Two-speaker sessions for multi-talker recognition, mixed from a corpus's utterances.

``fairstream corpus mix`` turns single-speaker utterances into conversations: per session,
1-4 turns from one or two speakers of the same split (so train, dev and test sessions come
from disjoint speaker sets, as the corpus's splits do), each turn an unused utterance of its
speaker. A turn starts after the previous one ends plus a silence, or, when the speaker
changes, overlapping it by a share of the shorter of the two turns (uniform in
``[0, max_overlap]``); a speaker never overlaps their own previous turn. Some sessions have a
single speaker. Everything is drawn from ``seed``: the same corpus and settings give the same
sessions, sample for sample.

The audio is the sum of the turns' waveforms at their offsets (scaled down only if the sum
would clip; the scale is recorded). Written to ``OUT``:

* ``audio/<split>/<session>.flac``;
* ``<split>.seglst.json``: the reference as SegLST (``session_id``, ``speaker``,
  ``start_time``, ``end_time``, ``words``), what meeteval and
  :mod:`fairstream.metrics.multitalker` read;
* ``manifests/<split>_{recordings,supervisions}.jsonl.gz``: Lhotse manifests (one recording
  per session, one supervision per turn with its speaker and text);
* ``sessions.csv``: one row per session (split, turns, speakers, duration, overlap ratio =
  seconds with two talkers / seconds with speech).

Written atomically file by file; ``mix.json`` (the settings and counts) is written last.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairstream._io import atomic_path, atomic_write_text
from fairstream.errors import CorpusError, InputDataError

__all__ = ["SESSION_COLUMNS", "MixConfig", "mix_corpus", "overlap_ratio", "write_split",
           "write_summary"]

#: the columns of ``sessions.csv``.
SESSION_COLUMNS = ("session_id", "split", "turns", "speakers", "duration", "overlap_ratio",
                   "scale")


@dataclass(frozen=True)
class MixConfig:
    """Settings of :func:`mix_corpus`.

    Attributes:
        sessions: sessions per split (split → count); splits not named are not mixed.
        min_turns, max_turns: turns per session (uniform).
        max_overlap: largest overlap, as a share of the shorter of two adjacent turns of
            different speakers.
        overlap_prob: probability that a speaker change overlaps (else a silence).
        silence: (min, max) seconds of silence between non-overlapping turns.
        single_speaker_share: share of sessions with one speaker.
        seed: the random seed.
    """

    sessions: tuple[tuple[str, int], ...] = (("train", 400), ("dev", 40), ("test", 80))
    min_turns: int = 1
    max_turns: int = 4
    max_overlap: float = 0.4
    overlap_prob: float = 0.6
    silence: tuple[float, float] = (0.1, 1.0)
    single_speaker_share: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_turns <= self.max_turns:
            raise InputDataError(f"turns must satisfy 1 <= min_turns <= max_turns, got "
                                 f"{self.min_turns}, {self.max_turns}")
        if not 0.0 <= self.max_overlap < 1.0:
            raise InputDataError(f"max_overlap must be in [0, 1), got {self.max_overlap}")
        if not 0.0 <= self.single_speaker_share <= 1.0 or not 0.0 <= self.overlap_prob <= 1.0:
            raise InputDataError("single_speaker_share and overlap_prob must be in [0, 1]")
        lo, hi = self.silence
        if not 0.0 <= lo <= hi:
            raise InputDataError(f"silence must be 0 <= min <= max, got {self.silence}")
        for split, n in self.sessions:
            if n < 0:
                raise InputDataError(f"sessions for split {split!r} must be >= 0, got {n}")


@dataclass(frozen=True)
class _Turn:
    speaker: str
    cut: Any  # a lhotse cut
    start: float


def _plan(rng: random.Random, pool: dict[str, list[Any]], cfg: MixConfig, session: str
          ) -> list[_Turn]:
    speakers = sorted(s for s, cuts in pool.items() if cuts)
    if not speakers:
        raise CorpusError(f"session {session}: no unused utterance is left in the split "
                          "(fewer sessions, or fewer turns)")
    two = len(speakers) >= 2 and rng.random() >= cfg.single_speaker_share
    who = rng.sample(speakers, 2) if two else [rng.choice(speakers)]
    n_turns = rng.randint(cfg.min_turns, cfg.max_turns)
    turns: list[_Turn] = []
    last_end: dict[str, float] = {}
    for k in range(n_turns):
        spk = who[k % len(who)] if k < 2 else rng.choice(who)
        if not pool[spk]:
            break
        cut = pool[spk].pop(rng.randrange(len(pool[spk])))
        if not turns:
            start = 0.0
        else:
            prev = turns[-1]
            prev_end = prev.start + prev.cut.duration
            if prev.speaker != spk and rng.random() < cfg.overlap_prob:
                share = rng.uniform(0.0, cfg.max_overlap)
                start = prev_end - share * min(prev.cut.duration, cut.duration)
            else:
                start = prev_end + rng.uniform(*cfg.silence)
            start = max(start, last_end.get(spk, 0.0), 0.0)  # nobody overlaps themselves
        turns.append(_Turn(spk, cut, round(start, 3)))
        last_end[spk] = start + cut.duration
    return turns


def overlap_ratio(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds with two or more talkers / seconds with speech, on a 10 ms grid, for a
    session's turns given as (start, end) seconds."""
    if not intervals:
        return 0.0
    end = max(b for _, b in intervals)
    active = np.zeros(int(round(end * 100)) + 1, dtype=np.int64)  # 10 ms grid
    for a, b in intervals:
        active[int(round(a * 100)):int(round(b * 100))] += 1
    speech = int((active > 0).sum())
    return float((active > 1).sum() / speech) if speech else 0.0


def write_split(out: Path, split: str, segments: list[dict[str, Any]], recordings: list[Any],
                supervisions: list[Any]) -> None:
    """A split's SegLST reference and Lhotse recording/supervision manifests."""
    from lhotse import RecordingSet, SupervisionSet

    from fairstream.data.layout import write_manifest
    from fairstream.metrics.multitalker import write_seglst

    write_seglst(segments, out / f"{split}.seglst.json")
    write_manifest(out, split, "recordings",
                   (r.to_dict() for r in RecordingSet.from_recordings(recordings)))
    write_manifest(out, split, "supervisions",
                   (x.to_dict() for x in SupervisionSet.from_segments(supervisions)))


def write_summary(out: Path, rows: list[dict[str, Any]], head: dict[str, Any]) -> dict[str, Any]:
    """``sessions.csv`` (the rows) and then ``mix.json`` (``head`` + counts); returns it."""
    table = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    atomic_write_text(out / "sessions.csv", table.to_csv(index=False))
    summary = {**head,
               "sessions": {str(s): int(n) for s, n in table["split"].value_counts(sort=False)
                            .items()},
               "overlapped_sessions": int((table["overlap_ratio"] > 0).sum()),
               "mean_overlap_ratio": float(table["overlap_ratio"].mean()) if len(table)
               else 0.0}
    atomic_write_text(out / "mix.json", json.dumps(summary, indent=1))
    return summary


def mix_corpus(corpus_dir: str | Path, out_dir: str | Path, cfg: MixConfig | None = None, *,
               progress: bool = False) -> dict[str, Any]:
    """Mix sessions as the module docstring says; returns the ``mix.json`` summary.

    Raises:
        CorpusError: a split is missing, or runs out of utterances.
    """
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment
    from tqdm.auto import tqdm

    from fairstream.data.corpus import load_corpus
    from fairstream.data.text import normalize

    cfg = cfg or MixConfig()
    corpus = load_corpus(corpus_dir)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for split, n_sessions in cfg.sessions:
        if split not in corpus.splits:
            raise CorpusError(f"corpus {corpus.root} has no split {split!r}; splits: "
                              f"{', '.join(corpus.splits)}")
        rng = random.Random(f"{cfg.seed}:{split}")
        pool: dict[str, list[Any]] = {}
        for cut in sorted(corpus.cuts(split), key=lambda c: c.id):
            if cut.supervisions and cut.supervisions[0].text:
                pool.setdefault(str(cut.supervisions[0].speaker), []).append(cut)
        segs, recs, sups = [], [], []
        for i in tqdm(range(n_sessions), desc=f"mix {split}", disable=not progress):
            sid = f"{split}-{i:05d}"
            turns = _plan(rng, pool, cfg, sid)
            sr = turns[0].cut.sampling_rate
            end = max(t.start + t.cut.duration for t in turns)
            mix = np.zeros(int(round(end * sr)) + 1, dtype=np.float64)
            for t in turns:
                wav = t.cut.load_audio()[0].astype(np.float64)
                a = int(round(t.start * sr))
                mix[a:a + len(wav)] += wav[: len(mix) - a]
            peak = float(np.abs(mix).max(initial=0.0))
            scale = 0.99 / peak if peak > 0.99 else 1.0
            path = out / "audio" / split / f"{sid}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                sf.write(tmp, (mix * scale).astype(np.float32), sr, format="FLAC")
            recs.append(Recording.from_file(path.resolve(), recording_id=sid))
            for k, t in enumerate(turns):
                words = normalize(t.cut.supervisions[0].text)
                segs.append({"session_id": sid, "speaker": t.speaker,
                             "start_time": t.start,
                             "end_time": round(t.start + t.cut.duration, 3), "words": words})
                sups.append(SupervisionSegment(id=f"{sid}-{k}", recording_id=sid,
                                               start=t.start, duration=t.cut.duration,
                                               speaker=t.speaker, text=words,
                                               custom={"source_cut": t.cut.id}))
            rows.append({"session_id": sid, "split": split, "turns": len(turns),
                         "speakers": len({t.speaker for t in turns}),
                         "duration": round(end, 3),
                         "overlap_ratio": round(overlap_ratio(
                             [(t.start, t.start + t.cut.duration) for t in turns]), 4),
                         "scale": round(scale, 4)})
        write_split(out, split, segs, recs, sups)
    return write_summary(out, rows, {"source_corpus": str(corpus.root), "config": asdict(cfg)})
