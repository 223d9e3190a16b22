"""Streaming Conformer encoder: chunk-wise self-attention with a limited left context and
optional lookahead, and a causal convolution module.

Layout: the causal conv subsampling front end of the LSTM encoder (``log2(subsampling)``
Conv2d layers, kernel 3, stride 2 in time and frequency, ReLU, time padded on the left only),
a linear projection to ``d_model``, ``num_layers`` Conformer blocks and an output projection.
A block is half-step feed-forward -> chunk-wise multi-head self-attention -> convolution
module -> half-step feed-forward -> LayerNorm, each sub-module pre-norm with a residual. The
convolution module is pointwise + GLU -> causal depthwise conv (left padding only) ->
LayerNorm (not BatchNorm: batch statistics would make a stream depend on its batch) -> Swish
-> pointwise.

Chunks: encoder frames are grouped into chunks of ``chunk_size`` frames. A frame attends to
every frame of its own chunk, to the ``left_chunks`` chunks before it and to the
``lookahead`` frames after its chunk. The lookahead is carried as in Emformer (Shi et al.,
ICASSP 2021): the ``lookahead`` frames after chunk ``c`` go through every layer as a separate
copy (the right-context block of chunk ``c``) that attends to what chunk ``c`` attends to and
whose depthwise convolution continues chunk ``c``'s; the copy is dropped after the last layer
and those frames are computed again as frames of chunk ``c + 1``. So the lookahead does not
grow with depth: a frame depends on feature frames up to the end of its chunk plus
``lookahead`` encoder frames, ``right_context = chunk_size - 1 + lookahead``.

Positions: no absolute positions (they would tie a stream to its offset). Each head of each
layer adds a learned bias per relative distance ``key - query`` inside the attention window;
the window has the same shape for every chunk, so a stream needs no offset. The causal
convolution sees the order of frames too.

Streaming: :class:`ConformerEncoderState` holds the front end's conv buffers, the projected
frames that wait for a complete chunk and its lookahead, and per layer the keys and values of
the last ``left_chunks * chunk_size`` frames and the last ``conv_kernel - 1`` inputs of the
depthwise convolution. ``stream`` takes any number of feature frames and emits whole chunks
once their lookahead has arrived (the rest at ``final=True``); ``forward`` computes the same
chunks with masks over whole, padded utterances, without loops over frames or chunks.

Dimension letters: B batch, T feature frames, T' encoder frames, N chunks, S chunk size,
R lookahead, W attention window (``(left_chunks + 1) * S + R`` keys), H heads, E head size,
D model size, C channels, F features.
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
    check_input,
    check_options,
    flatten_freq,
    subsampling_convs,
    subsampling_full,
    subsampling_state,
    subsampling_stream,
    take_frames,
)
from fairstream.models.state import EncoderState

__all__ = [
    "ConformerEncoder",
    "ConformerEncoderOptions",
    "ConformerEncoderState",
    "algorithmic_latency_ms",
]


def algorithmic_latency_ms(
    chunk_size: int, lookahead: int = 0, subsampling: int = 8, frame_shift_ms: float = 10.0
) -> float:
    """Algorithmic latency of the chunk-wise encoder: ``(chunk_size + lookahead) *
    subsampling * frame_shift_ms``.

    The first feature frame of a chunk waits for the rest of its chunk and for the
    ``lookahead`` encoder frames after it before the chunk is computed; that wait is
    ``(chunk_size + lookahead) * subsampling`` feature frames. Not included: compute time,
    the 15 ms by which a 25 ms analysis window exceeds the frame shift, and any wait of the
    caller's own chunking (a streaming recognizer feeding 160 ms chunks adds up to 160 ms
    when its chunks do not line up with the encoder's).

    Args:
        chunk_size: Encoder frames per chunk.
        lookahead: Encoder frames after a chunk that its frames attend to.
        subsampling: Feature frames per encoder frame.
        frame_shift_ms: Feature frame shift.

    Raises:
        ValueError: on a chunk size < 1 or a negative lookahead.
    """
    if chunk_size < 1 or lookahead < 0:
        raise ValueError(f"need chunk_size >= 1 and lookahead >= 0, got {chunk_size}, "
                         f"{lookahead}")
    return float((chunk_size + lookahead) * subsampling * frame_shift_ms)


@dataclass(frozen=True)
class ConformerEncoderOptions:
    """Options of :class:`ConformerEncoder` (``model.encoder.kwargs`` of a ``conformer``).

    The defaults are the demo size (about the parameters of the demo's LSTM encoder).

    Attributes:
        subsampling: Time subsampling factor of the conv front end (4 or 8).
        conv_channels: C, channels of the subsampling convolutions.
        d_model: D, size of the Conformer blocks.
        num_heads: Attention heads (must divide ``d_model``).
        ffn_dim: Hidden size of the feed-forward modules.
        num_layers: Conformer blocks.
        conv_kernel: Kernel of the causal depthwise convolution (>= 2).
        chunk_size: S, encoder frames per attention chunk.
        left_chunks: Previous chunks a frame attends to (0: its own chunk only).
        lookahead: R, encoder frames after its chunk that a frame attends to.
        dropout: Dropout inside the blocks during training.
        output_dim: Encoder output size.
    """

    subsampling: int = 8
    conv_channels: int = 32
    d_model: int = 128
    num_heads: int = 4
    ffn_dim: int = 576
    num_layers: int = 4
    conv_kernel: int = 15
    chunk_size: int = 4
    left_chunks: int = 4
    lookahead: int = 0
    dropout: float = 0.1
    output_dim: int = 256

    def __post_init__(self) -> None:
        check_options(self, subsamplings=(4, 8), may_be_zero=("left_chunks", "lookahead"))
        if self.conv_kernel < 2:
            raise ValueError(f"conv_kernel must be >= 2, got {self.conv_kernel}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide d_model {self.d_model}")


_DEFAULTS = ConformerEncoderOptions()


@dataclass(frozen=True)
class ConformerEncoderState(EncoderState):
    """Streaming state of :class:`ConformerEncoder`.

    Attributes:
        conv_buffers: One ``(B, C_in, W, F_in)`` tensor per subsampling conv layer: input
            frames not yet consumed by a stride step (zeros at the start, the causal padding).
        conv_buffer_lens: One ``(B,)`` int64 tensor per conv layer: valid buffer frames.
        pending: ``(B, P, D)`` projected front-end frames not yet computed as chunk frames
            (valid ones first): a chunk waits here for its ``lookahead`` frames.
        pending_lens: ``(B,)`` int64 valid frames of ``pending``.
        keys: One ``(B, left_chunks * S, H, E)`` tensor per layer: keys of the last frames
            (right-aligned: the valid ones last).
        values: Values of the same frames.
        cache_lens: ``(B,)`` int64 valid frames of ``keys`` / ``values``.
        conv_caches: One ``(B, conv_kernel - 1, D)`` tensor per layer: the last inputs of the
            depthwise convolution (zeros at the start, the causal padding).
        frames_in: ``(B,)`` int64, feature frames consumed so far.
        frames_out: ``(B,)`` int64, encoder frames emitted so far.
    """

    conv_buffers: tuple[Tensor, ...]
    conv_buffer_lens: tuple[Tensor, ...]
    pending: Tensor
    pending_lens: Tensor
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    cache_lens: Tensor
    conv_caches: tuple[Tensor, ...]
    frames_in: Tensor
    frames_out: Tensor

    @staticmethod
    def stack(states: Sequence[ConformerEncoderState]) -> ConformerEncoderState:
        """One state holding the streams of ``states`` in order (batch sizes add up).

        Buffers of different widths are padded at their end (only the valid frames count).

        Raises:
            InputDataError: on no states, or states of differently shaped encoders.
        """
        if not states:
            raise InputDataError("stack of no encoder states")
        shapes = {(len(s.conv_buffers), len(s.keys), tuple(s.keys[0].shape[1:]) if s.keys
                   else ()) for s in states}
        if len(shapes) > 1:
            raise InputDataError(f"cannot stack states of differently shaped encoders: "
                                 f"(conv layers, layers, key cache shape) {sorted(shapes)}")
        return ConformerEncoderState.concat(states, padded=("conv_buffers", "pending"))


def _compact(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Move the valid frames of each stream of ``x`` ``(B, L, D)`` (``valid`` ``(B, L)``
    bool) to its front, in order; returns them (``(B, max count, D)``) and the counts."""
    lens = valid.sum(1)
    width = int(lens.max()) if lens.numel() else 0
    order = torch.sort((~valid).to(torch.long), dim=1, stable=True).indices[:, :width]
    return x.gather(1, order.unsqueeze(2).expand(-1, -1, x.shape[2])), lens


def _feed_forward(d_model: int, ffn_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_model), nn.Linear(d_model, ffn_dim), nn.SiLU(), nn.Dropout(dropout),
        nn.Linear(ffn_dim, d_model), nn.Dropout(dropout),
    )


