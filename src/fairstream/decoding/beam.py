"""Frame-synchronous transducer beam search, offline or chunk by chunk, with optional
shallow fusion of a token n-gram LM.

At every encoder frame each live hypothesis may emit up to ``max_symbols_per_frame``
tokens before a blank moves it to the next frame (as in greedy search; a hypothesis that
reaches the limit moves on without paying for the blank). Within a frame the search runs in
rounds: in round ``r`` every hypothesis that has emitted ``r`` tokens at this frame is
extended by blank (it is done with the frame) and by its best tokens, of which the ``beam``
best survive to round ``r + 1``. Hypotheses done with the frame that carry the same token
sequence are merged (probabilities added) and the ``beam`` best go on to the next frame.
With ``max_symbols_per_frame=1`` this is the modified beam search of Kang et al. (2022);
with ``beam=1`` and one symbol per frame it equals greedy search with one symbol per frame
(tested).

Shallow fusion adds ``lm_weight * log P_LM(token | history)`` and ``token_bonus`` for every
emitted token, and ``lm_weight * log P_LM(</s> | history)`` when the utterance ends.

:func:`beam_search_chunk` continues a search from an explicit :class:`BeamState`, so a
streaming decoder reaches exactly the offline result (the offline function runs the same
loop over all frames at once).

Dimension letters: B batch, T' encoder frames, D encoder dims, J joiner dims, K live
hypotheses, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fairstream.decoding.hypothesis import Hypothesis, frame_seconds
from fairstream.decoding.search import SearchConfig
from fairstream.errors import InputDataError
from fairstream.lm.ngram import NgramLM
from fairstream.models.state import PredictorState, cat_states
from fairstream.models.transducer import Transducer

__all__ = [
    "BeamSearch",
    "BeamState",
    "beam_hypothesis",
    "beam_search",
    "beam_search_chunk",
]


@dataclass(frozen=True)
class BeamSearch:
    """A beam search ready to run: its settings and the token LM they fuse.

    Attributes:
        config: Beam width, symbols per frame, fusion weight and token bonus (its ``method``
            and ``lm_order`` are not read here).
        lm: Token n-gram LM for shallow fusion (over the model's vocabulary), or ``None``.
    """

    config: SearchConfig = field(default_factory=lambda: SearchConfig(method="beam"))
    lm: NgramLM | None = None

    @property
    def beam(self) -> int:
        """Hypotheses kept per frame (and per round within a frame)."""
        return self.config.beam

    @property
    def max_symbols_per_frame(self) -> int:
        """Tokens a hypothesis may emit at one encoder frame."""
        return self.config.max_symbols_per_frame

    @property
    def lm_weight(self) -> float:
        """Weight of the LM log-probability (0 without an LM)."""
        return self.config.lm_weight if self.lm is not None else 0.0

    @property
    def token_bonus(self) -> float:
        """Score added per emitted token."""
        return self.config.bonus(self.lm is not None)

    @property
    def fused(self) -> bool:
        """Whether LM scores enter the search."""
        return self.lm is not None and self.lm_weight > 0

    def check(self, vocab_size: int, blank_id: int = 0) -> None:
        """Raise :class:`InputDataError` on an LM of another vocabulary or blank id."""
        if self.lm is not None and self.lm.vocab_size != vocab_size:
            raise InputDataError(
                f"LM vocabulary ({self.lm.vocab_size}) does not match the model's ({vocab_size})"
            )
        if self.lm is not None and self.lm.blank_id != blank_id:
            raise InputDataError(
                f"LM blank id ({self.lm.blank_id}) differs from the model's ({blank_id})"
            )


@dataclass(frozen=True)
class BeamState:
    """Live hypotheses of one stream's beam search, best first.

    Attributes:
        predictor_state: Predictor state after each hypothesis' last token (batch ``K``).
        predictor_proj: ``(K, J)`` predictor output after the last token, projected by the
            joiner (a cache).
        tokens: Token sequence of each hypothesis.
        frames: Encoder frame of each token.
        lm_contexts: LM context after each hypothesis' tokens (empty tuples without an LM).
        scores: ``(K,)`` float64 search scores (transducer log-probability plus fusion terms).
        frames_done: Encoder frames consumed.
    """

    predictor_state: PredictorState
    predictor_proj: Tensor
    tokens: tuple[tuple[int, ...], ...]
    frames: tuple[tuple[int, ...], ...]
    lm_contexts: tuple[tuple[int, ...], ...]
    scores: Tensor
    frames_done: int


def init_beam_state(model: Transducer, config: BeamSearch,
                    device: torch.device | None = None) -> BeamState:
    """One empty hypothesis: the predictor has seen the blank start symbol only."""
    start = torch.full((1,), model.blank_id, dtype=torch.long, device=device)
    out, pstate = model.predict_step(start, model.predictor.init_state(1, device=device))
    ctx = config.lm.initial_context() if config.lm is not None else ()
    return BeamState(
        predictor_state=pstate,
        predictor_proj=model.joiner.project_predictor(out),
        tokens=((),),
        frames=((),),
        lm_contexts=(ctx,),
        scores=torch.zeros(1, dtype=torch.float64, device=device),
        frames_done=0,
    )


@torch.no_grad()
def beam_search_chunk(
    model: Transducer,
    encoder_out: Tensor,
    state: BeamState | None = None,
    config: BeamSearch | None = None,
) -> BeamState:
    """Continue one stream's beam search over its next encoder frames.

    Args:
        model: The transducer (eval mode).
        encoder_out: ``(T', D)`` next encoder frames of one stream (``T'`` may be 0).
        state: From the previous call; ``None`` starts a new search.
        config: Search settings (the same for every chunk of a stream).

    Returns:
        The new state.
    """
    config = config or BeamSearch()
    config.check(model.vocab_size, model.blank_id)
    if encoder_out.dim() != 2:
        raise InputDataError(f"beam_search_chunk takes (T', D) frames of one stream, got "
                             f"shape {tuple(encoder_out.shape)}")
    if state is None:
        state = init_beam_state(model, config, device=encoder_out.device)
    enc_proj = model.joiner.project_encoder(encoder_out)  # (T', J)
    for t in range(enc_proj.shape[0]):
        state = _step_frame(model, enc_proj[t], state, config)
    return state


def _lm_scores(config: BeamSearch, contexts: tuple[tuple[int, ...], ...],
               vocab: int, device: torch.device) -> Tensor | None:
    if not config.fused:
        return None
    assert config.lm is not None
    rows = np.stack([config.lm.log_probs(c)[:vocab] for c in contexts])
    return torch.from_numpy(rows).to(device) * config.lm_weight


def _step_frame(model: Transducer, enc_t: Tensor, state: BeamState,
                config: BeamSearch) -> BeamState:
    blank = model.blank_id
    vocab = model.vocab_size
    t = state.frames_done
    device = enc_t.device
    # hypotheses of the current round
    pstate, pproj = state.predictor_state, state.predictor_proj
    tokens, frames, ctxs, scores = state.tokens, state.frames, state.lm_contexts, state.scores
    # hypotheses done with this frame:
    # key -> [merged score, round, row, frames, lm context, best single-path score]
    done: dict[tuple[int, ...], list] = {}
    round_states: list[PredictorState] = []
    round_projs: list[Tensor] = []
    limit = config.max_symbols_per_frame
    for r in range(limit + 1):
        round_states.append(pstate)
        round_projs.append(pproj)
        if r == limit:  # symbol limit reached: move on without the blank
            moved = scores
        else:
            logp = model.joiner.joint(enc_t.unsqueeze(0), pproj).log_softmax(dim=-1).double()
            moved = scores + logp[:, blank]
        for i, s in enumerate(moved.tolist()):
            entry = done.get(tokens[i])
            if entry is None:
                done[tokens[i]] = [s, r, i, frames[i], ctxs[i], s]
            else:
                if s > entry[5]:  # keep the frames of the best single path
                    entry[1:] = [r, i, frames[i], ctxs[i], s]
                entry[0] = float(np.logaddexp(entry[0], s))
        if r == limit:
            break
        ext = scores.unsqueeze(1) + logp + config.token_bonus
        fused = _lm_scores(config, ctxs, vocab, device)
        if fused is not None:
            ext = ext + fused
        ext[:, blank] = -torch.inf
        top_scores, top_idx = ext.flatten().topk(min(config.beam, ext.numel()))
        keep = torch.isfinite(top_scores)
        if not bool(keep.any()):
            break
        top_scores, top_idx = top_scores[keep], top_idx[keep]
        src = torch.div(top_idx, vocab, rounding_mode="floor")
        tok = top_idx % vocab
        out, pstate = model.predict_step(tok, pstate.select(src))
        pproj = model.joiner.project_predictor(out)
        src_l, tok_l = src.tolist(), tok.tolist()
        tokens = tuple(tokens[s] + (k,) for s, k in zip(src_l, tok_l))
        frames = tuple(frames[s] + (t,) for s in src_l)
        if config.lm is not None:
            ctxs = tuple(config.lm.advance(ctxs[s], k) for s, k in zip(src_l, tok_l))
        else:
            ctxs = tuple(() for _ in src_l)
        scores = top_scores
    best = sorted(done.items(), key=lambda kv: -kv[1][0])[: config.beam]
    # gather the predictor state of each survivor from the round it finished in
    offsets = np.cumsum([0] + [len(p) for p in round_projs])
    rows = torch.tensor([int(offsets[e[1]]) + e[2] for _, e in best], dtype=torch.long,
                        device=device)
    all_states = cat_states(round_states)
    return BeamState(
        predictor_state=all_states.select(rows),
        predictor_proj=torch.cat(round_projs).index_select(0, rows),
        tokens=tuple(k for k, _ in best),
        frames=tuple(e[3] for _, e in best),
        lm_contexts=tuple(e[4] for _, e in best),
        scores=torch.tensor([e[0] for _, e in best], dtype=torch.float64, device=device),
        frames_done=t + 1,
    )


def beam_hypothesis(model: Transducer, state: BeamState, config: BeamSearch | None = None,
                    *, final: bool = True, frame_shift: float = 0.01) -> Hypothesis:
    """The best hypothesis of a state.

    With ``final`` and an LM, each hypothesis first gets ``lm_weight * log P(</s> | tokens)``
    (the utterance has ended); partial results rank by the running score.
    """
    config = config or BeamSearch()
    scores = state.scores.clone()
    if final and config.fused:
        assert config.lm is not None
        eos = torch.tensor([config.lm.log_probs(c)[config.lm.eos_id] for c in state.lm_contexts],
                           dtype=torch.float64, device=scores.device)
        scores += config.lm_weight * eos
    best = int(scores.argmax())
    return Hypothesis.from_frames(
        state.tokens[best], state.frames[best], float(scores[best]),
        seconds_per_frame=frame_seconds(model.subsampling, frame_shift),
    )


@torch.no_grad()
def beam_search(
    model: Transducer,
    encoder_out: Tensor,
    encoder_lens: Tensor,
    config: BeamSearch | None = None,
    *,
    frame_shift: float = 0.01,
) -> list[Hypothesis]:
    """Beam search over whole utterances, one utterance at a time with its hypotheses batched.

    Args:
        model: The transducer (eval mode).
        encoder_out: ``(B, T', D)`` from ``model.encode``.
        encoder_lens: ``(B,)``.
        config: Beam width, symbol limit and LM fusion (default: :class:`SearchConfig`'s
            settings, no LM).
        frame_shift: Feature frame shift in seconds (for timestamps).

    Returns:
        The best :class:`Hypothesis` per utterance; its score is the search score
        (log-probability summed over merged paths, plus the fusion terms if any).
    """
    config = config or BeamSearch()
    config.check(model.vocab_size, model.blank_id)
    results = []
    for b in range(encoder_out.shape[0]):
        n = int(encoder_lens[b])
        state = beam_search_chunk(model, encoder_out[b, :n], None, config)
        results.append(beam_hypothesis(model, state, config, frame_shift=frame_shift))
    return results
