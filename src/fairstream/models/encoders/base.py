"""The encoder contract: what a transducer, a trainer and a streaming recognizer may rely on.

An encoder is an ``nn.Module`` that satisfies :class:`StreamingEncoder`:

* ``forward(x, x_lens) -> EncoderOutput``: whole utterances; the output may carry auxiliary
  losses (already weighted) that the training objective adds to its loss, and statistics
  (a compute penalty, gate rates) that training logs;
* ``stream(x, x_lens, state, final=...) -> (y, y_lens, state)``: the next chunk of each
  stream, with explicit state; concatenating a stream's outputs gives the ``y`` of
  ``forward`` on its concatenated input, for any chunking that meets the chunk constraints;
* ``init_state(batch_size)``, ``select_state(state, indices)``, ``stack_states(states)``:
  fresh state and state batching, so several streams run in one batch and leave it again;
* declared attributes: ``output_dim``, ``subsampling``, ``right_context`` (lookahead, in
  encoder frames) and the chunk constraints ``chunk_frames_min`` / ``chunk_frames_multiple``.

Dimension letters: B batch, T feature frames, t frames in a chunk, T' encoder frames,
F features, D output size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from fairstream.errors import InputDataError

__all__ = ["EncoderOutput", "StreamingEncoder", "check_encoder"]

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class EncoderOutput:
    """Result of an encoder's full pass.

    Attributes:
        y: ``(B, T', D)`` encoder frames.
        y_lens: ``(B,)`` int64 valid frames per item.
        aux_losses: Named scalar losses, already weighted, that the training objective adds
            to its loss (for example a compute penalty of a gated encoder).
        stats: Named scalars that training logs and does not optimize (gate rates, ...).
    """

    y: Tensor
    y_lens: Tensor
    aux_losses: Mapping[str, Tensor] = field(default_factory=dict)
    stats: Mapping[str, float | Tensor] = field(default_factory=dict)


@runtime_checkable
class StreamingEncoder(Protocol[StateT]):
    """A streaming encoder (implemented by ``nn.Module`` subclasses).

    Attributes:
        output_dim: D.
        subsampling: Feature frames per encoder frame: ``T`` frames give
            ``ceil(T / subsampling)`` encoder frames.
        right_context: Lookahead in encoder frames: encoder frame ``j`` may depend on feature
            frames up to ``(j + 1 + right_context) * subsampling - 1``. ``stream`` emits frame
            ``j`` only once those frames have arrived (or at the final call), so its output
            lags its input by up to ``right_context`` frames; a streaming recognizer's
            latency grows by ``right_context * subsampling`` feature frames.
        chunk_frames_min: Fewest new feature frames a stream may receive in a call of
            ``stream`` that is not final (0 frames are always allowed).
        chunk_frames_multiple: The new feature frames of a stream in a call that is not
            final are a multiple of this.
    """

    output_dim: int
    subsampling: int
    right_context: int
    chunk_frames_min: int
    chunk_frames_multiple: int

    def forward(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """Encode whole utterances: ``(B, T, F), (B,) -> EncoderOutput``."""
        ...

    def __call__(self, x: Tensor, x_lens: Tensor) -> EncoderOutput:
        """``forward`` through ``nn.Module.__call__``."""
        ...

    def stream(
        self, x: Tensor, x_lens: Tensor, state: StateT | None = None, *, final: bool = False
    ) -> tuple[Tensor, Tensor, StateT]:
        """Encode the next chunk of each stream.

        Args:
            x: ``(B, t, F)`` next feature frames.
            x_lens: ``(B,)`` valid new frames per stream (0 allowed).
            state: From the previous call; ``None`` starts new streams.
            final: No input follows: also emit the frames held back for lookahead (computed
                as the full pass computes the end of an utterance).

        Returns:
            ``y (B, t', D)``, ``y_lens (B,)`` (new encoder frames per stream) and the state.
        """
        ...

    def init_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> StateT:
        """State of ``batch_size`` fresh streams (what ``stream(..., None)`` starts from)."""
        ...

    def select_state(self, state: StateT, indices: Tensor) -> StateT:
        """The streams ``indices`` (``(N,)`` int64) of ``state``, as a state of N streams."""
        ...

    def stack_states(self, states: Sequence[StateT]) -> StateT:
        """One state holding the streams of ``states`` in order (batch sizes add up)."""
        ...


_DECLARED = ("output_dim", "subsampling", "right_context", "chunk_frames_min",
             "chunk_frames_multiple")
_METHODS = ("forward", "stream", "init_state", "select_state", "stack_states")


def check_encoder(encoder: object) -> None:
    """Check that ``encoder`` declares and implements the :class:`StreamingEncoder` contract.

    Raises:
        InputDataError: naming the missing members or the declared values out of range.
    """
    missing = [m for m in _DECLARED + _METHODS if not hasattr(encoder, m)]
    if missing:
        raise InputDataError(
            f"{type(encoder).__name__} does not follow the encoder contract; missing: "
            f"{', '.join(missing)}"
        )
    values = {name: getattr(encoder, name) for name in _DECLARED}
    bad = [
        f"{name}={value!r}"
        for name, value in values.items()
        if not isinstance(value, int) or isinstance(value, bool)
        or value < (0 if name == "right_context" else 1)
    ]
    if bad:
        raise InputDataError(
            f"{type(encoder).__name__} declares {', '.join(bad)}; right_context must be an "
            f"int >= 0 and the others ints >= 1"
        )
