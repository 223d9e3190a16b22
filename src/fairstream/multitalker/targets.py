"""Turn targets of multi-talker transducers: channel assignment, turn tokens, `<eot>` delays.

A session's reference is a list of turns (SegLST segments: speaker, start, end, words). A
multi-channel model (the separator-transducer-segmenter) writes each turn on one of its
output channels as ``<sot> words <eot>``; which channel a turn belongs to is decided here,
before training, from the reference alone:

* **HEAT assignment** (heuristic error assignment training, as in streaming unmixing and
  SURT): turns sorted by start time (then end time); each goes to the first channel that is
  free at its start, i.e. whose last turn has ended by then. Two overlapping turns therefore
  land on different channels, and a channel carries turns of any speaker in turn. A session
  with more simultaneous turns than channels cannot be assigned (a named error).
* **Serialized** (one channel, the multi-turn RNN-T baseline): every turn in start-time
  order on the single channel, overlapping or not.

The **end-of-turn latency penalty** makes emitting a turn's ``<eot>`` after the turn's true
end ``e`` costly. In the transducer lattice, emitting target ``u`` (an ``<eot>``) at encoder
frame ``t`` happens at time ``τ(t) = (t + 1) · Δ + r`` (the end of the frame, Δ the encoder
frame shift, plus ``r`` the encoder's lookahead, 0 for the causal encoders), and its
log-probability gets the bias

    b[t, u] = −λ · max(0, τ(t) − e)          (λ per second of delay)

(:func:`eot_delay_bias`; :func:`fairstream.losses.rnnt.rnnt_loss` adds it to the lattice
before the recursions, so training minimizes ``−log Σ_alignments P(alignment) ·
exp(−λ · delay(alignment))``: alignments that close turns late lose weight, the earlier ones
gain it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fairstream.errors import InputDataError
from fairstream.metrics.multitalker import Segment

__all__ = [
    "EOT",
    "SOT",
    "ChannelTarget",
    "channel_targets",
    "check_session",
    "eot_delay_bias",
    "heat_assign",
]

SOT = "<sot>"
EOT = "<eot>"
#: seconds a turn may reach past the end of its recording (rounding of times)
TIME_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class ChannelTarget:
    """The token sequence of one output channel of one session.

    Attributes:
        tokens: ``<sot> words <eot>`` of each turn on the channel, in time order (ids).
        eot_index: position in ``tokens`` of each turn's ``<eot>``.
        eot_end_s: the true end time (seconds) of each of those turns.
        turns: the turns on the channel, in order.
    """

    tokens: tuple[int, ...]
    eot_index: tuple[int, ...]
    eot_end_s: tuple[float, ...]
    turns: tuple[Segment, ...]


def _order(segments: Sequence[Segment]) -> list[int]:
    return sorted(range(len(segments)),
                  key=lambda i: (segments[i].start_time, segments[i].end_time))


def check_session(segments: Sequence[Segment], duration: float | None = None) -> None:
    """Refuse a session reference a model cannot be trained or scored on.

    Raises:
        InputDataError: naming the session and the turn: one speaker's turns overlap each
            other, or a turn starts before 0 or ends after the recording (``duration``,
            seconds, with a 10 ms tolerance).
    """
    by_speaker: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments:
        if seg.start_time < 0 or (duration is not None
                                  and seg.end_time > duration + TIME_TOLERANCE_S):
            raise InputDataError(
                f"session {seg.session_id}: turn of {seg.speaker} at {seg.start_time:.2f}-"
                f"{seg.end_time:.2f} s lies outside the recording (0-"
                f"{'?' if duration is None else f'{duration:.2f}'} s)")
        by_speaker[seg.speaker].append(seg)
    for speaker, turns in by_speaker.items():
        turns = sorted(turns, key=lambda s: (s.start_time, s.end_time))
        for a, b in zip(turns, turns[1:], strict=False):
            if b.start_time < a.end_time - 1e-9:
                raise InputDataError(
                    f"session {a.session_id}: turns of speaker {speaker} overlap "
                    f"({a.start_time:.2f}-{a.end_time:.2f} s and {b.start_time:.2f}-"
                    f"{b.end_time:.2f} s); one speaker's turns must not overlap")


def heat_assign(segments: Sequence[Segment], channels: int = 2) -> list[int]:
    """The channel of each turn (in the order given): first free channel at its start.

    Raises:
        InputDataError: more turns at once than ``channels`` (named), or ``channels < 1``.
    """
    if channels < 1:
        raise InputDataError(f"channels must be >= 1, got {channels}")
    free_at = [float("-inf")] * channels
    out = [0] * len(segments)
    for i in _order(segments):
        seg = segments[i]
        for c in range(channels):
            if free_at[c] <= seg.start_time + 1e-9:
                out[i] = c
                free_at[c] = seg.end_time
                break
        else:
            raise InputDataError(
                f"session {seg.session_id}: the turn of {seg.speaker} at {seg.start_time:.2f} s "
                f"overlaps {channels} other turns; a {channels}-channel model holds at most "
                f"{channels} at once")
    return out


def channel_targets(segments: Sequence[Segment], encode: Callable[[str], Sequence[int]],
                    sot_id: int, eot_id: int, channels: int = 2) -> list[ChannelTarget]:
    """The ``channels`` token sequences of one session: HEAT-assigned turns (``channels``
    ≥ 2), or every turn serialized in start order (``channels == 1``).

    Args:
        segments: the session's turns (any order).
        encode: text → token ids (the tokenizer's, without the turn tokens).
        sot_id, eot_id: ids of ``<sot>`` and ``<eot>``.
        channels: output channels.
    """
    assign = [0] * len(segments) if channels == 1 else heat_assign(segments, channels)
    per: list[list[int]] = [[] for _ in range(channels)]
    eot_at: list[list[int]] = [[] for _ in range(channels)]
    ends: list[list[float]] = [[] for _ in range(channels)]
    turns: list[list[Segment]] = [[] for _ in range(channels)]
    for i in _order(segments):
        c, seg = assign[i], segments[i]
        per[c] += [sot_id, *encode(seg.words), eot_id]
        eot_at[c].append(len(per[c]) - 1)
        ends[c].append(seg.end_time)
        turns[c].append(seg)
    return [ChannelTarget(tuple(per[c]), tuple(eot_at[c]), tuple(ends[c]), tuple(turns[c]))
            for c in range(channels)]


def eot_delay_bias(targets: Sequence[ChannelTarget], frames: int, max_tokens: int,
                   frame_s: float, weight: float, *, lookahead_s: float = 0.0
                   ) -> torch.Tensor:
    """(B, T, U) label bias of the end-of-turn latency penalty (see the module docstring):
    ``−weight · max(0, (t + 1) · frame_s + lookahead_s − end)`` at each ``<eot>``'s
    position, 0 elsewhere (``lookahead_s``: the encoder's right context, the audio it waits
    for after a frame).

    Args:
        targets: one channel target per row of the batch.
        frames: T, encoder frames of the (padded) batch.
        max_tokens: U, the (padded) token width.
        frame_s: seconds per encoder frame.
        weight: λ, per second of delay.
    """
    bias = torch.zeros(len(targets), frames, max_tokens, dtype=torch.float64)
    if weight == 0:
        return bias
    emit_s = (torch.arange(frames, dtype=torch.float64) + 1) * frame_s + lookahead_s
    for b, tgt in enumerate(targets):
        for u, end in zip(tgt.eot_index, tgt.eot_end_s, strict=True):
            if u < max_tokens:
                bias[b, :, u] = -weight * (emit_s - end).clamp_min(0.0)
    return bias
