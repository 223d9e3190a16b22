"""Export of a streaming encoder whose state does not fit sherpa-onnx's ``lstm`` layout.

``encoder.onnx`` is one call of the encoder's ``stream`` on a fixed chunk of ``T`` feature
frames, every frame valid: inputs ``x (N, T, F)`` raw log-mel frames and the state tensors
``state_0 .. state_k``; outputs ``encoder_out (N, T / S * R, J)`` (CMVN folded in front,
output in joiner space, frames repeated ``R`` times, as in the ``lstm`` layout) and
``next_state_0 .. next_state_k``, for one stream (``N = 1``: the graph is traced with
static shapes, which ContextNet's depthwise unfold needs). The state order is the encoder
state's dataclass fields in declaration order, a tuple field contributing its tensors in
order; every tensor has the batch on dim 0. The layout (names, field, per-stream shape,
dtype, batch dim, initial values when ``init_state`` is not all zeros) is stored in the
``fairstream_export`` metadata with ``model_type=fairstream-generic``, which sherpa-onnx does
not know and refuses. A state
tensor the step never reads is left out of the graph's inputs by the exporter; its
``next_state`` output is still there, and a runtime feeds only the inputs a graph declares.

Dimension letters as in :mod:`fairstream.export.onnx`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.features.fbank import Cmvn
from fairstream.models.encoders import contextnet
from fairstream.models.encoders.base import StreamingEncoder
from fairstream.models.encoders.conformer import ConformerEncoder
from fairstream.models.state import EncoderState
from fairstream.models.transducer import Transducer

__all__ = ["GENERIC_MODEL_TYPE", "StateSpec", "flatten_state", "state_specs", "untraceable"]

GENERIC_MODEL_TYPE = "fairstream-generic"


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of a generic export.

    Attributes:
        name: Graph input name (``state_i``; the output is ``next_state_i``).
        field: The encoder state's field (``conv_buffers[2]`` for a tuple field's item).
        shape: Shape for one stream (the batch dim is 1).
        dtype: numpy dtype name (``float32``, ``int64``).
        batch_dim: The dim that batches streams (0).
        init: The initial values of one stream, flattened, or ``None`` for zeros.
    """

    name: str
    field: str
    shape: tuple[int, ...]
    dtype: str
    batch_dim: int
    init: tuple[float, ...] | None


def flatten_state(state: EncoderState) -> list[Tensor]:
    """The tensors of ``state`` in the export order (fields in order, tuples expanded)."""
    out: list[Tensor] = []
    for f in dataclasses.fields(state):  # type: ignore[arg-type]
        value = getattr(state, f.name)
        out.extend(value if isinstance(value, tuple) else [value])
    return out


def _unflatten_state(template: EncoderState, tensors: list[Tensor]) -> EncoderState:
    parts: dict[str, Tensor | tuple[Tensor, ...]] = {}
    i = 0
    for f in dataclasses.fields(template):  # type: ignore[arg-type]
        value = getattr(template, f.name)
        if isinstance(value, tuple):
            parts[f.name] = tuple(tensors[i:i + len(value)])
            i += len(value)
        else:
            parts[f.name] = tensors[i]
            i += 1
    return type(template)(**parts)


def state_specs(state: EncoderState) -> tuple[StateSpec, ...]:
    """The layout of a one-stream ``state`` (from ``init_state(1)``)."""
    specs = []
    i = 0
    for f in dataclasses.fields(state):  # type: ignore[arg-type]
        value = getattr(state, f.name)
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for k, t in items:
            init = None if not bool(t.any()) else tuple(float(v) for v in t.flatten().tolist())
            specs.append(StateSpec(
                name=f"state_{i}", field=f.name if k is None else f"{f.name}[{k}]",
                shape=tuple(t.shape), dtype=str(t.numpy().dtype), batch_dim=0, init=init))
            i += 1
    return tuple(specs)


def untraceable(encoder: object) -> str | None:
    """Why ``encoder``'s ``stream`` cannot be traced to one fixed ONNX step, or ``None``."""
    if isinstance(encoder, ConformerEncoder):
        return ("its stream loops in Python over the chunks that are ready (a count read from "
                "the state) and keeps a pending buffer whose width depends on the input seen, "
                "so one traced step does not fit every call")
    return None


@contextlib.contextmanager
def _general_frame_path() -> Iterator[None]:
    """ContextNet reads the frames a stream has seen as a Python int when all streams share
    it (a fast path); tracing would freeze that count. Inside, it takes its general path,
    which computes the same from the state's tensors."""
    original = contextnet._Frames.of

    def of(lens: Tensor, seen: Tensor) -> contextnet._Frames:
        frames = original(lens, seen)
        return contextnet._Frames(frames.lens, frames.seen, frames.common_len, None)

    contextnet._Frames.of = staticmethod(of)  # type: ignore[method-assign]
    try:
        yield
    finally:
        contextnet._Frames.of = original  # type: ignore[method-assign]


class GenericEncoderGraph(nn.Module):
    """CMVN + one ``stream`` call on a full chunk + the joiner's encoder projection + frame
    repeat, with the state as flat tensors (see the module docstring)."""

    def __init__(self, model: Transducer, cmvn: Cmvn, frame_repeat: int) -> None:
        super().__init__()
        self.enc = model.encoder
        self.enc_proj = model.joiner.enc_proj
        self.frame_repeat = frame_repeat
        self.template: EncoderState = self.enc.init_state(1)
        self.scale: Tensor
        self.shift: Tensor
        self.register_buffer("scale", torch.from_numpy(1.0 / cmvn.std).float())
        self.register_buffer("shift", torch.from_numpy(-cmvn.mean / cmvn.std).float())

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        feats = x * self.scale + self.shift
        lens = torch.full_like(x[:, 0, 0], x.shape[1], dtype=torch.long)
        with _general_frame_path():
            y, _, new_state = self.enc.stream(feats, lens,
                                              _unflatten_state(self.template, list(state)))
        y = self.enc_proj(y)
        if self.frame_repeat > 1:
            y = y.repeat_interleave(self.frame_repeat, dim=1)
        return (y, *flatten_state(new_state))


def check_generic_chunk(encoder: StreamingEncoder[Any], frames: int) -> None:
    """Refuse a chunk of ``frames`` feature frames the encoder's stream does not take whole.

    Raises:
        InputDataError: naming the encoder and its constraints.
    """
    name = type(encoder).__name__
    why = untraceable(encoder)
    if why:
        raise InputDataError(f"cannot export encoder {name} to ONNX: {why}")
    if encoder.right_context:
        raise InputDataError(f"cannot export encoder {name}: right_context "
                             f"{encoder.right_context} (a fixed step emits no held-back frames)")
    mult = encoder.chunk_frames_multiple
    if frames < encoder.chunk_frames_min or frames % mult:
        raise InputDataError(f"chunk of {frames} frames does not suit {name} (at least "
                             f"{encoder.chunk_frames_min}, a multiple of {mult})")
