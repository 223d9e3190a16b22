"""Causal LSTM encoder with causal convolutional subsampling (the streaming RNN-T baseline).

Layout: ``n`` Conv2d layers (kernel 3x3, stride 2 in time and frequency, ReLU; time padded on
the left only, so an output frame never sees a later input frame) give ``2**n`` time
subsampling; a linear projection + LayerNorm; ``num_layers`` uni-directional LSTM layers as
pre-norm residual blocks; a final LayerNorm and output projection.

Streaming: each conv layer keeps the part of its input not yet consumed by a stride step
(initially the zeros of the left padding) in :class:`~fairstream.models.state.LSTMEncoderState`,
so a chunked pass computes exactly the frames of a full pass; no lookahead is used
(``right_context = 0``) and any chunk size works. With ``T`` input frames the encoder emits
``ceil(T / 2**n)`` frames whatever the chunking; one input frame is enough for one output
frame (output frame ``j`` depends on input frames ``<= j * 2**n``).

Dimension letters: B batch, T input frames, t frames in a chunk, T' encoder frames,
F features, C channels, H LSTM size, D output size.
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
from fairstream.models.state import LSTMEncoderState

__all__ = ["LSTMEncoder", "LSTMEncoderOptions"]

_KERNEL = 3
_STRIDE = 2


def _check_input(x: Tensor, x_lens: Tensor, input_dim: int, *, allow_empty: bool) -> None:
    if x.dim() != 3 or x.shape[2] != input_dim:
        raise InputDataError(
            f"encoder input must have shape (B, T, {input_dim}), got {tuple(x.shape)}"
        )
    if x_lens.dim() != 1 or x_lens.shape[0] != x.shape[0]:
        raise InputDataError(f"x_lens must have shape ({x.shape[0]},), got {tuple(x_lens.shape)}")
    if x_lens.numel():
        if int(x_lens.max()) > x.shape[1]:
            raise InputDataError(
                f"x_lens max {int(x_lens.max())} exceeds the {x.shape[1]} frames of the input"
            )
        bad = torch.nonzero(x_lens < (0 if allow_empty else 1)).flatten().tolist()
        if bad:
            what = "negative length" if allow_empty else "no feature frames (empty input)"
            raise InputDataError(f"batch item(s) {bad} have {what}; lengths {x_lens[bad].tolist()}")


def _conv_out_len(lens: Tensor) -> Tensor:
    """Output frames of one causal stride-2 layer for ``lens`` input frames."""
    return torch.where(lens > 0, (lens - 1) // _STRIDE + 1, torch.zeros_like(lens))


@dataclass(frozen=True)
class LSTMEncoderOptions:
    """Options of :class:`LSTMEncoder` (``model.encoder.kwargs`` of an ``lstm`` encoder).

    Attributes:
        subsampling: Time subsampling factor, a power of two (2, 4 or 8).
        conv_channels: C, channels of the subsampling convolutions.
        num_layers: LSTM layers.
        hidden_dim: H, LSTM size (and the size of the residual stream).
        output_dim: D, encoder output size.
        dropout: Dropout inside the residual blocks during training.
    """

    subsampling: int = 4
    conv_channels: int = 32
    num_layers: int = 3
    hidden_dim: int = 320
    output_dim: int = 320
    dropout: float = 0.1

    def __post_init__(self) -> None:
        # ValueError, not InputDataError: the config parser adds the key path to it
        if self.subsampling not in (2, 4, 8):
            raise ValueError(f"subsampling must be 2, 4 or 8, got {self.subsampling}")
        small = {k: v for k, v in vars(self).items() if k != "dropout" and v < 1}
        if small:
            raise ValueError(f"options must be >= 1, got {small}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


_DEFAULTS = LSTMEncoderOptions()


class LSTMEncoder(nn.Module):
    """Causal conv-subsampling + LSTM encoder (follows the encoder contract of
    :class:`~fairstream.models.encoders.base.StreamingEncoder`).

    Args:
        input_dim: F, feature size (80 log-mel bins).
        subsampling, conv_channels, num_layers, hidden_dim, output_dim, dropout: See
            :class:`LSTMEncoderOptions`.

    Raises:
        InputDataError: on an invalid option.
    """

    def __init__(
        self,
        input_dim: int = 80,
        *,
        subsampling: int = _DEFAULTS.subsampling,
        conv_channels: int = _DEFAULTS.conv_channels,
        num_layers: int = _DEFAULTS.num_layers,
        hidden_dim: int = _DEFAULTS.hidden_dim,
        output_dim: int = _DEFAULTS.output_dim,
        dropout: float = _DEFAULTS.dropout,
    ) -> None:
        super().__init__()
        try:
            self.options = LSTMEncoderOptions(
                subsampling=subsampling,
                conv_channels=conv_channels,
                num_layers=num_layers,
                hidden_dim=hidden_dim,
                output_dim=output_dim,
                dropout=dropout,
            )
        except ValueError as exc:
            raise InputDataError(f"LSTMEncoder: {exc}") from exc
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.right_context = 0
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        n_conv = int(math.log2(subsampling))
        convs: list[nn.Conv2d] = []
        freq_dims = [input_dim]
        channels = [1]
        for _ in range(n_conv):
            f_out = (freq_dims[-1] - _KERNEL) // _STRIDE + 1
            if f_out < 1:
                raise InputDataError(
                    f"input_dim {input_dim} too small for {n_conv} stride-2 conv layers"
                )
            convs.append(nn.Conv2d(channels[-1], conv_channels, _KERNEL, stride=_STRIDE))
            channels.append(conv_channels)
            freq_dims.append(f_out)
        self.convs = nn.ModuleList(convs)
        self._conv_in_shapes = list(zip(channels[:-1], freq_dims[:-1]))
        self.input_proj = nn.Linear(conv_channels * freq_dims[-1], hidden_dim)
        self.input_norm = nn.LayerNorm(hidden_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.lstms = nn.ModuleList(
            nn.LSTM(hidden_dim, hidden_dim, batch_first=True) for _ in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, output_dim)
        self._reset_lstm_parameters()

    def _reset_lstm_parameters(self) -> None:
        for lstm in self.lstms:
            for name, p in lstm.named_parameters():
                if name.startswith("weight_hh"):
                    for gate in p.data.chunk(4, dim=0):
                        nn.init.orthogonal_(gate)
                elif name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p.data)
                elif name.startswith("bias_ih"):
                    p.data.zero_()
                    h = p.shape[0] // 4
                    p.data[h : 2 * h] = 1.0  # forget gate: remember by default
                elif name.startswith("bias_hh"):
                    p.data.zero_()

    # ------------------------------------------------------------------ full pass
    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Encode whole utterances.

        Args:
            x: ``(B, T, F)`` features.
            x_lens: ``(B,)`` int64 valid frames per item (each >= 1).

        Returns:
            ``y (B, T', D)`` and ``y_lens (B,)`` with ``y_lens = ceil(x_lens / subsampling)``
            (no auxiliary losses or statistics).

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        _check_input(x, x_lens, self.input_dim, allow_empty=False)
        h = x.unsqueeze(1)  # (B, 1, T, F)
        lens = x_lens
        for conv in self.convs:
            h = F.relu(conv(F.pad(h, (0, 0, _KERNEL - 1, 0))))
            lens = _conv_out_len(lens)
        h = self._project(h)
        for norm, lstm in zip(self.norms, self.lstms):
            out, _ = lstm(norm(h))
            h = h + self.dropout(out)
        return EncoderOutput(self.output_proj(self.output_norm(h)), lens)

    def _project(self, h: Tensor) -> Tensor:
        # (B, C, T', F') -> (B, T', H)
        b, c, t, f = h.shape
        h = h.permute(0, 2, 1, 3).reshape(b, t, c * f)
        out: Tensor = self.dropout(self.input_norm(self.input_proj(h)))
        return out

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> LSTMEncoderState:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""
        buffers = tuple(
            torch.zeros(batch_size, c, _KERNEL - 1, f, device=device, dtype=dtype)
            for c, f in self._conv_in_shapes
        )
        buf_lens = tuple(
            torch.full((batch_size,), _KERNEL - 1, dtype=torch.long, device=device)
            for _ in self._conv_in_shapes
        )
        zeros = tuple(
            torch.zeros(batch_size, self.hidden_dim, device=device, dtype=dtype) for _ in self.lstms
        )
        counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        return LSTMEncoderState(
            conv_buffers=buffers,
            conv_buffer_lens=buf_lens,
            h=zeros,
            c=tuple(z.clone() for z in zeros),
            frames_in=counts,
            frames_out=counts.clone(),
        )

    def select_state(self, state: LSTMEncoderState, indices: Tensor) -> LSTMEncoderState:
        """The streams ``indices`` (``(N,)`` int64) of ``state``, as a state of N streams."""
        return state.select(indices)

    def stack_states(self, states: Sequence[LSTMEncoderState]) -> LSTMEncoderState:
        """One state holding the streams of ``states`` in order."""
        return LSTMEncoderState.stack(states)

    def stream(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: LSTMEncoderState | None = None,
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, LSTMEncoderState]:
        """Encode the next chunk of each stream.

        Concatenating the outputs of successive calls gives the output of :meth:`forward`
        on the concatenated input (to float tolerance), for any chunking.

        Args:
            x: ``(B, t, F)`` next feature frames (``t`` may be 0).
            x_lens: ``(B,)`` valid frames of each stream in this chunk (0 allowed).
            state: State from the previous call, ``None`` to start new streams.
            final: End of the streams; changes nothing here (no frame is held back).

        Returns:
            ``y (B, t', D)``, ``y_lens (B,)`` (new encoder frames per stream; frames past a
            stream's length are padding) and the new state.

        Raises:
            InputDataError: on a wrong shape or a batch size different from the state's.
        """
        _check_input(x, x_lens, self.input_dim, allow_empty=True)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        elif not isinstance(state, LSTMEncoderState):
            raise InputDataError(f"LSTMEncoder.stream needs an LSTMEncoderState, got a "
                                 f"{type(state).__name__}")
        elif state.batch_size != x.shape[0]:
            raise InputDataError(
                f"stream state holds {state.batch_size} streams but the chunk has {x.shape[0]}"
            )
        h = x.unsqueeze(1)
        lens = x_lens.to(torch.long)
        new_bufs: list[Tensor] = []
        new_buf_lens: list[Tensor] = []
        for conv, buf, buf_len in zip(self.convs, state.conv_buffers, state.conv_buffer_lens):
            h, lens, rem, rem_len = _stream_conv(cast(nn.Conv2d, conv), buf, buf_len, h, lens)
            h = F.relu(h)
            new_bufs.append(rem)
            new_buf_lens.append(rem_len)
        h = self._project(h)
        new_h: list[Tensor] = []
        new_c: list[Tensor] = []
        for norm, lstm, h0, c0 in zip(self.norms, self.lstms, state.h, state.c):
            out, (h1, c1) = _lstm_stream(cast(nn.LSTM, lstm), norm(h), lens, h0, c0)
            h = h + self.dropout(out)
            new_h.append(h1)
            new_c.append(c1)
        y = self.output_proj(self.output_norm(h))
        new_state = LSTMEncoderState(
            conv_buffers=tuple(new_bufs),
            conv_buffer_lens=tuple(new_buf_lens),
            h=tuple(new_h),
            c=tuple(new_c),
            frames_in=state.frames_in + x_lens.to(torch.long),
            frames_out=state.frames_out + lens,
        )
        return y, lens, new_state


def _stream_conv(
    conv: nn.Conv2d, buf: Tensor, buf_len: Tensor, x: Tensor, x_lens: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One causal stride-2 conv layer over ``buffer + new frames``.

    Args:
        conv: The layer (kernel 3, stride 2, no time padding).
        buf: ``(B, C, W, F)`` pending input frames, valid ones first.
        buf_len: ``(B,)`` valid frames in ``buf``.
        x: ``(B, C, t, F)`` new input frames.
        x_lens: ``(B,)`` valid new frames.

    Returns:
        ``(y (B, C', n, F'), y_lens (B,), remaining buffer, remaining buffer lengths)``.
    """
    b = x.shape[0]
    f_out = (x.shape[3] - _KERNEL) // _STRIDE + 1
    uniform = bool((buf_len == buf_len[0]).all() and (x_lens == x_lens[0]).all()) if b else True
    if uniform:
        w = int(buf_len[0]) if b else 0
        t = int(x_lens[0]) if b else 0
        seq = torch.cat([buf[:, :, :w], x[:, :, :t]], dim=2)
        y, rem = _conv_consume(conv, seq, f_out)
        n = y.shape[2]
        return (
            y,
            torch.full_like(x_lens, n, dtype=torch.long),
            rem,
            torch.full_like(x_lens, rem.shape[2], dtype=torch.long),
        )
    ys: list[Tensor] = []
    rems: list[Tensor] = []
    for i in range(b):
        seq = torch.cat(
            [buf[i : i + 1, :, : int(buf_len[i])], x[i : i + 1, :, : int(x_lens[i])]], 2
        )
        y, rem = _conv_consume(conv, seq, f_out)
        ys.append(y)
        rems.append(rem)
    y_lens = torch.tensor([y.shape[2] for y in ys], dtype=torch.long, device=x.device)
    rem_lens = torch.tensor([r.shape[2] for r in rems], dtype=torch.long, device=x.device)
    n_max = int(y_lens.max())
    w_max = int(rem_lens.max())
    y_all = torch.cat([F.pad(y, (0, 0, 0, n_max - y.shape[2])) for y in ys], dim=0)
    rem_all = torch.cat([F.pad(r, (0, 0, 0, w_max - r.shape[2])) for r in rems], dim=0)
    return y_all, y_lens, rem_all, rem_lens


def _conv_consume(conv: nn.Conv2d, seq: Tensor, f_out: int) -> tuple[Tensor, Tensor]:
    """Apply ``conv`` to every complete window of ``seq`` ``(B, C, L, F)``; keep the rest."""
    length = seq.shape[2]
    n = (length - _KERNEL) // _STRIDE + 1 if length >= _KERNEL else 0
    if n == 0:
        y = seq.new_zeros(seq.shape[0], conv.out_channels, 0, f_out)
    else:
        y = conv(seq[:, :, : (n - 1) * _STRIDE + _KERNEL])
    return y, seq[:, :, n * _STRIDE :]


def _lstm_stream(
    lstm: nn.LSTM, x: Tensor, lens: Tensor, h0: Tensor, c0: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run one LSTM layer on a chunk ``x (B, t, H)`` from ``(h0, c0)`` ``(B, H)``.

    Stream ``b`` advances only over its first ``lens[b]`` frames (its state is frozen after
    them; its outputs past them are padding). The recurrence is written out step by step:
    for the few frames of a chunk this is several times faster on CPU than ``nn.LSTM``'s
    oneDNN kernel, whose per-call set-up dominates short sequences, and it handles per-stream
    lengths without packing. Same arithmetic as ``nn.LSTM`` (gate order i, f, g, o).
    """
    t = x.shape[1]
    if t == 0:
        return x, (h0, c0)
    w_ih, w_hh, b_ih, b_hh = (cast(Tensor, p) for p in lstm.parameters())
    w_hh_t = w_hh.t()
    gates_x = F.linear(x, w_ih, b_ih + b_hh)  # (B, t, 4H)
    hid = h0.shape[1]
    h, c = h0, c0
    uniform = bool((lens == t).all())
    outs: list[Tensor] = []
    for i in range(t):
        g = torch.addmm(gates_x[:, i], h, w_hh_t)
        sig = torch.sigmoid(g)  # the g-gate slice is unused (it takes tanh)
        c_new = torch.addcmul(
            sig[:, hid : 2 * hid] * c, sig[:, :hid], torch.tanh(g[:, 2 * hid : 3 * hid])
        )
        h_new = sig[:, 3 * hid :] * torch.tanh(c_new)
        if uniform:
            h, c = h_new, c_new
        else:
            keep = (lens > i).unsqueeze(1)
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        outs.append(h_new)
    return torch.stack(outs, dim=1), (h, c)


register_encoder("lstm", options=LSTMEncoderOptions)(LSTMEncoder)
