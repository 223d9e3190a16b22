"""Mechanics the streaming encoders share: input and option checks, the stream-state plumbing
of the encoder contract, the causal conv subsampling front end, a streamed LSTM stack,
per-stream frame gathering and the causal running mean of a squeeze-and-excitation.

Architecture stays in each encoder's module; what is here computes the same thing wherever it
is used, so an encoder's streaming and full passes agree by construction.

Dimension letters: B batch, T input frames, t frames in a chunk, T' output frames,
F features, C channels, H LSTM size, W buffered frames.
"""

from __future__ import annotations

import dataclasses
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.state import EncoderState

__all__ = [
    "CONV_KERNEL",
    "CONV_STRIDE",
    "EncoderModule",
    "build_options",
    "causal_out_lens",
    "causal_running_mean",
    "check_input",
    "check_options",
    "flatten_freq",
    "lstm_stack",
    "lstm_stack_stream",
    "lstm_stream",
    "running_mean_all_valid",
    "subsampling_convs",
    "subsampling_full",
    "subsampling_state",
    "subsampling_stream",
    "take_frames",
]

_O = TypeVar("_O")
_S = TypeVar("_S", bound=EncoderState)

CONV_KERNEL = 3
"""Time and frequency kernel of the causal subsampling convs."""
CONV_STRIDE = 2
"""Time and frequency stride of the causal subsampling convs."""


# ---------------------------------------------------------------------- checks
def check_input(x: Tensor, x_lens: Tensor, input_dim: int, *, allow_empty: bool) -> None:
    """Check an encoder's input ``x (B, T, input_dim)`` and lengths ``x_lens (B,)``.

    Args:
        allow_empty: Items of 0 frames are allowed (a stream that receives nothing).

    Raises:
        InputDataError: on a wrong shape, a length past ``T``, or an empty (negative) item.
    """
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


def check_options(
    options: object, *, subsamplings: Sequence[int] = (2, 4, 8), may_be_zero: Sequence[str] = ()
) -> None:
    """The checks every encoder's options dataclass shares (call from ``__post_init__``).

    ``subsampling`` must be one of ``subsamplings``, every int field >= 1 (those named in
    ``may_be_zero`` >= 0) and ``dropout`` in ``[0, 1)``.

    Raises:
        ValueError: not InputDataError, as the config parser adds the key path to it.
    """
    subsampling = getattr(options, "subsampling")
    if subsampling not in subsamplings:
        allowed = ", ".join(str(s) for s in subsamplings[:-1]) + f" or {subsamplings[-1]}"
        raise ValueError(f"subsampling must be {allowed}, got {subsampling}")
    ints = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)  # type: ignore[arg-type]
            if f.type in ("int", int)}
    small = {k: v for k, v in ints.items() if k not in may_be_zero and v < 1}
    if small:
        raise ValueError(f"options must be >= 1, got {small}")
    negative = {k: ints[k] for k in may_be_zero if ints[k] < 0}
    if negative:
        raise ValueError(f"{' and '.join(negative)} must be >= 0, got "
                         f"{', '.join(str(v) for v in negative.values())}")
    dropout = getattr(options, "dropout")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def build_options(encoder: str, options: type[_O], **values: object) -> _O:
    """``options(**values)``, its ``ValueError`` raised as an ``InputDataError`` naming
    ``encoder`` (an encoder constructor's check of its keyword options)."""
    try:
        return options(**values)
    except ValueError as exc:
        raise InputDataError(f"{encoder}: {exc}") from exc


# ---------------------------------------------------------------------- contract plumbing
class EncoderModule(nn.Module, Generic[_S], metaclass=ABCMeta):
    """Base of the encoders: the state batching of the encoder contract for a state class
    ``state_type`` (an :class:`~fairstream.models.state.EncoderState` with a ``stack``), and
    the checks of a state passed to ``stream``. Registers no parameters.

    Attributes:
        input_dim: F.
        state_type: The encoder's state class.
    """

    input_dim: int
    state_type: type[_S]

    @abstractmethod
    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> _S:
        """State of ``batch_size`` fresh streams (what ``stream(..., state=None)`` uses)."""

    def select_state(self, state: _S, indices: Tensor) -> _S:
        """The streams ``indices`` (``(N,)`` int64) of ``state``, as a state of N streams."""
        return state.select(indices)

    def stack_states(self, states: Sequence[_S]) -> _S:
        """One state holding the streams of ``states`` in order."""
        stack = getattr(self.state_type, "stack")
        return cast(_S, stack(states))

    def _stream_start(
        self, x: Tensor, x_lens: Tensor, state: object
    ) -> tuple[_S, bool]:
        """Check a chunk and its state for ``stream``: the state (a fresh one for ``None``)
        and whether it was passed in (then an encoder may check its shapes too).

        Raises:
            InputDataError: on a wrong input shape, a state of another class, or of another
                batch size than the chunk.
        """
        check_input(x, x_lens, self.input_dim, allow_empty=True)
        if state is None:
            return self.init_state(x.shape[0], device=x.device, dtype=x.dtype), False
        if not isinstance(state, self.state_type):
            raise InputDataError(f"{type(self).__name__}.stream needs a "
                                 f"{self.state_type.__name__}, got a {type(state).__name__}")
        if state.batch_size != x.shape[0]:
            raise InputDataError(
                f"stream state holds {state.batch_size} streams but the chunk has {x.shape[0]}"
            )
        return state, True