class _ConformerBlock(nn.Module):
    """One Conformer block, split into the per-frame parts and the two parts that mix frames
    (attention, depthwise convolution), which the full pass and ``stream`` feed differently.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, conv_kernel: int,
                 dropout: float, num_rel: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ff1 = _feed_forward(d_model, ffn_dim, dropout)
        self.att_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.att_out = nn.Linear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, num_rel))
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, conv_kernel, groups=d_model)
        self.depth_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.ff2 = _feed_forward(d_model, ffn_dim, dropout)
        self.out_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def attention_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Half-step feed-forward, then queries, keys and values.

        Returns:
            ``x`` after the feed-forward ``(..., L, D)`` and ``q, k, v`` ``(..., L, H, E)``.
        """
        x = x + 0.5 * self.ff1(x)
        q, k, v = self.qkv(self.att_norm(x)).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.num_heads, -1)
        return x, q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, rel_index: Tensor) -> Tensor:
        """Attention of queries ``(..., Q, H, E)`` over keys / values ``(..., W, H, E)``.

        Args:
            mask: ``(..., Q, W)`` bool, true where a query may see a key.
            rel_index: ``(Q, W)`` int64, index of each pair's relative-position bias.

        Returns:
            ``(..., Q, D)`` after the output projection.
        """
        bias = self.rel_bias[:, rel_index]  # (H, Q, W)
        bias = bias.masked_fill(~mask.unsqueeze(-3), float("-inf"))
        out = F.scaled_dot_product_attention(
            q.transpose(-2, -3), k.transpose(-2, -3), v.transpose(-2, -3), attn_mask=bias
        )
        out = self.att_out(out.transpose(-2, -3).flatten(-2))
        return cast(Tensor, self.dropout(out))

    def conv_inputs(self, x: Tensor) -> Tensor:
        """LayerNorm, pointwise conv and GLU: the depthwise convolution's input ``(..., D)``."""
        return F.glu(self.pointwise_in(self.conv_norm(x)), dim=-1)

    def depthwise_conv(self, u: Tensor) -> Tensor:
        """Depthwise conv without padding: ``(N, L, D) -> (N, L - conv_kernel + 1, D)``."""
        return self.depthwise(u.transpose(1, 2)).transpose(1, 2)

    def depthwise_conv_short(self, u: Tensor) -> Tensor:
        """:meth:`depthwise_conv` written out as a sum over the kernel: several times faster
        than ``conv1d``'s kernel for the few frames of a chunk."""
        weight = self.depthwise.weight.squeeze(1)  # (D, K)
        bias = cast(Tensor, self.depthwise.bias)
        return (u.unfold(1, weight.shape[1], 1) * weight).sum(-1) + bias

    def conv_outputs(self, z: Tensor) -> Tensor:
        """LayerNorm, Swish, pointwise conv of the depthwise output ``(..., D)``."""
        return cast(Tensor, self.dropout(self.pointwise_out(F.silu(self.depth_norm(z)))))

    def finish(self, x: Tensor) -> Tensor:
        """Second half-step feed-forward and the block's LayerNorm."""
        return cast(Tensor, self.out_norm(x + 0.5 * self.ff2(x)))


