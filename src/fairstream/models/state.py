"""Explicit streaming state for encoders and predictors.

Every state is a frozen dataclass with named fields: a stream's state goes into a call and a
new state comes back out; no per-stream state lives on an ``nn.Module``. ``None`` starts a
stream.

Dimension letters: B batch, L layers, H hidden units, C channels, F frequency bins,
k predictor context size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fairstream.errors import InputDataError

__all__ = [
    "LSTMEncoderState",
    "LSTMPredictorState",
    "PredictorState",
    "StatelessPredictorState",
    "cat_states",
]


@dataclass(frozen=True)
class LSTMEncoderState:
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

    @property
    def batch_size(self) -> int:
        """Number of streams held."""
        return int(self.frames_in.shape[0])

    def select(self, indices: Tensor) -> LSTMEncoderState:
        """Streams ``indices`` (``(N,)`` int64) of the batch, as a new state with batch ``N``."""
        idx = indices.to(device=self.frames_in.device, dtype=torch.long)
        return LSTMEncoderState(
            conv_buffers=tuple(b.index_select(0, idx) for b in self.conv_buffers),
            conv_buffer_lens=tuple(n.index_select(0, idx) for n in self.conv_buffer_lens),
            h=tuple(h.index_select(0, idx) for h in self.h),
            c=tuple(c.index_select(0, idx) for c in self.c),
            frames_in=self.frames_in.index_select(0, idx),
            frames_out=self.frames_out.index_select(0, idx),
        )

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
        buffers = []
        for layer in range(len(first.conv_buffers)):
            bufs = [s.conv_buffers[layer] for s in states]
            width = max(b.shape[2] for b in bufs)
            buffers.append(torch.cat([F.pad(b, (0, 0, 0, width - b.shape[2])) for b in bufs]))
        return LSTMEncoderState(
            conv_buffers=tuple(buffers),
            conv_buffer_lens=tuple(
                torch.cat([s.conv_buffer_lens[k] for s in states])
                for k in range(len(first.conv_buffer_lens))
            ),
            h=tuple(torch.cat([s.h[k] for s in states]) for k in range(len(first.h))),
            c=tuple(torch.cat([s.c[k] for s in states]) for k in range(len(first.c))),
            frames_in=torch.cat([s.frames_in for s in states]),
            frames_out=torch.cat([s.frames_out for s in states]),
        )


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
