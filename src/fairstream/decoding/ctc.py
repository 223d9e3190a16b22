"""Greedy decoding of a transducer's auxiliary CTC head (a diagnostic next to the transducer).

A model trained with ``ctc_weight > 0`` carries a linear CTC head on its encoder. Decoding it
greedily (best symbol per encoder frame, repeats merged, blanks dropped) shows how much of the
transducer's accuracy the encoder alone already carries: if the transducer decodes worse than
its own CTC head, the predictor or joiner is the problem, not the encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairstream.decoding.hypothesis import Hypothesis, frame_seconds
from fairstream.errors import InputDataError
from fairstream.models.transducer import Transducer

__all__ = ["ctc_greedy_search"]


@torch.no_grad()
def ctc_greedy_search(
    model: Transducer, encoder_out: Tensor, encoder_lens: Tensor
) -> list[Hypothesis]:
    """Best-path CTC decoding of ``model.ctc_head`` on encoder output.

    Args:
        model: a :class:`~fairstream.models.transducer.Transducer` built with a CTC head.
        encoder_out: ``(B, T', D)`` from ``model.encode``.
        encoder_lens: ``(B,)`` valid encoder frames per item (frames past it are ignored).

    Returns:
        One :class:`Hypothesis` per item: the tokens, the frame where each token's run
        starts, and the summed log-probability of the best path over the valid frames.

    Raises:
        InputDataError: the model has no CTC head, or the shapes disagree.
    """
    head = getattr(model, "ctc_head", None)
    if head is None:
        raise InputDataError("this model has no CTC head (it was trained with ctc_weight = 0)")
    if encoder_out.dim() != 3 or encoder_lens.shape != (encoder_out.shape[0],):
        raise InputDataError(
            f"encoder_out must be (B, T', D) with encoder_lens (B,), got "
            f"{tuple(encoder_out.shape)} and {tuple(encoder_lens.shape)}"
        )
    blank = int(model.blank_id)
    log_probs = torch.log_softmax(head(encoder_out), dim=-1)
    best, ids = log_probs.max(dim=-1)  # (B, T')
    spf = frame_seconds(int(model.subsampling))
    out: list[Hypothesis] = []
    for b in range(encoder_out.shape[0]):
        n = int(encoder_lens[b])
        seq = ids[b, :n].tolist()
        tokens: list[int] = []
        frames: list[int] = []
        prev = blank
        for t, sym in enumerate(seq):
            if sym != blank and sym != prev:
                tokens.append(sym)
                frames.append(t)
            prev = sym
        out.append(Hypothesis.from_frames(tuple(tokens), tuple(frames),
                                          float(best[b, :n].sum()), seconds_per_frame=spf))
    return out