class ConformerEncoder(EncoderModule[ConformerEncoderState]):
    """Causal conv subsampling + streaming Conformer encoder (follows the encoder contract of
    :class:`~fairstream.models.encoders.base.StreamingEncoder`).

    Args:
        input_dim: F, feature size (80 log-mel bins).
        subsampling, conv_channels, d_model, num_heads, ffn_dim, num_layers, conv_kernel,
            chunk_size, left_chunks, lookahead, dropout, output_dim: See
            :class:`ConformerEncoderOptions`.

    Raises:
        InputDataError: on an invalid option.
    """

    _rel_index: Tensor
    _self_mask: Tensor
    state_type = ConformerEncoderState

    def __init__(
        self,
        input_dim: int = 80,
        *,
        subsampling: int = _DEFAULTS.subsampling,
        conv_channels: int = _DEFAULTS.conv_channels,
        d_model: int = _DEFAULTS.d_model,
        num_heads: int = _DEFAULTS.num_heads,
        ffn_dim: int = _DEFAULTS.ffn_dim,
        num_layers: int = _DEFAULTS.num_layers,
        conv_kernel: int = _DEFAULTS.conv_kernel,
        chunk_size: int = _DEFAULTS.chunk_size,
        left_chunks: int = _DEFAULTS.left_chunks,
        lookahead: int = _DEFAULTS.lookahead,
        dropout: float = _DEFAULTS.dropout,
        output_dim: int = _DEFAULTS.output_dim,
    ) -> None:
        super().__init__()
        self.options = build_options(
            "ConformerEncoder", ConformerEncoderOptions,
            subsampling=subsampling, conv_channels=conv_channels, d_model=d_model,
            num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
            conv_kernel=conv_kernel, chunk_size=chunk_size, left_chunks=left_chunks,
            lookahead=lookahead, dropout=dropout, output_dim=output_dim,
        )
        self.input_dim = input_dim
        self.subsampling = subsampling
        self.output_dim = output_dim
        self.right_context = chunk_size - 1 + lookahead
        self.chunk_frames_min = 1
        self.chunk_frames_multiple = 1
        self.convs, self._conv_in_shapes, freq = subsampling_convs(
            input_dim, conv_channels, int(math.log2(subsampling))
        )
        self.input_proj = nn.Linear(conv_channels * freq, d_model)
        s, r, left = chunk_size, lookahead, left_chunks * chunk_size
        query_pos = torch.arange(s + r)
        key_pos = torch.arange(-left, s + r)  # relative to the chunk's first frame
        rel = key_pos.unsqueeze(0) - query_pos.unsqueeze(1)
        self.register_buffer("_rel_index", rel - int(rel.min()), persistent=False)
        # a query always sees itself: rows of padding queries are never empty (no NaN)
        self.register_buffer("_self_mask", rel == 0, persistent=False)
        self.blocks = nn.ModuleList(
            _ConformerBlock(d_model, num_heads, ffn_dim, conv_kernel, dropout,
                            int(rel.max() - rel.min()) + 1)
            for _ in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.output_proj = nn.Linear(d_model, output_dim)

    # ------------------------------------------------------------------ full pass
    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Encode whole utterances ``x (B, T, F)`` of ``x_lens`` frames (each >= 1; see
        :meth:`~fairstream.models.encoders.base.StreamingEncoder.forward`): ``y_lens =
        ceil(x_lens / subsampling)``, no auxiliary losses or statistics.

        Raises:
            InputDataError: on a wrong shape or an empty item.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=False)
        h, lens = subsampling_full(self.convs, x, x_lens.to(torch.long))
        h = self._project(h)
        t = h.shape[1]
        o = self.options
        s, r, nc = o.chunk_size, o.lookahead, -(-t // o.chunk_size)
        h = F.pad(h, (0, 0, 0, nc * s + r - t))
        chunk_starts = torch.arange(nc, device=x.device).unsqueeze(1) * s  # (N, 1)
        rc = h[:, chunk_starts + s + torch.arange(r, device=x.device)]  # (B, N, R, D)
        h = h[:, : nc * s]
        # positions of each chunk's keys: left context and own chunk, then right context
        key_pos = chunk_starts + torch.arange(-o.left_chunks * s, s + r, device=x.device)
        valid = (key_pos >= 0) & (key_pos < lens.view(-1, 1, 1))  # (B, N, W)
        mask = valid.unsqueeze(2) | self._self_mask  # (B, N, S + R, W)
        for block in self.blocks:
            h, rc = self._block_full(cast(_ConformerBlock, block), h, rc, mask)
        return EncoderOutput(self.output_proj(h[:, :t]), lens)

    def _project(self, h: Tensor) -> Tensor:
        # (B, C, T', F') -> (B, T', D)
        out: Tensor = self.dropout(self.input_proj(flatten_freq(h)))
        return out

    def _block_full(
        self, block: _ConformerBlock, h: Tensor, rc: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One block over all chunks: ``h (B, N * S, D)`` and right contexts ``(B, N, R, D)``."""
        b, nc, r, d = rc.shape
        n = h.shape[1]
        s = self.options.chunk_size
        left = self.options.left_chunks * s
        x, q, k, v = block.attention_inputs(torch.cat([h, rc.flatten(1, 2)], 1))
        window = (torch.arange(nc, device=h.device).unsqueeze(1) * s
                  + torch.arange(left + s, device=h.device))  # (N, left + S), left-padded

        def keys(z: Tensor) -> Tensor:  # (B, L, H, E) -> (B, N, W, H, E)
            own = F.pad(z[:, :n], (0, 0, 0, 0, left, 0))[:, window]
            return torch.cat([own, z[:, n:].unflatten(1, (nc, r))], 2)

        queries = torch.cat([q[:, :n].unflatten(1, (nc, s)), q[:, n:].unflatten(1, (nc, r))], 2)
        att = block.attend(queries, keys(k), keys(v), mask, self._rel_index)  # (B, N, S + R, D)
        x = x + torch.cat([att[:, :, :s].flatten(1, 2), att[:, :, s:].flatten(1, 2)], 1)
        u = block.conv_inputs(x)
        kernel = block.depthwise.kernel_size[0]
        u_own = F.pad(u[:, :n], (0, 0, kernel - 1, 0))
        z = block.depthwise_conv(u_own)
        if r:
            # a right context continues the convolution of its chunk's last frames
            ends = (torch.arange(nc, device=h.device).unsqueeze(1) + 1) * s
            before = u_own[:, ends + torch.arange(kernel - 1, device=h.device)]  # (B, N, K-1, D)
            seq = torch.cat([before, u[:, n:].unflatten(1, (nc, r))], 2).flatten(0, 1)
            z = torch.cat([z, block.depthwise_conv(seq).reshape(b, nc * r, d)], 1)
        x = block.finish(x + block.conv_outputs(z))
        return x[:, :n], x[:, n:].unflatten(1, (nc, r))

    # ------------------------------------------------------------------ streaming
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ConformerEncoderState:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""
        o = self.options
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        cache = (batch_size, o.left_chunks * o.chunk_size, o.num_heads, o.d_model // o.num_heads)
        buffers, buffer_lens = subsampling_state(self._conv_in_shapes, batch_size, device, dtype)
        return ConformerEncoderState(
            conv_buffers=buffers,
            conv_buffer_lens=buffer_lens,
            pending=torch.zeros(batch_size, 0, o.d_model, device=device, dtype=dtype),
            pending_lens=zeros,
            keys=tuple(torch.zeros(cache, device=device, dtype=dtype) for _ in self.blocks),
            values=tuple(torch.zeros(cache, device=device, dtype=dtype) for _ in self.blocks),
            cache_lens=zeros.clone(),
            conv_caches=tuple(
                torch.zeros(batch_size, o.conv_kernel - 1, o.d_model, device=device,
                            dtype=dtype)
                for _ in self.blocks
            ),
            frames_in=zeros.clone(),
            frames_out=zeros.clone(),
        )

    def _check_shapes(self, state: ConformerEncoderState) -> None:
        o = self.options
        want = (o.num_layers, (o.left_chunks * o.chunk_size, o.num_heads, o.d_model // o.num_heads),
                (o.conv_kernel - 1, o.d_model))
        got = (len(state.keys), tuple(state.keys[0].shape[1:]) if state.keys else (),
               tuple(state.conv_caches[0].shape[1:]) if state.conv_caches else ())
        if got != want:
            raise InputDataError(f"state of a differently shaped encoder: (layers, key cache, "
                                 f"conv cache) {got}, expected {want}")

    def stream(
        self,
        x: Tensor,
        x_lens: Tensor,
        state: ConformerEncoderState | None = None,
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, ConformerEncoderState]:
        """Encode the next feature frames of each stream.

        Frames are computed a chunk at a time, once the chunk and its ``lookahead`` frames
        have arrived; ``final`` computes the frames held back (a last chunk shorter than
        ``chunk_size``, with the right context that exists). Concatenating the outputs of
        successive calls, final one included, gives the output of :meth:`forward` on the
        concatenated input (to float tolerance), for any chunking.

        Args:
            x: ``(B, t, F)`` next feature frames (``t`` may be 0).
            x_lens: ``(B,)`` valid frames of each stream in this chunk (0 allowed).
            state: State from the previous call, ``None`` to start new streams.
            final: End of the streams: also emit the frames held back.

        Returns:
            ``y (B, t', D)``, ``y_lens (B,)`` (new encoder frames per stream; frames past a
            stream's length are padding) and the new state.

        Raises:
            InputDataError: on a wrong shape, a state of another encoder or a batch size
                different from the state's.
        """
        st, given = self._stream_start(x, x_lens, state)
        if given:
            self._check_shapes(st)
        h, lens, bufs, buf_lens = subsampling_stream(
            self.convs, st.conv_buffers, st.conv_buffer_lens, x, x_lens
        )
        h = self._project(h)
        positions = torch.arange(max(st.pending.shape[1], h.shape[1]), device=x.device)
        pending, pending_lens = _compact(
            torch.cat([st.pending, h], 1),
            torch.cat([positions[: st.pending.shape[1]] < st.pending_lens.unsqueeze(1),
                       positions[: h.shape[1]] < lens.unsqueeze(1)], 1),
        )
        o = self.options
        s, r = o.chunk_size, o.lookahead
        keys, values, convs = list(st.keys), list(st.values), list(st.conv_caches)
        cache_lens = st.cache_lens
        outs: list[Tensor] = []
        emitted: list[Tensor] = []
        while True:
            ready = pending_lens > 0 if final else pending_lens >= s + r
            if not bool(ready.any()):
                break
            n = torch.where(ready, pending_lens.clamp(max=s), 0)
            n_rc = torch.where(ready, (pending_lens - s).clamp(0, r), 0)
            pending = F.pad(pending, (0, 0, 0, max(0, s + r - pending.shape[1])))
            out = self._stream_chunk(pending[:, : s + r], n, n_rc, cache_lens, keys, values,
                                     convs)
            outs.append(out)
            emitted.append(torch.arange(s, device=x.device) < n.unsqueeze(1))
            cache_lens = (cache_lens + n).clamp(max=o.left_chunks * s)
            pending = take_frames(F.pad(pending, (0, 0, 0, s)), n, pending.shape[1])
            pending_lens = pending_lens - n
        pending = pending[:, : int(pending_lens.max()) if pending_lens.numel() else 0]
        if outs:
            y, y_lens = _compact(torch.cat(outs, 1), torch.cat(emitted, 1))
        else:
            y, y_lens = pending.new_zeros(x.shape[0], 0, o.d_model), torch.zeros_like(lens)
        new_state = ConformerEncoderState(
            conv_buffers=bufs,
            conv_buffer_lens=buf_lens,
            pending=pending,
            pending_lens=pending_lens,
            keys=tuple(keys),
            values=tuple(values),
            cache_lens=cache_lens,
            conv_caches=tuple(convs),
            frames_in=st.frames_in + x_lens.to(torch.long),
            frames_out=st.frames_out + y_lens,
        )
        return self.output_proj(y), y_lens, new_state

    def _stream_chunk(
        self, h: Tensor, n: Tensor, n_rc: Tensor, cache_lens: Tensor, keys: list[Tensor],
        values: list[Tensor], convs: list[Tensor],
    ) -> Tensor:
        """One chunk of each stream through all blocks; updates the per-layer caches in place.

        Args:
            h: ``(B, S + R, D)`` chunk frames, then right-context frames.
            n: ``(B,)`` valid chunk frames (0: the stream does not advance).
            n_rc: ``(B,)`` valid right-context frames.
            cache_lens: ``(B,)`` valid frames of the key / value caches.
            keys, values: Per layer ``(B, left, H, E)`` caches (replaced by the new ones).
            convs: Per layer ``(B, K - 1, D)`` depthwise conv inputs (replaced likewise).

        Returns:
            ``(B, S, D)`` the chunk's output frames (valid: the first ``n``).
        """
        o = self.options
        s, left = o.chunk_size, o.left_chunks * o.chunk_size
        pos = torch.arange(s + o.lookahead, device=h.device)
        mask = torch.cat([
            torch.arange(left, device=h.device) >= (left - cache_lens).unsqueeze(1),
            pos[:s] < n.unsqueeze(1),
            pos[: o.lookahead] < n_rc.unsqueeze(1),
        ], 1).unsqueeze(1) | self._self_mask  # (B, S + R, W)
        for i, module in enumerate(self.blocks):
            block = cast(_ConformerBlock, module)
            x, q, k, v = block.attention_inputs(h)
            k_all = torch.cat([keys[i], k], 1)
            v_all = torch.cat([values[i], v], 1)
            x = x + block.attend(q, k_all, v_all, mask, self._rel_index)
            u = torch.cat([convs[i], block.conv_inputs(x)], 1)
            h = block.finish(x + block.conv_outputs(block.depthwise_conv_short(u)))
            keys[i] = take_frames(k_all[:, : left + s], n, left)
            values[i] = take_frames(v_all[:, : left + s], n, left)
            convs[i] = take_frames(u[:, : convs[i].shape[1] + s], n, convs[i].shape[1])
        return h[:, :s]


register_encoder("conformer", options=ConformerEncoderOptions)(ConformerEncoder)