# ---------------------------------------------------------------------- frames
def causal_out_lens(lens: Tensor, stride: int = CONV_STRIDE) -> Tensor:
    """Output frames of a causal conv with time stride ``stride`` for ``lens`` input frames."""
    return torch.where(lens > 0, (lens - 1) // stride + 1, torch.zeros_like(lens))


def take_frames(x: Tensor, start: Tensor, width: int) -> Tensor:
    """``x[b, start[b] : start[b] + width]`` for every stream ``b`` of ``x`` ``(B, L, ...)``."""
    idx = start.unsqueeze(1) + torch.arange(width, device=x.device)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, idx)


def flatten_freq(h: Tensor) -> Tensor:
    """Channels and frequency of conv outputs as one axis: ``(B, C, T', F') -> (B, T', C * F')``."""
    b, c, t, f = h.shape
    return h.permute(0, 2, 1, 3).reshape(b, t, c * f)


# ---------------------------------------------------------------------- conv subsampling
def subsampling_convs(
    input_dim: int, channels: int, layers: int
) -> tuple[nn.ModuleList, list[tuple[int, int]], int]:
    """The causal subsampling front end: ``layers`` Conv2d layers of kernel 3 and stride 2 in
    time and frequency (no padding: time is padded on the left by the passes below).

    Returns:
        The layers, the ``(channels, frequency bins)`` of each layer's input, and the
        frequency bins of the last output.

    Raises:
        InputDataError: if ``input_dim`` is too small for ``layers`` layers.
    """
    convs: list[nn.Conv2d] = []
    shapes: list[tuple[int, int]] = []
    c_in, freq = 1, input_dim
    for _ in range(layers):
        shapes.append((c_in, freq))
        freq = (freq - CONV_KERNEL) // CONV_STRIDE + 1
        if freq < 1:
            raise InputDataError(
                f"input_dim {input_dim} too small for {layers} stride-2 conv layers"
            )
        convs.append(nn.Conv2d(c_in, channels, CONV_KERNEL, stride=CONV_STRIDE))
        c_in = channels
    return nn.ModuleList(convs), shapes, freq


