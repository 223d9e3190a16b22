"""Causal ContextNet encoder (Han et al. 2020) with a running-mean squeeze-and-excitation.

Layout: ``num_blocks`` convolution blocks C0..Cn. A block is ``layers_per_block`` causal
depthwise-separable conv layers (depthwise conv of ``kernel_size`` with left padding only →
pointwise → LayerNorm over channels → Swish), a squeeze-and-excitation (SE) whose squeeze at
frame ``t`` is the mean of the block's frames ``1..t`` (not the utterance mean, which cannot
stream), and a residual connection (a pointwise projection when the channels or the frame rate
change): ``block(x) = Swish(dropout(SE(layers(x))) + residual(x))``. The first ``log2(s)``
blocks, ``s = subsampling``, have stride 2 after their first depthwise conv and in their
residual (only the first depthwise conv runs at the feature rate: the compute of the LSTM
baseline's conv front end, where a full-rate first block would double the cost of a training
step); a final linear layer projects to ``output_dim``. LayerNorm, not BatchNorm: batch
statistics would make a frame depend on the other streams of a batch.

Causality: a stride-2 layer's output frame ``j`` is its stride-1 output at input frame ``2j``
(it sees input frames ``2j - kernel_size + 1 .. 2j``, zeros before the start), and the
strided residual takes input frame ``2j``; so ``T`` feature frames give ``ceil(T / s)``
encoder frames and encoder frame ``j`` depends on feature frames ``<= j * s`` only.

Streaming: each depthwise conv keeps the last ``kernel_size - 1`` frames of its input in
:class:`ContextNetEncoderState` (zeros at the start of a stream: the causal padding of the
full pass), each SE block its running sum and frame count. Which new frames a stride-2 layer
keeps follows from how many frames the layer has seen (the parity of its input position), so
a stream may receive any number of frames per call (``chunk_frames_multiple = 1``, no
lookahead) and the full pass runs the same code from a fresh state, without loops over frames.

Dimension letters: B batch, T input frames, t frames in a chunk, T' encoder frames,
F features, C channels, D output size, K kernel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.encoders import register_encoder
from fairstream.models.encoders.base import EncoderOutput
from fairstream.models.encoders.common import (
    EncoderModule,
    build_options,
    causal_running_mean,
    check_input,
    check_options,
    running_mean_all_valid,
    take_frames,
)
from fairstream.models.state import EncoderState

__all__ = [
    "ContextNetEncoder",
    "ContextNetEncoderOptions",
    "ContextNetEncoderState",
    "causal_running_mean",
]


@dataclass(frozen=True)
class ContextNetEncoderOptions:
    """Options of :class:`ContextNetEncoder` (``model.encoder.kwargs`` of a ``contextnet``).

    Attributes:
        subsampling: Time subsampling factor, a power of two (2, 4 or 8): stride 2 in the
            first ``log2(subsampling)`` blocks.
        channels: C, width of every block.
        num_blocks: Convolution blocks; at least ``log2(subsampling)``.
        layers_per_block: Depthwise-separable conv layers in each block.
        kernel_size: K, depthwise kernel size (frames of left context of a layer: K - 1).
        se_reduction: Bottleneck factor of the SE layers (C // se_reduction units).
        dropout: Dropout on each block's SE output during training.
        output_dim: D, encoder output size.
    """

    subsampling: int = 8
    channels: int = 240
    num_blocks: int = 6
    layers_per_block: int = 4
    kernel_size: int = 5
    se_reduction: int = 8
    dropout: float = 0.1
    output_dim: int = 256

    def __post_init__(self) -> None:
        check_options(self)
        strided = int(math.log2(self.subsampling))
        if self.num_blocks < strided:
            raise ValueError(
                f"num_blocks must be >= {strided} for subsampling {self.subsampling} "
                f"(the first {strided} blocks have stride 2), got {self.num_blocks}"
            )
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if self.se_reduction > self.channels:
            raise ValueError(
                f"se_reduction {self.se_reduction} exceeds channels {self.channels}"
            )


_DEFAULTS = ContextNetEncoderOptions()


@dataclass(frozen=True)
class ContextNetEncoderState(EncoderState):
    """Streaming state of :class:`ContextNetEncoder`.

    Attributes:
        conv_buffers: One ``(B, K - 1, C_in)`` tensor per depthwise conv layer (blocks in
            order, layers in order): the last K - 1 input frames of that layer (zeros before
            the start of a stream, the causal padding of a full pass).
        se_sums: One ``(B, C)`` tensor per block: sum of the block's SE input over the frames
            so far (padding excluded).
        se_counts: One ``(B,)`` int64 tensor per block: frames in ``se_sums``.
        frames_in: ``(B,)`` int64, feature frames consumed so far.
        frames_out: ``(B,)`` int64, encoder frames emitted so far.
    """

    conv_buffers: tuple[Tensor, ...]
    se_sums: tuple[Tensor, ...]
    se_counts: tuple[Tensor, ...]
    frames_in: Tensor
    frames_out: Tensor

    @staticmethod
    def stack(states: Sequence[ContextNetEncoderState]) -> ContextNetEncoderState:
        """One state holding the streams of ``states`` in order (batch sizes add up).

        Raises:
            InputDataError: on no states, or states of differently shaped encoders.
        """
        if not states:
            raise InputDataError("stack of no encoder states")
        shapes = [
            ([b.shape[1:] for b in s.conv_buffers], [m.shape[1:] for m in s.se_sums])
            for s in states
        ]
        if any(shape != shapes[0] for shape in shapes):
            raise InputDataError("cannot stack states of differently shaped ContextNet encoders")
        return ContextNetEncoderState.concat(states)


@dataclass(frozen=True)
class _Frames:
    """Where a chunk's frames stand at one frame rate.

    Attributes:
        lens: ``(B,)`` int64 valid new frames of each stream.
        seen: ``(B,)`` int64 frames of each stream before the chunk.
        common_len: ``lens`` when all streams share it, else ``None``.
        common_seen: ``seen`` when all streams share it, else ``None``.
    """

    lens: Tensor
    seen: Tensor
    common_len: int | None
    common_seen: int | None

    @staticmethod
    def of(lens: Tensor, seen: Tensor) -> _Frames:
        """Describe ``lens`` new frames after ``seen`` (finding the shared values)."""
        lens_set, seen_set = set(lens.tolist()), set(seen.tolist())
        return _Frames(
            lens,
            seen,
            lens_set.pop() if len(lens_set) == 1 else 0 if not lens_set else None,
            seen_set.pop() if len(seen_set) == 1 else 0 if not seen_set else None,
        )

    def halved(self) -> _Frames:
        """The frames a stride-2 layer keeps: those at even positions of the stream."""
        lens = (self.seen + self.lens + 1) // 2 - (self.seen + 1) // 2
        n, before = self.common_len, self.common_seen
        if before is None:
            return _Frames(lens, (self.seen + 1) // 2, None, None)
        common_len = None if n is None else (before + n + 1) // 2 - (before + 1) // 2
        return _Frames(lens, (self.seen + 1) // 2, common_len, (before + 1) // 2)

    def take_even(self, x: Tensor, kept: _Frames) -> Tensor:
        """Of the chunk ``x (B, t, C)`` the frames at even stream positions, ``kept``'s frames."""
        if self.common_seen is not None:
            n = kept.common_len if kept.common_len is not None else int(kept.lens.max())
            start = self.common_seen % 2
            return x[:, start : start + 2 * n : 2]
        index = (self.seen % 2).unsqueeze(1) + 2 * torch.arange(
            int(kept.lens.max()), device=x.device
        )
        index = index.clamp(max=max(x.shape[1] - 1, 0))
        return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


class _SqueezeExcitation(nn.Module):
    """SE with a causal squeeze: frame ``t`` is scaled by a gate of the mean of ``1..t``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.down = nn.Linear(channels, channels // reduction)
        self.up = nn.Linear(channels // reduction, channels)

    def forward(
        self, x: Tensor, frames: _Frames, prev_sum: Tensor, prev_count: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, t, C)`` → scaled ``x``, new running sum and count (the count of earlier
        frames equals ``frames.seen``)."""
        if x.shape[1] == 0:
            return x, prev_sum, prev_count
        if frames.common_len == x.shape[1] and frames.common_seen is not None:
            mean, new_sum = running_mean_all_valid(x, prev_sum, frames.common_seen)
            new_count = prev_count + frames.common_len
        else:
            mean, new_sum, new_count = causal_running_mean(x, frames.lens, prev_sum, prev_count)
        gate = torch.sigmoid(self.up(F.silu(self.down(mean))))
        return x * gate, new_sum, new_count


# chunks up to this many frames use a multiply-and-sum depthwise conv: faster than conv1d's
# set-up for the few frames of a streaming chunk, slower for whole utterances
_SHORT_CHUNK = 32


class _SeparableConv(nn.Module):
    """Causal depthwise conv (:meth:`depthwise_step`) → pointwise → LayerNorm → Swish
    (:meth:`finish`); a stride-2 layer keeps every other frame in between."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(
            in_channels, in_channels, kernel_size, groups=in_channels, bias=False
        )
        self.pointwise = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)

    def depthwise_step(self, x: Tensor, buf: Tensor, frames: _Frames) -> tuple[Tensor, Tensor]:
        """Stride-1 depthwise conv of ``x (B, t, C_in)`` after ``buf``, and the new buffer."""
        t = x.shape[1]
        if t == 0:
            return x, buf
        seq = torch.cat([buf, x], dim=1)
        width = self.kernel_size - 1
        if t <= _SHORT_CHUNK:
            weight = self.depthwise.weight.squeeze(1)  # (C_in, K)
            h = (seq.unfold(1, self.kernel_size, 1) * weight).sum(-1)
        else:
            h = self.depthwise(seq.transpose(1, 2)).transpose(1, 2)
        if frames.common_len is not None:
            new_buf = seq[:, frames.common_len : frames.common_len + width]
        else:
            new_buf = take_frames(seq, frames.lens, width)
        return h, new_buf

    def finish(self, h: Tensor) -> Tensor:
        """Pointwise → LayerNorm → Swish on depthwise outputs ``(B, n, C_in)``."""
        return F.silu(self.norm(self.pointwise(h)))


class _ContextBlock(nn.Module):
    """Separable conv layers, causal SE and residual; the first layer may have stride 2."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        num_layers: int,
        kernel_size: int,
        stride: int,
        se_reduction: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.layers = nn.ModuleList(
            _SeparableConv(in_channels if i == 0 else channels, channels, kernel_size)
            for i in range(num_layers)
        )
        self.se = _SqueezeExcitation(channels, se_reduction)
        self.dropout = nn.Dropout(dropout)
        self.residual: nn.Module = (
            nn.Linear(in_channels, channels)
            if in_channels != channels or stride != 1 else nn.Identity()
        )

    def forward(
        self,
        x: Tensor,
        frames: _Frames,
        bufs: Sequence[Tensor],
        se_sum: Tensor,
        se_count: Tensor,
    ) -> tuple[Tensor, _Frames, list[Tensor], Tensor, Tensor]:
        """Process the chunk ``x (B, t, C_in)`` of each stream.

        Args:
            x: New input frames, as ``frames`` describes them (a stride-2 block keeps the
                frames at even stream positions).
            frames: Valid new frames and frames before them, at the block's input rate.
            bufs: Conv buffers of the layers.
            se_sum, se_count: Running SE sum ``(B, C)`` and count ``(B,)``.

        Returns:
            ``(y (B, t', C), frames at the output rate, new buffers, new SE sum and count)``.
        """
        h, skip = x, x
        new_bufs: list[Tensor] = []
        for j, layer in enumerate(cast(Sequence[_SeparableConv], self.layers)):
            h, buf = layer.depthwise_step(h, bufs[j], frames)
            new_bufs.append(buf)
            if j == 0 and self.stride == 2:
                kept = frames.halved()
                h, skip = frames.take_even(h, kept), frames.take_even(x, kept)
                frames = kept
            h = layer.finish(h)
        h, se_sum, se_count = self.se(h, frames, se_sum, se_count)
        if self.training:
            h = self.dropout(h)
        y = F.silu(h + self.residual(skip))
        return y, frames, new_bufs, se_sum, se_count


@register_encoder("contextnet", options=ContextNetEncoderOptions)
class ContextNetEncoder(EncoderModule[ContextNetEncoderState]):
    """Causal ContextNet encoder (follows the encoder contract of
    :class:`~fairstream.models.encoders.base.StreamingEncoder`).

    Args:
        input_dim: F, feature size (80 log-mel bins).
        subsampling, channels, num_blocks, layers_per_block, kernel_size, se_reduction,
            dropout, output_dim: See :class:`ContextNetEncoderOptions`.

    Raises:
        InputDataError: on an invalid option.
    """

    state_type = ContextNetEncoderState

    def __init__(
        self,
        input_dim: int = 80,
        *,
        subsampling: int = _DEFAULTS.subsampling,
        channels: int = _DEFAULTS.channels,
        num_blocks: int = _DEFAULTS.num_blocks,
        layers_per_block: int = _DEFAULTS.layers_per_block,
        kernel_size: int = _DEFAULTS.kernel_size,
        se_reduction: int = _DEFAULTS.se_reduction,
        dropout: float = _DEFAULTS.dropout,
        output_dim: int = _DEFAULTS.output_dim,
    ) -> None:
        super().__init__()
        self.options = build_options(
            "ContextNetEncoder", ContextNetEncoderOptions, subsampling=subsampling,
            channels=channels, num_blocks=num_blocks, layers_per_block=layers_per_block,
            kernel_size=kernel_size, se_reduction=se_reduction, dropout=dropout,
            output_dim=output_dim,
        )
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.channels = channels
        self.right_context = 0
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        strided = int(math.log2(subsampling))
        self.blocks = nn.ModuleList(
            _ContextBlock(
                input_dim if i == 0 else channels,
                channels,
                num_layers=layers_per_block,
                kernel_size=kernel_size,
                stride=2 if i < strided else 1,
                se_reduction=se_reduction,
                dropout=dropout,
            )
            for i in range(num_blocks)
        )
        self.output_proj = nn.Linear(channels, output_dim)
        # input channels of every depthwise layer, blocks in order
        self._buffer_channels = [
            input_dim if i == 0 and j == 0 else channels
            for i in range(num_blocks)
            for j in range(layers_per_block)
        ]

    # ------------------------------------------------------------------ full pass
    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Encode whole utterances ``x (B, T, F)`` of ``x_lens`` frames (each >= 1; see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.forward`): ``y_lens =
        ceil(x_lens / subsampling)``, no auxiliary losses or statistics.

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=False)
        state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        y, y_lens, _ = self._run(x, x_lens.to(torch.long), state)
        return EncoderOutput(y, y_lens)

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ContextNetEncoderState:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""
        width = self.options.kernel_size - 1
        counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        return ContextNetEncoderState(
            conv_buffers=tuple(
                torch.zeros(batch_size, width, c, device=device, dtype=dtype)
                for c in self._buffer_channels
            ),
            se_sums=tuple(
                torch.zeros(batch_size, self.channels, device=device, dtype=dtype)
                for _ in self.blocks
            ),
            se_counts=tuple(counts.clone() for _ in self.blocks),
            frames_in=counts,
            frames_out=counts.clone(),
        )

    def stream(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: ContextNetEncoderState | None = None,
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, ContextNetEncoderState]:
        """Encode the next chunk of each stream (see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.stream`).

        Any chunking works (``t`` and each stream's ``x_lens`` may be 0); ``final`` changes
        nothing here, as no frame is held back. The concatenated outputs equal those of
        :meth:`forward` on the concatenated input (to float tolerance).

        Raises:
            InputDataError: on a wrong shape, a state of another encoder, or a batch size
                different from the state's.
        """
        state, given = self._stream_start(x, x_lens, state)
        if given:
            self._check_shapes(state)
        return self._run(x, x_lens.to(torch.long), state)

    def _check_shapes(self, state: ContextNetEncoderState) -> None:
        width = self.options.kernel_size - 1
        expected = [(width, c) for c in self._buffer_channels]
        got = [tuple(b.shape[1:]) for b in state.conv_buffers]
        sums = [tuple(s.shape[1:]) for s in state.se_sums]
        if got != expected or sums != [(self.channels,)] * len(self.blocks):
            raise InputDataError(
                f"ContextNetEncoderState of another shape: conv buffers {got}, SE sums {sums}; "
                f"this encoder needs {expected} and {[(self.channels,)] * len(self.blocks)}"
            )

    def _run(
        self, x: Tensor, x_lens: Tensor, state: ContextNetEncoderState
    ) -> tuple[Tensor, Tensor, ContextNetEncoderState]:
        """The blocks and the output projection on a chunk, from ``state``."""
        per_block = self.options.layers_per_block
        h = x
        frames = _Frames.of(x_lens, state.frames_in)
        bufs: list[Tensor] = []
        sums: list[Tensor] = []
        counts: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            h, frames, new_bufs, se_sum, se_count = block(
                h,
                frames,
                state.conv_buffers[i * per_block : (i + 1) * per_block],
                state.se_sums[i],
                state.se_counts[i],
            )
            bufs.extend(new_bufs)
            sums.append(se_sum)
            counts.append(se_count)
        y = self.output_proj(h)
        new_state = ContextNetEncoderState(
            conv_buffers=tuple(bufs),
            se_sums=tuple(sums),
            se_counts=tuple(counts),
            frames_in=state.frames_in + x_lens,
            frames_out=state.frames_out + frames.lens,
        )
        return y, frames.lens, new_state
