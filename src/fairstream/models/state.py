"""Explicit streaming state for encoders and predictors.

Every state is a frozen dataclass with named fields: a stream's state goes into a call and a
new state comes back out; no per-stream state lives on an ``nn.Module``. ``None`` starts a
stream.

Dimension letters: B batch, L layers, H hidden units, C channels, F frequency bins,
k predictor context size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from fairstream.errors import InputDataError

__all__ = [
    "EncoderState",
    "LSTMEncoderState",
    "LSTMPredictorState",
    "PredictorState",
    "StatelessPredictorState",
    "cat_padded",
    "cat_states",
]


_S = TypeVar("_S", bound="EncoderState")


class EncoderState:
    """Base of the frozen dataclass states of the encoders: batching by stream.

    Every field of a subclass is a ``(B, ...)`` tensor or a tuple of them, batch first, and
    ``frames_in`` is one of them.
    """

    frames_in: Tensor

    @property
    def batch_size(self) -> int:
        """Number of streams held."""
        return int(self.frames_in.shape[0])

    def select(self: _S, indices: Tensor) -> _S:
        """Streams ``indices`` (``(N,)`` int64) of the batch, as a new state with batch ``N``."""
        idx = indices.to(device=self.frames_in.device, dtype=torch.long)
        parts: dict[str, Tensor | tuple[Tensor, ...]] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            parts[f.name] = (
                tuple(v.index_select(0, idx) for v in value) if isinstance(value, tuple)
                else value.index_select(0, idx)
            )
        return type(self)(**parts)

    @classmethod
    def concat(cls: type[_S], states: Sequence[_S], padded: Sequence[str] = ()) -> _S:
        """The streams of ``states`` in order, field by field (for ``stack`` methods, which
        check first that the states come from encoders of one shape).

        Args:
            states: At least one state of this class.
            padded: Fields whose tensors may differ in their other dims: each is padded at
                the end of those dims to the largest size before concatenation.
        """
        parts: dict[str, Tensor | tuple[Tensor, ...]] = {}
        for f in dataclasses.fields(states[0]):  # type: ignore[arg-type]
            join = cat_padded if f.name in padded else torch.cat
            values = [getattr(s, f.name) for s in states]
            parts[f.name] = (
                tuple(join([v[k] for v in values]) for k in range(len(values[0])))
                if isinstance(values[0], tuple) else join(values)
            )
        return cls(**parts)


def cat_padded(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate along dim 0, padding every other dim at its end to the largest size."""
    sizes = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pad: list[int] = []
        for d in reversed(range(1, t.dim())):
            pad += [0, sizes[d - 1] - t.shape[d]]
        padded.append(F.pad(t, pad) if any(pad) else t)
    return torch.cat(padded)


@dataclass(frozen=True)
class LSTMEncoderState(EncoderState):
    """Streaming state of :class:`fairstream.models.encoders.lstm.LSTMEncoder`.

    Attributes:
        conv_buffers: One tensor per subsampling conv layer, shape ``(B, C_in, W, F_in)``:
            the left context of that layer's input not yet consumed by a stride step
            (zeros at the start of a stream, exactly the causal padding of a full pass).
        conv_buffer_lens: One ``(B,)`` int64 tensor per conv layer: how many frames of the
            buffer are valid for each stream (valid frames come first).
        h: One ``(B, H)`` tensor per LSTM layer: hidden state after the last frame.
        c: One ``(B, H)`` tensor per LSTM layer: cell state after the last frame.
        frames_in: ``(B,)`` int64, feature frames consumed so far.
        frames_out: ``(B,)`` int64, encoder frames emitted so far.
    """

    conv_buffers: tuple[Tensor, ...]
    conv_buffer_lens: tuple[Tensor, ...]
    h: tuple[Tensor, ...]
    c: tuple[Tensor, ...]
    frames_in: Tensor
    frames_out: Tensor

    @staticmethod
    def stack(states: Sequence[LSTMEncoderState]) -> LSTMEncoderState:
        """One state holding the streams of ``states`` in order (batch sizes add up).

        Conv buffers of different widths are padded at their end (only each stream's first
        ``conv_buffer_lens`` frames are valid).

        Raises:
            InputDataError: on no states, or states of differently shaped encoders.
        """
        if not states:
            raise InputDataError("stack of no encoder states")
        first = states[0]
        if any(len(s.conv_buffers) != len(first.conv_buffers) or len(s.h) != len(first.h)
               for s in states):
            raise InputDataError("cannot stack states of encoders with different layer counts")
        return LSTMEncoderState.concat(states, padded=("conv_buffers",))


@dataclass(frozen=True)
class StatelessPredictorState:
    """State of the stateless predictor: the last ``k`` tokens seen (blank-padded).

    Attributes:
        context: ``(B, k)`` int64, oldest token first.
    """

    context: Tensor

    def select(self, index: Tensor) -> StatelessPredictorState:
        """Rows ``index`` (``(N,)`` int64) of the batch, as a new state with batch ``N``."""
        return StatelessPredictorState(context=self.context.index_select(0, index))

    def where(self, mask: Tensor, other: StatelessPredictorState) -> StatelessPredictorState:
        """Take rows of ``self`` where ``mask`` ``(B,)`` is true and rows of ``other`` elsewhere."""
        return StatelessPredictorState(
            context=torch.where(mask.unsqueeze(1), self.context, other.context)
        )


@dataclass(frozen=True)
class LSTMPredictorState:
    """State of the LSTM predictor.

    Attributes:
        h: ``(L, B, H)`` hidden states.
        c: ``(L, B, H)`` cell states.
    """

    h: Tensor
    c: Tensor

    def select(self, index: Tensor) -> LSTMPredictorState:
        """Rows ``index`` (``(N,)`` int64) of the batch, as a new state with batch ``N``."""
        return LSTMPredictorState(h=self.h.index_select(1, index), c=self.c.index_select(1, index))

    def where(self, mask: Tensor, other: LSTMPredictorState) -> LSTMPredictorState:
        """Take rows of ``self`` where ``mask`` ``(B,)`` is true and rows of ``other`` elsewhere."""
        m = mask.view(1, -1, 1)
        return LSTMPredictorState(
            h=torch.where(m, self.h, other.h), c=torch.where(m, self.c, other.c)
        )


PredictorState = StatelessPredictorState | LSTMPredictorState


def cat_states(states: list[PredictorState]) -> PredictorState:
    """Concatenate predictor states of one kind along the batch."""
    first = states[0]
    if isinstance(first, StatelessPredictorState):
        return StatelessPredictorState(
            context=torch.cat([s.context for s in states], dim=0)  # type: ignore[union-attr]
        )
    return LSTMPredictorState(
        h=torch.cat([s.h for s in states], dim=1),  # type: ignore[union-attr]
        c=torch.cat([s.c for s in states], dim=1),  # type: ignore[union-attr]
    )
