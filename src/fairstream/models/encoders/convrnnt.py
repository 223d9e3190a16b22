"""ConvRNN-T encoder (Radfar et al., Interspeech 2022), causal and streaming.

Layout: two convolutional branches read the same feature frames in parallel, as in the
paper; their outputs, one frame per ``subsampling`` feature frames, are concatenated and feed
an LSTM stack.

* **Local encoder** (``use_local``): ``local_layers`` Conv2d layers over time x frequency
  (kernel ``local_kernel`` in both, ``local_channels`` channels, ReLU). The first
  ``log2(subsampling)`` layers have stride 2 in time and in frequency, the others stride 1.
  Time is padded on the left only (causal); frequency by ``local_kernel // 2`` on both sides
  ("same": a stride-2 layer gives ``ceil(F / 2)`` bins). Channels x frequency are flattened.
* **Global encoder** (``use_global``): it consumes the subsampled feature frames: a causal
  stem maps the ``subsampling`` stacked feature frames ``j*s - s + 1 .. j*s`` of encoder
  frame ``j`` linearly to ``global_dim`` channels (a Conv2d spanning all F bins, stride
  ``s`` in time). Then ``global_blocks`` residual blocks; block ``i``: LayerNorm ->
  pointwise + GLU -> causal depthwise conv (kernel ``global_kernel``, dilation ``2**i``) ->
  LayerNorm -> SiLU -> pointwise -> squeeze-and-excitation -> dropout -> residual add; a
  final LayerNorm. No BatchNorm: its batch statistics would differ between a batch and a
  stream. The SE squeeze of frame ``t`` is the mean of the block's frames ``1..t``
  (``se_mode="causal"``), counting only the valid frames of an item; with
  ``se_mode="utterance"`` it is the mean over the whole valid part of the utterance (the
  offline, non-causal upper bound; such an encoder cannot stream).
* **Fusion**: concatenation -> linear -> LayerNorm; ``num_layers`` unidirectional LSTM
  layers as pre-norm residual blocks; a final LayerNorm and a projection to ``output_dim``.

Streaming: each causal conv keeps the part of its input not yet consumed by a stride step
(initially the zeros of the left padding), each depthwise conv the last frames of its input
(its left context), each SE its running sum (the count is the encoder frames emitted so
far), each LSTM layer its ``(h, c)``: all in :class:`ConvRNNTState`, so a chunked pass
computes exactly the frames of a full pass. Encoder frame ``j`` depends on feature frames
``<= j * subsampling`` in both branches: no lookahead (``right_context = 0``), any chunk size
works, and ``T`` feature frames give ``ceil(T / subsampling)`` encoder frames.

Dimension letters: B batch, T feature frames, t frames in a chunk, T' encoder frames,
F features (frequency bins), C channels, W buffered frames, H LSTM size, D output size.
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
    causal_out_lens,
    check_input,
    check_options,
    flatten_freq,
    lstm_stack,
    lstm_stack_stream,
    take_frames,
)
from fairstream.models.state import EncoderState

__all__ = ["ConvRNNTEncoder", "ConvRNNTOptions", "ConvRNNTState"]

_SE_MODES = ("causal", "utterance")


@dataclass(frozen=True)
class ConvRNNTOptions:
    """Options of :class:`ConvRNNTEncoder` (``model.encoder.kwargs`` of a ``convrnnt`` encoder).

    Attributes:
        subsampling: Time subsampling factor, a power of two (2, 4 or 8).
        local_layers: Conv2d layers of the local encoder (at least ``log2(subsampling)``).
        local_channels: Channels of each local conv layer.
        local_kernel: Kernel size of the local convs in time and frequency (odd).
        global_dim: Channels of the global encoder.
        global_blocks: Residual blocks of the global encoder (dilations 1, 2, 4, ...).
        global_kernel: Kernel size of the global depthwise convs.
        se_dim: Bottleneck size of each squeeze-and-excitation.
        num_layers: LSTM layers.
        hidden_dim: H, LSTM size (and the size of the residual stream).
        output_dim: D, encoder output size.
        dropout: Dropout inside the residual blocks during training.
        use_local: With the local encoder (ablation switch).
        use_global: With the global encoder (ablation switch; at least one of the two).
        se_mode: ``"causal"`` (running mean over frames 1..t; streams) or ``"utterance"``
            (mean over the whole utterance; offline only).
    """

    subsampling: int = 8
    local_layers: int = 4
    local_channels: int = 32
    local_kernel: int = 3
    global_dim: int = 128
    global_blocks: int = 6
    global_kernel: int = 3
    se_dim: int = 32
    num_layers: int = 2
    hidden_dim: int = 256
    output_dim: int = 256
    dropout: float = 0.1
    use_local: bool = True
    use_global: bool = True
    se_mode: str = "causal"

    def __post_init__(self) -> None:
        check_options(self)
        if not (self.use_local or self.use_global):
            raise ValueError("use_local and use_global are both false: one encoder must be on")
        if self.use_local and self.local_layers < int(math.log2(self.subsampling)):
            raise ValueError(
                f"local_layers {self.local_layers} < log2(subsampling "
                f"{self.subsampling}) strided layers"
            )
        if self.local_kernel % 2 == 0:
            raise ValueError(f"local_kernel must be odd ('same' in frequency), got "
                             f"{self.local_kernel}")
        if self.se_mode not in _SE_MODES:
            raise ValueError(f"se_mode must be one of {', '.join(_SE_MODES)}, got "
                             f"{self.se_mode!r}")
        if self.se_mode != "causal" and not self.use_global:
            raise ValueError(f"se_mode {self.se_mode!r} needs the global encoder "
                             f"(use_global is false)")


_DEFAULTS = ConvRNNTOptions()


@dataclass(frozen=True)
class ConvRNNTState(EncoderState):
    """Streaming state of :class:`ConvRNNTEncoder`.

    Attributes:
        conv_buffers: One ``(B, C_in, W, F_in)`` tensor per causal Conv2d (the local layers,
            then the global stem): the input frames not yet consumed by a stride step, valid
            ones first (zeros at the start of a stream: the causal padding of a full pass).
        conv_buffer_lens: One ``(B,)`` int64 tensor per causal Conv2d: valid buffer frames.
        dw_buffers: One ``(B, W, C)`` tensor per global block: the last ``W`` input frames
            of its depthwise conv (its left context; zeros at the start).
        se_sums: One ``(B, C)`` tensor per global block: the sum of the SE inputs over the
            encoder frames so far (the running mean divides it by ``frames_out``).
        h: One ``(B, H)`` tensor per LSTM layer: hidden state after the last frame.
        c: One ``(B, H)`` tensor per LSTM layer: cell state after the last frame.
        frames_in: ``(B,)`` int64, feature frames consumed so far.
        frames_out: ``(B,)`` int64, encoder frames emitted so far.
    """

    conv_buffers: tuple[Tensor, ...]
    conv_buffer_lens: tuple[Tensor, ...]
    dw_buffers: tuple[Tensor, ...]
    se_sums: tuple[Tensor, ...]
    h: tuple[Tensor, ...]
    c: tuple[Tensor, ...]
    frames_in: Tensor
    frames_out: Tensor

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-stream shapes of the tensors (conv buffer widths left out): what an encoder
        checks a state against."""
        convs = tuple((b.shape[1], b.shape[3]) for b in self.conv_buffers)
        rest = self.dw_buffers + self.se_sums + self.h + self.c
        return convs + tuple(tuple(t.shape[1:]) for t in rest)

    @staticmethod
    def stack(states: Sequence[ConvRNNTState]) -> ConvRNNTState:
        """One state holding the streams of ``states`` in order (batch sizes add up).

        Conv buffers of different widths are padded at their end (only each stream's first
        ``conv_buffer_lens`` frames are valid).

        Raises:
            InputDataError: on no states, or states of differently shaped encoders.
        """
        if not states:
            raise InputDataError("stack of no encoder states")
        first = states[0].shapes()
        for s in states[1:]:
            if s.shapes() != first:
                raise InputDataError(f"cannot stack states of differently shaped encoders: "
                                     f"{s.shapes()} vs {first}")
        return ConvRNNTState.concat(states, padded=("conv_buffers",))


