"""Multi-talker WER: cpWER and ORC-WER over SegLST sessions, our own implementation.

Both score a session where several people talk, possibly at once, and a system that writes
several output streams (channels or speaker labels); they differ in what they credit:

* **cpWER** (concatenated minimum-permutation WER; CHiME-6): each reference speaker's words
  are concatenated in time order, so are each hypothesis stream's, and the speaker ↔ stream
  assignment with the fewest total word errors is found (Hungarian algorithm on the pairwise
  Levenshtein distances). A reference speaker left without a stream counts all its words as
  deletions; a stream left without a speaker, all its words as insertions. It charges speaker
  confusions: a system must keep each talker on one stream.
* **ORC-WER** (optimal reference combination; Sklyar et al. 2022, Raj et al. 2022): every
  reference *utterance* (segment) goes, whole, to whichever stream gives the fewest total
  errors; each stream's reference is the concatenation, in time order, of the utterances sent
  to it. It does not charge a system for moving a talker between streams across utterances,
  which is how separation-based streaming systems (two output channels, talkers unlabeled)
  are scored.

ORC-WER is computed exactly by dynamic programming over the reference words in time order
with a state per combination of positions in the hypothesis streams (a K-dimensional
Levenshtein grid, K = number of streams); each utterance is aligned against every stream and
the cheaper wins, so the cost is O(reference words × K × Π stream lengths), vectorized over
the grid. Fine for the handful of streams of the separation models (2 here); for many streams
the grid grows as a product.

WER = Σ errors / Σ reference words over all sessions (never a mean of session rates), a
fraction. The test suite compares both with meeteval's ``cp_word_error_rate`` and
``orc_word_error_rate`` on randomized sessions.

SegLST (meeteval's format): a JSON list of segments with ``session_id``, ``speaker``,
``start_time``, ``end_time``, ``words`` (a string).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairstream._io import atomic_write_text
from fairstream.errors import InputDataError

__all__ = [
    "MultiTalkerScore", "Segment", "cp_wer", "levenshtein", "orc_wer", "read_seglst",
    "write_seglst",
]

_KEYS = ("session_id", "speaker", "start_time", "end_time", "words")


@dataclass(frozen=True)
class Segment:
    """One SegLST segment."""

    session_id: str
    speaker: str
    start_time: float
    end_time: float
    words: str

    def as_dict(self) -> dict[str, Any]:
        """The SegLST entry."""
        return {k: getattr(self, k) for k in _KEYS}


def _segment(entry: Mapping[str, Any], where: str) -> Segment:
    missing = [k for k in _KEYS if k not in entry]
    if missing:
        raise InputDataError(f"{where}: SegLST segment lacks {missing}")
    try:
        start, end = float(entry["start_time"]), float(entry["end_time"])
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{where}: start_time/end_time are not numbers") from exc
    if not np.isfinite(start) or not np.isfinite(end) or end < start:
        raise InputDataError(f"{where}: bad times start {start}, end {end}")
    if not isinstance(entry["words"], str):
        raise InputDataError(f"{where}: words must be a string")
    return Segment(str(entry["session_id"]), str(entry["speaker"]), start, end,
                   entry["words"])


def as_segments(data: Iterable[Mapping[str, Any] | Segment], name: str = "SegLST"
                ) -> list[Segment]:
    """Segments from SegLST dicts (or segments), each checked."""
    out = []
    for i, e in enumerate(data):
        out.append(e if isinstance(e, Segment) else _segment(e, f"{name} entry {i}"))
    return out


def read_seglst(path: str | Path) -> list[Segment]:
    """Read a SegLST JSON file.

    Raises:
        InputDataError: unreadable, not a list, or a segment lacks a key or has bad times
            (the message names the entry).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(f"cannot read SegLST {p}: {exc}") from exc
    if not isinstance(data, list):
        raise InputDataError(f"{p}: SegLST must be a JSON list of segments")
    return as_segments(data, str(p))