def subsampling_full(convs: nn.ModuleList, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
    """Whole utterances through the front end: ``(B, T, F), (B,) -> (B, C, T', F'), (B,)``."""
    h = x.unsqueeze(1)  # (B, 1, T, F)
    lens = x_lens
    for conv in convs:
        h = F.relu(conv(F.pad(h, (0, 0, CONV_KERNEL - 1, 0))))
        lens = causal_out_lens(lens)
    return h, lens


def subsampling_state(
    shapes: Sequence[tuple[int, int]],
    batch_size: int,
    device: torch.device | None,
    dtype: torch.dtype,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Fresh conv buffers of the front end (the zeros of the causal padding) and their
    lengths, for layers with inputs of ``shapes`` ``(channels, frequency bins)``."""
    buffers = tuple(
        torch.zeros(batch_size, c, CONV_KERNEL - 1, f, device=device, dtype=dtype)
        for c, f in shapes
    )
    lens = tuple(
        torch.full((batch_size,), CONV_KERNEL - 1, dtype=torch.long, device=device)
        for _ in shapes
    )
    return buffers, lens


def subsampling_stream(
    convs: nn.ModuleList,
    buffers: Sequence[Tensor],
    buffer_lens: Sequence[Tensor],
    x: Tensor,
    x_lens: Tensor,
) -> tuple[Tensor, Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The next chunk ``x (B, t, F)`` through the front end, after each layer's buffer.

    Returns:
        ``(h (B, C, t', F'), new frames per stream, new buffers, new buffer lengths)``.
    """
    h = x.unsqueeze(1)
    lens = x_lens.to(torch.long)
    new_bufs: list[Tensor] = []
    new_lens: list[Tensor] = []
    for conv, buf, buf_len in zip(convs, buffers, buffer_lens):
        h, lens, rem, rem_len = _stream_conv(cast(nn.Conv2d, conv), buf, buf_len, h, lens)
        h = F.relu(h)
        new_bufs.append(rem)
        new_lens.append(rem_len)
    return h, lens, tuple(new_bufs), tuple(new_lens)


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
    f_out = (x.shape[3] - CONV_KERNEL) // CONV_STRIDE + 1
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
    n = (length - CONV_KERNEL) // CONV_STRIDE + 1 if length >= CONV_KERNEL else 0
    if n == 0:
        y = seq.new_zeros(seq.shape[0], conv.out_channels, 0, f_out)
    else:
        y = conv(seq[:, :, : (n - 1) * CONV_STRIDE + CONV_KERNEL])
    return y, seq[:, :, n * CONV_STRIDE :]


# ---------------------------------------------------------------------- LSTM stack
def lstm_stack(norms: nn.ModuleList, lstms: nn.ModuleList, dropout: nn.Module, h: Tensor
               ) -> Tensor:
    """Whole sequences ``h (B, T', H)`` through pre-norm residual LSTM layers:
    ``h = h + dropout(lstm(norm(h)))`` per layer."""
    for norm, lstm in zip(norms, lstms):
        out, _ = lstm(norm(h))
        h = h + dropout(out)
    return h


def lstm_stack_stream(
    norms: nn.ModuleList,
    lstms: nn.ModuleList,
    dropout: nn.Module,
    h: Tensor,
    lens: Tensor,
    h0: Sequence[Tensor],
    c0: Sequence[Tensor],
) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """:func:`lstm_stack` on the next frames of each stream, from per-layer states
    ``h0``, ``c0`` (``(B, H)`` each); stream ``b`` advances over its first ``lens[b]`` frames.

    Returns:
        ``(output (B, t, H), new h per layer, new c per layer)``.
    """
    new_h: list[Tensor] = []
    new_c: list[Tensor] = []
    for norm, lstm, h_prev, c_prev in zip(norms, lstms, h0, c0):
        out, (h1, c1) = lstm_stream(cast(nn.LSTM, lstm), norm(h), lens, h_prev, c_prev)
        h = h + dropout(out)
        new_h.append(h1)
        new_c.append(c1)
    return h, tuple(new_h), tuple(new_c)


def lstm_stream(
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


# ---------------------------------------------------------------------- running mean
def causal_running_mean(
    x: Tensor, lens: Tensor, prev_sum: Tensor, prev_count: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of the valid frames ``1..t`` at every frame ``t``, continuing a running sum (the
    causal squeeze of a squeeze-and-excitation).

    Args:
        x: ``(B, t, C)`` frames; only the first ``lens[b]`` of item ``b`` are valid.
        lens: ``(B,)`` int64 valid frames.
        prev_sum: ``(B, C)`` sum of the earlier valid frames of each stream.
        prev_count: ``(B,)`` int64 number of earlier valid frames.

    Returns:
        ``(mean (B, t, C), new sum (B, C), new count (B,))``. Padding frames do not count: at
        a padding frame the mean is that of the valid frames before it (0 if there are none).
    """
    valid = (torch.arange(x.shape[1], device=x.device) < lens.unsqueeze(1)).unsqueeze(2)
    sums = torch.cumsum(x * valid.to(x.dtype), dim=1) + prev_sum.unsqueeze(1)
    counts = torch.cumsum(valid.to(torch.long), dim=1) + prev_count.view(-1, 1, 1)
    mean = sums / counts.clamp(min=1).to(x.dtype)
    new_sum = sums[:, -1] if x.shape[1] else prev_sum
    return mean, new_sum, prev_count + lens


def running_mean_all_valid(
    x: Tensor, prev_sum: Tensor, prev_count: int
) -> tuple[Tensor, Tensor]:
    """:func:`causal_running_mean` when every frame of ``x`` is valid and every stream has
    ``prev_count`` earlier frames: ``(mean, new sum)``."""
    t = x.shape[1]
    sums = torch.cumsum(x, dim=1) + prev_sum.unsqueeze(1)
    counts = torch.arange(prev_count + 1, prev_count + t + 1, device=x.device, dtype=x.dtype)
    return sums / counts.unsqueeze(1), sums[:, -1]