def _gather_time(seq: Tensor, idx: Tensor) -> Tensor:
    """Frames ``idx[b]`` (``(B, N)``, clamped to the last frame) of each stream of ``seq``
    ``(B, C, L, F)``, as ``(B, C, N, F)``."""
    b, c, length, f = seq.shape
    idx = idx.clamp(max=max(length - 1, 0))
    return seq.gather(2, idx[:, None, :, None].expand(b, c, idx.shape[1], f))


class _CausalConv2d(nn.Conv2d):
    """Conv2d over ``(B, C, T, F)`` that is causal in time (left padding only) and pads the
    frequency axis by ``freq_pad`` on both sides."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int],
                 freq_pad: int) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=(0, freq_pad))
        self.time_kernel, self.time_stride = kernel[0], stride[0]

    def freq_out(self, f_in: int) -> int:
        """Frequency bins out for ``f_in`` in."""
        pad, k, s = self.padding[1], self.kernel_size[1], self.stride[1]
        return (f_in + 2 * cast(int, pad) - k) // s + 1

    def full(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """Whole sequences: ``(B, C, T, F), (B,) -> (B, C', ceil(T / s), F'), lengths``."""
        y = self(F.pad(x, (0, 0, self.time_kernel - 1, 0)))
        return y, causal_out_lens(lens, self.time_stride)

    def stream(self, buf: Tensor, buf_len: list[int], x: Tensor, x_lens: list[int]
               ) -> tuple[Tensor, list[int], Tensor, list[int]]:
        """Every complete window of ``buffer + new frames``; keep the rest.

        Frame counts are Python ints: on the few frames of a chunk, bookkeeping with tensor
        ops would cost more than the conv.

        Args:
            buf: ``(B, C, W, F)`` pending input frames, valid ones first.
            buf_len: Valid frames in ``buf`` per stream.
            x: ``(B, C, t, F)`` new input frames.
            x_lens: Valid new frames per stream.

        Returns:
            ``(y (B, C', n, F'), y_lens, remaining buffer, remaining buffer lengths)``.
        """
        k, s = self.time_kernel, self.time_stride
        if len(set(buf_len)) <= 1:
            seq = torch.cat([buf[:, :, : (buf_len[0] if buf_len else 0)], x], dim=2)
        else:  # streams with different pending frames: left-align each stream's frames
            seq = torch.cat([buf, x], dim=2)
            pos = torch.arange(seq.shape[2], device=x.device)[None]
            pending = torch.tensor(buf_len, device=x.device)[:, None]
            seq = _gather_time(seq, torch.where(pos < pending, pos, pos + buf.shape[2] - pending))
        total = [w + t for w, t in zip(buf_len, x_lens)]
        n = [(length - k) // s + 1 if length >= k else 0 for length in total]
        n_max = max(n, default=0)
        if n_max == 0:
            y = x.new_zeros(x.shape[0], self.out_channels, 0, self.freq_out(x.shape[3]))
        else:
            y = self(seq[:, :, : (n_max - 1) * s + k])
        rem_len = [length - m * s for length, m in zip(total, n)]
        width = max(rem_len, default=0)
        if len(set(n)) <= 1:
            rem = seq[:, :, n_max * s : n_max * s + width]
        else:
            start = torch.tensor(n, device=x.device)[:, None] * s
            rem = _gather_time(seq, start + torch.arange(width, device=x.device))
        return y, n, rem, rem_len


class _FrameStack(_CausalConv2d):
    """The global stem: a causal conv whose kernel spans ``s`` frames and all F bins with
    stride ``s`` in time, computed as a linear map of the stacked frames (the same
    arithmetic, without the conv kernel's set-up cost on short chunks)."""

    def __init__(self, c_out: int, frames: int, f_in: int) -> None:
        super().__init__(1, c_out, (frames, f_in), (frames, 1), 0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, L, F) -> (B, C, L // s, 1)``."""
        s = self.time_stride
        b, _, length, f = x.shape
        stacked = x[:, 0, : length - length % s].reshape(b, length // s, s * f)
        y = F.linear(stacked, self.weight.reshape(self.out_channels, -1), self.bias)
        return y.transpose(1, 2).unsqueeze(3)


class _GlobalBlock(nn.Module):
    """One residual block of the global encoder over ``(B, T', C)`` (see the module doc)."""

    def __init__(self, dim: int, kernel: int, dilation: int, se_dim: int, dropout: float
                 ) -> None:
        super().__init__()
        self.context = (kernel - 1) * dilation
        self.norm_in = nn.LayerNorm(dim)
        self.pw_in = nn.Linear(dim, 2 * dim)
        self.dw = nn.Conv1d(dim, dim, kernel, dilation=dilation, groups=dim)
        self.norm_mid = nn.LayerNorm(dim)
        self.pw_out = nn.Linear(dim, dim)
        self.se_down = nn.Linear(dim, se_dim)
        self.se_up = nn.Linear(se_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _depthwise(self, u: Tensor) -> Tensor:
        """``(B, W + t, C) -> (B, t, C)``: the conv over frames with their left context.

        ``self.dw`` holds the weights; they are applied as one multiply-add per tap, which on
        the few frames of a streaming chunk is many times faster than the conv kernel.
        """
        weight = self.dw.weight[:, 0]  # (C, K)
        step, t = self.dw.dilation[0], u.shape[1] - self.context
        out = torch.addcmul(cast(Tensor, self.dw.bias), u[:, :t], weight[:, 0])
        for k in range(1, weight.shape[1]):
            out = torch.addcmul(out, u[:, k * step : k * step + t], weight[:, k])
        return out

    def _pointwise(self, u: Tensor) -> Tensor:
        out: Tensor = self.pw_out(F.silu(self.norm_mid(u)))
        return out

    def _excite(self, x: Tensor, v: Tensor, squeeze: Tensor) -> Tensor:
        gate = torch.sigmoid(self.se_up(F.relu(self.se_down(squeeze))))
        out: Tensor = x + self.dropout(v * gate)
        return out

    def forward(self, x: Tensor, inv_count: Tensor, mask: Tensor | None) -> Tensor:
        """Whole sequences ``x (B, T', C)``.

        Args:
            x: ``(B, T', C)`` block input.
            inv_count: One over the frames the squeeze averages: ``(1, T', 1)`` (frame
                ``t`` averages frames ``1..t``), or ``(B, 1, 1)`` with ``mask``.
            mask: ``None`` for the causal running mean, or ``(B, T', 1)``, 1 on valid
                frames, for the mean over each whole utterance.
        """
        u = F.glu(self.pw_in(self.norm_in(x)), dim=-1)
        v = self._pointwise(self._depthwise(F.pad(u, (0, 0, self.context, 0))))
        total = v.cumsum(1) if mask is None else (v * mask).sum(1, keepdim=True)
        return self._excite(x, v, total * inv_count)

    def stream(self, x: Tensor, lens: list[int], buf: Tensor, se_sum: Tensor,
               inv_count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The next frames ``x (B, t, C)``, of which the first ``lens[b]`` are stream
        ``b``'s, after the left context ``buf (B, W, C)``, with the running SE sum ``se_sum
        (B, C)`` and ``inv_count (B, t, 1)``, one over the frames counted up to each frame.
        Returns the output, the new context and the new sum.

        A stream's frames past its ``lens`` come after its valid ones, so they change
        neither the running sums nor the depthwise conv of its valid frames: only the state
        taken at the end has to skip them.
        """
        if x.shape[1] == 0:
            return x, buf, se_sum
        u = F.glu(self.pw_in(self.norm_in(x)), dim=-1)
        seq = torch.cat([buf, u], dim=1)
        v = self._pointwise(self._depthwise(seq))
        total = se_sum[:, None] + v.cumsum(1)
        out = self._excite(x, v, total * inv_count)
        t, width = x.shape[1], self.context
        if len(set(lens)) == 1 and lens[0] == t:
            return out, seq[:, seq.shape[1] - width :], total[:, -1]
        idx = torch.tensor(lens, device=x.device)
        sums = torch.cat([se_sum[:, None], total], dim=1)
        return out, take_frames(seq, idx, width), take_frames(sums, idx, 1)[:, 0]


def _init_lstm(lstm: nn.LSTM) -> None:
    """Orthogonal recurrent gates, Xavier input weights, forget-gate bias 1, other biases 0."""
    hid = lstm.hidden_size
    params = dict(lstm.named_parameters())
    with torch.no_grad():
        for gate in params["weight_hh_l0"].split(hid):
            nn.init.orthogonal_(gate)
        nn.init.xavier_uniform_(params["weight_ih_l0"])
        params["bias_hh_l0"].zero_()
        params["bias_ih_l0"].zero_()
        params["bias_ih_l0"][hid : 2 * hid] = 1.0  # remember by default


class ConvRNNTEncoder(EncoderModule[ConvRNNTState]):
    """Local + global causal conv encoders feeding an LSTM stack (follows the encoder contract
    of :class:`~fairstream.models.encoders.base.StreamingEncoder`).

    Args:
        input_dim: F, feature size (80 log-mel bins).
        subsampling, local_layers, local_channels, local_kernel, global_dim, global_blocks,
            global_kernel, se_dim, num_layers, hidden_dim, output_dim, dropout, use_local,
            use_global, se_mode: See :class:`ConvRNNTOptions`.

    Raises:
        InputDataError: on an invalid option.
    """

    state_type = ConvRNNTState

    def __init__(
        self,
        input_dim: int = 80,
        *,
        subsampling: int = _DEFAULTS.subsampling,
        local_layers: int = _DEFAULTS.local_layers,
        local_channels: int = _DEFAULTS.local_channels,
        local_kernel: int = _DEFAULTS.local_kernel,
        global_dim: int = _DEFAULTS.global_dim,
        global_blocks: int = _DEFAULTS.global_blocks,
        global_kernel: int = _DEFAULTS.global_kernel,
        se_dim: int = _DEFAULTS.se_dim,
        num_layers: int = _DEFAULTS.num_layers,
        hidden_dim: int = _DEFAULTS.hidden_dim,
        output_dim: int = _DEFAULTS.output_dim,
        dropout: float = _DEFAULTS.dropout,
        use_local: bool = _DEFAULTS.use_local,
        use_global: bool = _DEFAULTS.use_global,
        se_mode: str = _DEFAULTS.se_mode,
    ) -> None:
        super().__init__()
        self.options = build_options(
            "ConvRNNTEncoder", ConvRNNTOptions,
            subsampling=subsampling, local_layers=local_layers,
            local_channels=local_channels, local_kernel=local_kernel,
            global_dim=global_dim, global_blocks=global_blocks,
            global_kernel=global_kernel, se_dim=se_dim, num_layers=num_layers,
            hidden_dim=hidden_dim, output_dim=output_dim, dropout=dropout,
            use_local=use_local, use_global=use_global, se_mode=se_mode,
        )
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.right_context = 0
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        self.utterance_se = se_mode == "utterance"
        convs: list[_CausalConv2d] = []
        fused = 0
        if use_local:
            strided = int(math.log2(subsampling))
            c_in, f_in = 1, input_dim
            for i in range(local_layers):
                s = 2 if i < strided else 1
                conv = _CausalConv2d(c_in, local_channels, (local_kernel, local_kernel),
                                     (s, s), local_kernel // 2)
                convs.append(conv)
                c_in, f_in = local_channels, conv.freq_out(f_in)
            fused += local_channels * f_in
        self.num_local = len(convs)
        self.blocks = nn.ModuleList()
        if use_global:
            convs.append(_FrameStack(global_dim, subsampling, input_dim))
            self.blocks.extend(
                _GlobalBlock(global_dim, global_kernel, 2**i, se_dim, dropout)
                for i in range(global_blocks)
            )
            self.global_norm = nn.LayerNorm(global_dim)
            fused += global_dim
        self.convs = nn.ModuleList(convs)
        self.input_proj = nn.Linear(fused, hidden_dim)
        self.input_norm = nn.LayerNorm(hidden_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.lstms = nn.ModuleList(
            nn.LSTM(hidden_dim, hidden_dim, batch_first=True) for _ in range(num_layers)
        )
        for lstm in self.lstms:
            _init_lstm(cast(nn.LSTM, lstm))
        self.dropout = nn.Dropout(dropout)
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, output_dim)
        self._state_shapes = self.init_state(1).shapes()

    def _conv_list(self) -> list[_CausalConv2d]:
        return [cast(_CausalConv2d, c) for c in self.convs]

    def _block_list(self) -> list[_GlobalBlock]:
        return [cast(_GlobalBlock, b) for b in self.blocks]

    # ------------------------------------------------------------------ full pass
    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Encode whole utterances.

        Args:
            x: ``(B, T, F)`` features.
            x_lens: ``(B,)`` int64 valid frames per item (each >= 1).

        Returns:
            ``y (B, T', D)`` and ``y_lens (B,)`` with ``y_lens = ceil(x_lens / subsampling)``
            (no auxiliary losses or statistics). Frames past an item's length do not change
            its valid frames.

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=False)
        convs = self._conv_list()
        parts: list[Tensor] = []
        lens = x_lens.to(torch.long)
        if self.num_local:
            h = x.unsqueeze(1)  # (B, 1, T, F)
            for conv in convs[: self.num_local]:
                h, lens = conv.full(h, lens)
                h = F.relu(h)
            parts.append(flatten_freq(h))
        if self.blocks:
            g, lens = convs[-1].full(x.unsqueeze(1), x_lens.to(torch.long))
            g = g.squeeze(3).transpose(1, 2)  # (B, T', C)
            steps = torch.arange(1, g.shape[1] + 1, device=g.device, dtype=g.dtype)
            mask: Tensor | None = None
            if self.utterance_se:
                mask = (steps[None] <= lens[:, None]).unsqueeze(2).to(g.dtype)
                inv_count = 1.0 / lens.to(g.dtype)[:, None, None]
            else:
                inv_count = (1.0 / steps)[None, :, None]
            for block in self._block_list():
                g = block(g, inv_count, mask)
            parts.append(self.global_norm(g))
        h = lstm_stack(self.norms, self.lstms, self.dropout, self._fuse(parts))
        return EncoderOutput(self.output_proj(self.output_norm(h)), lens)

    def _fuse(self, parts: list[Tensor]) -> Tensor:
        h = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        out: Tensor = self.dropout(self.input_norm(self.input_proj(h)))
        return out

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ConvRNNTState:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""
        convs = self._conv_list()
        shapes: list[tuple[int, int]] = []
        c_in, f_in = 1, self.input_dim
        for conv in convs[: self.num_local]:
            shapes.append((c_in, f_in))
            c_in, f_in = conv.out_channels, conv.freq_out(f_in)
        if self.blocks:
            shapes.append((1, self.input_dim))
        buffers = tuple(
            torch.zeros(batch_size, c, conv.time_kernel - 1, f, device=device, dtype=dtype)
            for conv, (c, f) in zip(convs, shapes)
        )
        dim = self.options.global_dim
        blocks = self._block_list()

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(batch_size, *shape, device=device, dtype=dtype)

        counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        return ConvRNNTState(
            conv_buffers=buffers,
            conv_buffer_lens=tuple(torch.full_like(counts, b.shape[2]) for b in buffers),
            dw_buffers=tuple(zeros(b.context, dim) for b in blocks),
            se_sums=tuple(zeros(dim) for _ in blocks),
            h=tuple(zeros(self.hidden_dim) for _ in self.lstms),
            c=tuple(zeros(self.hidden_dim) for _ in self.lstms),
            frames_in=counts,
            frames_out=counts.clone(),
        )

    def stream(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: ConvRNNTState | None = None,
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, ConvRNNTState]:
        """Encode the next chunk of each stream (see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.stream`).

        Any chunking works (``t`` and each stream's ``x_lens`` may be 0); ``final`` changes
        nothing here, as no frame is held back. The concatenated outputs equal those of
        :meth:`forward` on the concatenated input (to float tolerance).

        Raises:
            InputDataError: with ``se_mode="utterance"`` (it needs the whole utterance), on a
                wrong shape, a state of another encoder or of another batch size.
        """
        if self.utterance_se:
            raise InputDataError(
                "ConvRNNTEncoder with se_mode='utterance' cannot stream: its squeeze-and-"
                "excitation averages over the whole utterance; use se_mode='causal'"
            )
        state, given = self._stream_start(x, x_lens, state)
        if given and state.shapes() != self._state_shapes:
            raise InputDataError(
                f"stream state of another ConvRNNTEncoder shape: per-stream shapes "
                f"{state.shapes()}, this encoder's {self._state_shapes}"
            )
        x_lens = x_lens.to(torch.long)
        lens_in: list[int] = x_lens.tolist()
        convs = self._conv_list()
        bufs: list[Tensor] = []
        buf_lens: list[list[int]] = []
        parts: list[Tensor] = []
        lens = lens_in
        if self.num_local:
            h = x.unsqueeze(1)
            for i, conv in enumerate(convs[: self.num_local]):
                h, lens, rem, rem_len = conv.stream(
                    state.conv_buffers[i], state.conv_buffer_lens[i].tolist(), h, lens)
                h = F.relu(h)
                bufs.append(rem)
                buf_lens.append(rem_len)
            parts.append(flatten_freq(h))
        dw_bufs: list[Tensor] = []
        se_sums: list[Tensor] = []
        if self.blocks:
            g, lens, rem, rem_len = convs[-1].stream(
                state.conv_buffers[-1], state.conv_buffer_lens[-1].tolist(), x.unsqueeze(1),
                lens_in)
            bufs.append(rem)
            buf_lens.append(rem_len)
            g = g.squeeze(3).transpose(1, 2)
            steps = torch.arange(1, g.shape[1] + 1, device=g.device, dtype=g.dtype)
            inv_count = (1.0 / (state.frames_out[:, None] + steps)).unsqueeze(2)
            for block, dw_buf, se_sum in zip(self._block_list(), state.dw_buffers,
                                             state.se_sums):
                g, dw_buf, se_sum = block.stream(g, lens, dw_buf, se_sum, inv_count)
                dw_bufs.append(dw_buf)
                se_sums.append(se_sum)
            parts.append(self.global_norm(g))
        y_lens = torch.tensor(lens, dtype=torch.long, device=x.device)
        h, new_h, new_c = lstm_stack_stream(
            self.norms, self.lstms, self.dropout, self._fuse(parts), y_lens, state.h, state.c
        )
        y = self.output_proj(self.output_norm(h))
        new_state = ConvRNNTState(
            conv_buffers=tuple(bufs),
            conv_buffer_lens=tuple(torch.tensor(n, dtype=torch.long, device=x.device)
                                   for n in buf_lens),
            dw_buffers=tuple(dw_bufs),
            se_sums=tuple(se_sums),
            h=new_h,
            c=new_c,
            frames_in=state.frames_in + x_lens,
            frames_out=state.frames_out + y_lens,
        )
        return y, y_lens, new_state


register_encoder("convrnnt", options=ConvRNNTOptions)(ConvRNNTEncoder)
