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
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fairstream.models.encoders import register_encoder
from fairstream.models.encoders.base import EncoderOutput
from fairstream.models.encoders.common import (
    EncoderModule,
    build_options,
    check_input,
    check_options,
    flatten_freq,
    lstm_stack,
    lstm_stack_stream,
    subsampling_convs,
    subsampling_full,
    subsampling_state,
    subsampling_stream,
)
from fairstream.models.state import LSTMEncoderState

__all__ = ["LSTMEncoder", "LSTMEncoderOptions"]


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
        check_options(self)


_DEFAULTS = LSTMEncoderOptions()


class LSTMEncoder(EncoderModule[LSTMEncoderState]):
    """Causal conv-subsampling + LSTM encoder (follows the encoder contract of
    :class:`~fairstream.models.encoders.base.StreamingEncoder`).

    Args:
        input_dim: F, feature size (80 log-mel bins).
        subsampling, conv_channels, num_layers, hidden_dim, output_dim, dropout: See
            :class:`LSTMEncoderOptions`.

    Raises:
        InputDataError: on an invalid option.
    """

    state_type = LSTMEncoderState

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
        self.options = build_options(
            "LSTMEncoder", LSTMEncoderOptions, subsampling=subsampling,
            conv_channels=conv_channels, num_layers=num_layers, hidden_dim=hidden_dim,
            output_dim=output_dim, dropout=dropout,
        )
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.hidden_dim = hidden_dim
        self.right_context = 0
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        self.convs, self._conv_in_shapes, freq = subsampling_convs(
            input_dim, conv_channels, int(math.log2(subsampling))
        )
        self.input_proj = nn.Linear(conv_channels * freq, hidden_dim)
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
        """Encode whole utterances ``x (B, T, F)`` of ``x_lens`` frames (each >= 1; see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.forward`): ``y_lens =
        ceil(x_lens / subsampling)``, no auxiliary losses or statistics.

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=False)
        h, lens = subsampling_full(self.convs, x, x_lens)
        h = lstm_stack(self.norms, self.lstms, self.dropout, self._project(h))
        return EncoderOutput(self.output_proj(self.output_norm(h)), lens)

    def _project(self, h: Tensor) -> Tensor:
        # (B, C, T', F') -> (B, T', H)
        out: Tensor = self.dropout(self.input_norm(self.input_proj(flatten_freq(h))))
        return out

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> LSTMEncoderState:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""
        buffers, buf_lens = subsampling_state(self._conv_in_shapes, batch_size, device, dtype)
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

    def stream(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: LSTMEncoderState | None = None,
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, LSTMEncoderState]:
        """Encode the next chunk of each stream (see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.stream`).

        Any chunking works (``t`` and each stream's ``x_lens`` may be 0); ``final`` changes
        nothing here, as no frame is held back. The concatenated outputs equal those of
        :meth:`forward` on the concatenated input (to float tolerance).

        Raises:
            InputDataError: on a wrong shape or a batch size different from the state's.
        """
        state, _ = self._stream_start(x, x_lens, state)
        h, lens, bufs, buf_lens = subsampling_stream(
            self.convs, state.conv_buffers, state.conv_buffer_lens, x, x_lens
        )
        h, new_h, new_c = lstm_stack_stream(
            self.norms, self.lstms, self.dropout, self._project(h), lens, state.h, state.c
        )
        y = self.output_proj(self.output_norm(h))
        new_state = LSTMEncoderState(
            conv_buffers=bufs,
            conv_buffer_lens=buf_lens,
            h=new_h,
            c=new_c,
            frames_in=state.frames_in + x_lens.to(torch.long),
            frames_out=state.frames_out + lens,
        )
        return y, lens, new_state


register_encoder("lstm", options=LSTMEncoderOptions)(LSTMEncoder)