def write_seglst(segments: Iterable[Segment | Mapping[str, Any]], path: str | Path) -> Path:
    """Write segments as SegLST JSON (atomically)."""
    rows = [s.as_dict() if isinstance(s, Segment) else dict(s) for s in segments]
    return atomic_write_text(path, json.dumps(rows, indent=1))


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Word edit distance (substitution, insertion, deletion cost 1)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    vocab: dict[str, int] = {}
    ai = np.array([vocab.setdefault(w, len(vocab)) for w in a])
    bi = np.array([vocab.setdefault(w, len(vocab)) for w in b])
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for x in ai:
        diag = row[:-1] + (bi != x)
        new = np.empty_like(row)
        new[0] = row[0] + 1
        new[1:] = np.minimum(diag, row[1:] + 1)
        # insertions along the row: new[j] = min_k<=j new[k] + (j - k)
        row = np.minimum.accumulate(new - idx) + idx
    return int(row[-1])


@dataclass(frozen=True)
class MultiTalkerScore:
    """A multi-talker WER over sessions.

    Attributes:
        errors: total word errors.
        length: total reference words.
        sessions: session id → (errors, length).
        assignment: session id → the assignment found (cpWER: reference speaker → stream,
            ``None`` when unmatched; ORC-WER: the stream of each reference segment, in time
            order).
        speaker_errors: cpWER only: (session id, reference speaker) → (errors, length), the
            errors of that speaker's words against its assigned stream (an unmatched stream's
            insertions are not any speaker's and are counted in ``errors`` only).
    """

    errors: int
    length: int
    sessions: dict[str, tuple[int, int]]
    assignment: dict[str, Any]
    speaker_errors: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    @property
    def wer(self) -> float:
        """errors / length (a fraction; ``nan`` without reference words)."""
        return self.errors / self.length if self.length else float("nan")


def _by_session(segments: Sequence[Segment]) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = defaultdict(list)
    for s in segments:
        out[s.session_id].append(s)
    return out


def _streams(segments: Sequence[Segment]) -> dict[str, list[str]]:
    """speaker/stream → its words concatenated in start-time order."""
    words: dict[str, list[str]] = defaultdict(list)
    for s in sorted(segments, key=lambda s: (s.start_time, s.end_time)):
        words[s.speaker].extend(s.words.split())
    return dict(words)


def cp_wer(reference: Iterable[Segment | Mapping[str, Any]],
           hypothesis: Iterable[Segment | Mapping[str, Any]]) -> MultiTalkerScore:
    """cpWER of ``hypothesis`` against ``reference`` over all their sessions."""
    from scipy.optimize import linear_sum_assignment

    ref = _by_session(as_segments(reference, "reference"))
    hyp = _by_session(as_segments(hypothesis, "hypothesis"))
    total_e = total_n = 0
    sessions: dict[str, tuple[int, int]] = {}
    assignment: dict[str, Any] = {}
    per_speaker: dict[tuple[str, str], tuple[int, int]] = {}
    for sid in sorted(set(ref) | set(hyp)):
        r = _streams(ref.get(sid, []))
        h = _streams(hyp.get(sid, []))
        rk, hk = sorted(r), sorted(h)
        n = max(len(rk), len(hk))
        cost = np.zeros((n, n), dtype=np.int64)
        for i in range(n):
            for j in range(n):
                if i < len(rk) and j < len(hk):
                    cost[i, j] = levenshtein(r[rk[i]], h[hk[j]])
                elif i < len(rk):
                    cost[i, j] = len(r[rk[i]])
                elif j < len(hk):
                    cost[i, j] = len(h[hk[j]])
        rows, cols = linear_sum_assignment(cost) if n else (np.array([]), np.array([]))
        e = int(cost[rows, cols].sum())
        length = sum(len(w) for w in r.values())
        pairs = {}
        for i, j in zip(rows, cols):
            if i < len(rk):
                pairs[rk[i]] = hk[j] if j < len(hk) else None
                per_speaker[(sid, rk[i])] = (int(cost[i, j]), len(r[rk[i]]))
        sessions[sid] = (e, length)
        assignment[sid] = pairs
        total_e += e
        total_n += length
    return MultiTalkerScore(total_e, total_n, sessions, assignment, per_speaker)


