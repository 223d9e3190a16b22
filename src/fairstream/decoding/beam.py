"""Modified beam search for transducers (at most one symbol per encoder frame).

At every frame each of the ``beam`` hypotheses is extended by blank or by one token; the
``beam`` best extensions survive, and extensions with the same token sequence are merged
(their probabilities added). With ``beam=1`` this is greedy search with one symbol per frame.

Dimension letters: B batch, T' encoder frames, D encoder dims, K live hypotheses, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairstream.decoding.hypothesis import Hypothesis, frame_seconds
from fairstream.errors import InputDataError
from fairstream.models.transducer import Transducer

__all__ = ["modified_beam_search"]


@torch.no_grad()
def modified_beam_search(
    model: Transducer,
    encoder_out: Tensor,
    encoder_lens: Tensor,
    *,
    beam: int = 4,
    frame_shift: float = 0.01,
) -> list[Hypothesis]:
    """Modified beam search, one utterance at a time with the hypotheses batched.

    Args:
        model: The transducer (eval mode).
        encoder_out: ``(B, T', D)`` from ``model.encode``.
        encoder_lens: ``(B,)``.
        beam: Hypotheses kept per frame (>= 1).
        frame_shift: Feature frame shift in seconds (for timestamps).

    Returns:
        The best :class:`Hypothesis` (highest score) per utterance.
    """
    if beam < 1:
        raise InputDataError(f"beam must be >= 1, got {beam}")
    spf = frame_seconds(model.subsampling, frame_shift)
    results = []
    for b in range(encoder_out.shape[0]):
        n = int(encoder_lens[b])
        results.append(_search_one(model, encoder_out[b, :n], beam, spf))
    return results


def _search_one(model: Transducer, enc: Tensor, beam: int, seconds_per_frame: float) -> Hypothesis:
    blank = model.blank_id
    device = enc.device
    enc_proj = model.joiner.project_encoder(enc)  # (T', J)
    start = torch.full((1,), blank, dtype=torch.long, device=device)
    out, pstate = model.predict_step(start, model.predictor.init_state(1, device=device))
    pproj = model.joiner.project_predictor(out)  # (K, J)
    tokens: list[tuple[int, ...]] = [()]
    frames: list[tuple[int, ...]] = [()]
    scores = torch.zeros(1, dtype=torch.float64, device=device)
    vocab = model.vocab_size
    for t in range(enc_proj.shape[0]):
        logp = model.joiner.joint(enc_proj[t].unsqueeze(0), pproj).log_softmax(dim=-1)  # (K, V)
        total = scores.unsqueeze(1) + logp.double()
        top_scores, top_idx = total.flatten().topk(min(beam, total.numel()))
        merged: dict[tuple[int, ...], int] = {}
        new_src: list[int] = []
        new_tok: list[int] = []
        new_tokens: list[tuple[int, ...]] = []
        new_frames: list[tuple[int, ...]] = []
        new_scores: list[Tensor] = []
        for score, idx in zip(top_scores, top_idx.tolist()):
            src, tok = divmod(idx, vocab)
            key = tokens[src] if tok == blank else tokens[src] + (tok,)
            if key in merged:
                j = merged[key]
                new_scores[j] = torch.logaddexp(new_scores[j], score)
                continue
            merged[key] = len(new_tokens)
            new_src.append(src)
            new_tok.append(tok)
            new_tokens.append(key)
            new_frames.append(frames[src] if tok == blank else frames[src] + (t,))
            new_scores.append(score)
        src_t = torch.tensor(new_src, dtype=torch.long, device=device)
        tok_t = torch.tensor(new_tok, dtype=torch.long, device=device)
        emit = tok_t != blank
        kept_state = pstate.select(src_t)
        kept_proj = pproj.index_select(0, src_t)
        if bool(emit.any()):
            out, stepped = model.predict_step(torch.where(emit, tok_t, blank), kept_state)
            pstate = stepped.where(emit, kept_state)  # type: ignore[arg-type]
            pproj = torch.where(emit.unsqueeze(1), model.joiner.project_predictor(out), kept_proj)
        else:
            pstate, pproj = kept_state, kept_proj
        tokens, frames = new_tokens, new_frames
        scores = torch.stack(new_scores)
    best = int(scores.argmax())
    return Hypothesis.from_frames(
        tokens[best], frames[best], float(scores[best]), seconds_per_frame=seconds_per_frame
    )
