"""Batched greedy search for transducers, offline or chunk by chunk.

:func:`greedy_search` decodes whole encoder outputs; :func:`greedy_search_chunk` continues a
search from an explicit :class:`GreedyState`, so a streaming decoder produces exactly the
offline result (the offline function is one chunk of the same loop).

Dimension letters: B batch, T' encoder frames, D encoder dims, J joiner dims, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fairstream.decoding.hypothesis import Hypothesis, frame_seconds
from fairstream.decoding.search import SearchConfig
from fairstream.errors import InputDataError
from fairstream.models.state import PredictorState
from fairstream.models.transducer import Transducer

__all__ = [
    "GreedyState",
    "greedy_hypotheses",
    "greedy_search",
    "greedy_search_chunk",
    "init_greedy_state",
]


@dataclass(frozen=True)
class GreedyState:
    """Decoder state of a batch of greedy searches.

    Attributes:
        predictor_state: Predictor state after the last emitted token of each stream.
        predictor_proj: ``(B, J)`` predictor output after the last token, already projected
            by the joiner (a cache: recomputing it from ``predictor_state`` gives the same).
        tokens: Tokens emitted so far, per stream.
        frames: Encoder frame of each emitted token, per stream.
        scores: ``(B,)`` float64 path log-probabilities.
        frames_done: ``(B,)`` int64 encoder frames consumed per stream.
    """

    predictor_state: PredictorState
    predictor_proj: Tensor
    tokens: tuple[tuple[int, ...], ...]
    frames: tuple[tuple[int, ...], ...]
    scores: Tensor
    frames_done: Tensor


def init_greedy_state(
    model: Transducer, batch_size: int, device: torch.device | None = None
) -> GreedyState:
    """Fresh state: the predictor has seen the blank start symbol only."""
    blank = torch.full((batch_size,), model.blank_id, dtype=torch.long, device=device)
    out, pstate = model.predict_step(blank, model.predictor.init_state(batch_size, device=device))
    return GreedyState(
        predictor_state=pstate,
        predictor_proj=model.joiner.project_predictor(out),
        tokens=tuple(() for _ in range(batch_size)),
        frames=tuple(() for _ in range(batch_size)),
        scores=torch.zeros(batch_size, dtype=torch.float64, device=device),
        frames_done=torch.zeros(batch_size, dtype=torch.long, device=device),
    )


@torch.no_grad()
def greedy_search_chunk(
    model: Transducer,
    encoder_out: Tensor,
    encoder_lens: Tensor,
    state: GreedyState | None = None,
    *,
    max_symbols_per_frame: int = SearchConfig.max_symbols_per_frame,
) -> GreedyState:
    """Continue greedy searches over the next encoder frames.

    At each frame the most likely symbol is taken; a non-blank symbol is emitted and the
    same frame is tried again, up to ``max_symbols_per_frame`` symbols, a blank moves on.

    Args:
        model: The transducer (put it in eval mode).
        encoder_out: ``(B, T', D)`` next encoder frames.
        encoder_lens: ``(B,)`` valid frames per stream (0 allowed).
        state: From the previous call; ``None`` starts new searches.
        max_symbols_per_frame: Symbol limit per frame (>= 1).

    Returns:
        The new state.
    """
    if max_symbols_per_frame < 1:
        raise InputDataError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
    b = encoder_out.shape[0]
    if state is None:
        state = init_greedy_state(model, b, device=encoder_out.device)
    elif state.scores.shape[0] != b:
        raise InputDataError(f"greedy state holds {state.scores.shape[0]} streams, chunk has {b}")
    blank = model.blank_id
    enc_proj = model.joiner.project_encoder(encoder_out)  # (B, T', J)
    tokens = [list(t) for t in state.tokens]
    frames = [list(f) for f in state.frames]
    pstate = state.predictor_state
    pproj = state.predictor_proj
    scores = state.scores.clone()
    lens = encoder_lens.to(encoder_out.device)
    for t in range(encoder_out.shape[1]):
        active = lens > t
        if not bool(active.any()):
            break
        enc_t = enc_proj[:, t]
        for _ in range(max_symbols_per_frame):
            logp = model.joiner.joint(enc_t, pproj).log_softmax(dim=-1)  # (B, V)
            best_logp, best = logp.max(dim=-1)
            scores += torch.where(active, best_logp.double(), 0.0)
            emit = active & (best != blank)
            if not bool(emit.any()):
                break
            for i in torch.nonzero(emit).flatten().tolist():
                tokens[i].append(int(best[i]))
                frames[i].append(int(state.frames_done[i]) + t)
            out, new_pstate = model.predict_step(torch.where(emit, best, blank), pstate)
            pstate = new_pstate.where(emit, pstate)  # type: ignore[arg-type]
            pproj = torch.where(emit.unsqueeze(1), model.joiner.project_predictor(out), pproj)
            active = emit
    return GreedyState(
        predictor_state=pstate,
        predictor_proj=pproj,
        tokens=tuple(tuple(t) for t in tokens),
        frames=tuple(tuple(f) for f in frames),
        scores=scores,
        frames_done=state.frames_done + lens.to(torch.long),
    )


def greedy_hypotheses(
    model: Transducer, state: GreedyState, *, frame_shift: float = 0.01
) -> list[Hypothesis]:
    """The hypotheses held by a greedy state (timestamps from the model's subsampling)."""
    spf = frame_seconds(model.subsampling, frame_shift)
    return [
        Hypothesis.from_frames(tok, fr, float(sc), seconds_per_frame=spf)
        for tok, fr, sc in zip(state.tokens, state.frames, state.scores.tolist())
    ]


@torch.no_grad()
def greedy_search(
    model: Transducer,
    encoder_out: Tensor,
    encoder_lens: Tensor,
    *,
    max_symbols_per_frame: int = SearchConfig.max_symbols_per_frame,
    frame_shift: float = 0.01,
) -> list[Hypothesis]:
    """Batched greedy search over whole utterances.

    Args:
        model: The transducer (eval mode).
        encoder_out: ``(B, T', D)`` from ``model.encode``.
        encoder_lens: ``(B,)``.
        max_symbols_per_frame: Symbol limit per frame.
        frame_shift: Feature frame shift in seconds (for timestamps).

    Returns:
        One :class:`Hypothesis` per utterance.
    """
    state = greedy_search_chunk(
        model, encoder_out, encoder_lens, None, max_symbols_per_frame=max_symbols_per_frame
    )
    return greedy_hypotheses(model, state, frame_shift=frame_shift)