def _orc_session(utterances: Sequence[list[str]], streams: Sequence[list[str]]
                 ) -> tuple[int, list[int]]:
    """Exact ORC errors of one session and the stream of each utterance."""
    k = len(streams)
    if k == 0:
        return sum(len(u) for u in utterances), [-1] * len(utterances)
    shape = tuple(len(s) + 1 for s in streams)
    grids = [np.arange(n).reshape([-1 if a == ax else 1 for a in range(k)])
             for ax, n in enumerate(shape)]

    def close(d: np.ndarray) -> np.ndarray:  # insertions along every stream axis
        for ax in range(k):
            g = grids[ax]
            d = np.minimum.accumulate(d - g, axis=ax) + g
        return d

    start = np.full(shape, np.iinfo(np.int64).max // 4, dtype=np.int64)
    start[(0,) * k] = 0  # nothing aligned yet; insertions reach the rest of the grid
    d = close(start)
    for utt in utterances:
        best: np.ndarray | None = None
        for s in range(k):  # the utterance, whole, on stream s
            cur = d
            ids = streams[s]
            along = [-1 if a == s else 1 for a in range(k)]
            lo = tuple(slice(None, -1) if a == s else slice(None) for a in range(k))
            hi = tuple(slice(1, None) if a == s else slice(None) for a in range(k))
            for w in utt:
                sub = np.array([x != w for x in ids], dtype=np.int64).reshape(along)
                new = cur + 1  # the reference word deleted
                new[hi] = np.minimum(new[hi], cur[lo] + sub)  # matched or substituted
                g = grids[s]
                cur = np.minimum.accumulate(new - g, axis=s) + g  # insertions
            best = cur if best is None else np.minimum(best, cur)
        assert best is not None
        d = close(best)
    end = int(d[tuple(n - 1 for n in shape)])
    return end, _orc_backtrace(utterances, streams, end)


def _orc_backtrace(utterances: Sequence[list[str]], streams: Sequence[list[str]],
                   best: int) -> list[int]:
    """One assignment of utterances to streams reaching ``best`` errors, by enumeration when
    there are at most 4,096 assignments (a session of 1-4 turns on 2 streams has at most 16);
    otherwise ``-1`` for every utterance (the rate is still exact)."""
    from itertools import product

    k = len(streams)
    n = len(utterances)
    if k ** n <= 4096:
        for combo in product(range(k), repeat=n):
            refs: list[list[str]] = [[] for _ in range(k)]
            for u, s in zip(utterances, combo):
                refs[s].extend(u)
            if sum(levenshtein(refs[s], streams[s]) for s in range(k)) == best:
                return list(combo)
    return [-1] * n  # too many to enumerate: the rate is exact, the assignment not reported


def orc_wer(reference: Iterable[Segment | Mapping[str, Any]],
            hypothesis: Iterable[Segment | Mapping[str, Any]]) -> MultiTalkerScore:
    """ORC-WER of ``hypothesis`` (its speakers are the streams) against ``reference``."""
    ref = _by_session(as_segments(reference, "reference"))
    hyp = _by_session(as_segments(hypothesis, "hypothesis"))
    total_e = total_n = 0
    sessions: dict[str, tuple[int, int]] = {}
    assignment: dict[str, Any] = {}
    for sid in sorted(set(ref) | set(hyp)):
        utts = [s.words.split() for s in sorted(ref.get(sid, []),
                                                 key=lambda s: (s.start_time, s.end_time))]
        h = _streams(hyp.get(sid, []))
        keys = sorted(h)
        e, combo = _orc_session(utts, [h[key] for key in keys])
        length = sum(len(u) for u in utts)
        sessions[sid] = (e, length)
        assignment[sid] = [keys[c] if c >= 0 else None for c in combo]
        total_e += e
        total_n += length
    return MultiTalkerScore(total_e, total_n, sessions, assignment)
