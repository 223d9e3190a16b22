"""Decoding results as named dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hypothesis", "frame_seconds"]


def frame_seconds(subsampling: int, frame_shift: float = 0.01) -> float:
    """Seconds per encoder frame: ``subsampling`` feature frames of ``frame_shift`` seconds."""
    return subsampling * frame_shift


@dataclass(frozen=True)
class Hypothesis:
    """One decoded token sequence.

    Attributes:
        tokens: Token ids (blank excluded).
        frames: Encoder frame index at which each token was emitted.
        timestamps: Emission time of each token in seconds from the start of the audio
            (``frame * subsampling * frame_shift``).
        score: Log-probability of the decoding path (blanks included); for beam search
            the log-sum over merged paths with the same tokens.
    """

    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    timestamps: tuple[float, ...]
    score: float

    @classmethod
    def from_frames(
        cls,
        tokens: tuple[int, ...],
        frames: tuple[int, ...],
        score: float,
        *,
        seconds_per_frame: float,
    ) -> Hypothesis:
        """Build a hypothesis, converting encoder frames to seconds."""
        return cls(
            tokens=tuple(int(t) for t in tokens),
            frames=tuple(int(f) for f in frames),
            timestamps=tuple(round(f * seconds_per_frame, 6) for f in frames),
            score=float(score),
        )
