"""The separator-transducer-segmenter: one streaming encoder, C output channels, one transducer.

Sklyar, Piunova, Osendorfer (Interspeech 2022): a shared streaming encoder, a *separator*
that splits its output into ``C`` channels, and one transducer (predictor + joiner) shared
by the channels, whose vocabulary holds the turn tokens ``<sot>`` and ``<eot>``
(:mod:`fairstream.multitalker.targets`). Each channel transcribes the turns HEAT assigned to
it, so overlapping speech is written on two channels and the turn tokens segment each
channel into turns.

**Separator** (a learned projection; per frame, so it streams without state): channel ``c``
is ``h_c = LayerNorm(h + W_c · GELU(V_c · h))`` on the encoder output ``h`` (a residual
bottleneck per channel; ``V_c``: D → ``separator_dim``, ``W_c`` back to D). A masking
separator (``h ⊙ σ(W_c h)``) would be the other choice; the projection can also move
information between dimensions, which a mask cannot.

**Loss** of a batch: the mean over sessions of ``Σ_c RNN-T_c`` (each channel's transducer
loss with FastEmit, the recipe's ``fastemit_lambda``) with the end-of-turn latency penalty
in each channel's lattice (``eot_weight`` λ per second of delay,
:func:`~fairstream.multitalker.targets.eot_delay_bias`), plus the encoder's auxiliary losses
(a gated encoder's compute loss). The single-talker model's CTC head is not trained here.

**Decoding** treats the channels as streams of a batch: ``B`` sessions × ``C`` channels are
``B·C`` rows for the transducer's greedy search, offline (:meth:`decode`) or chunk by chunk
(:class:`MultiTalkerStream`), which gives exactly the offline result.

The multi-turn RNN-T baseline (MT-RNN-T) is the same class with ``channels=1``: one output
stream on which every turn is serialized in start order (``<sot> … <eot>`` marking the turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fairstream.decoding.greedy import (
    GreedyState,
    greedy_hypotheses,
    greedy_search,
    greedy_search_chunk,
    init_greedy_state,
)
from fairstream.decoding.hypothesis import Hypothesis
from fairstream.errors import InputDataError
from fairstream.losses.rnnt import rnnt_loss
from fairstream.metrics.multitalker import Segment
from fairstream.models.transducer import Transducer
from fairstream.multitalker.targets import ChannelTarget, eot_delay_bias

__all__ = ["MultiTalkerOutput", "MultiTalkerStream", "MultiTalkerTransducer", "turns_of"]

FRAME_SHIFT_S = 0.01


@dataclass(frozen=True)
class MultiTalkerOutput:
    """Result of :meth:`MultiTalkerTransducer.forward`.

    Attributes:
        loss: mean over sessions of the summed channel losses (with the penalty).
        channel_losses: (C,) mean loss of each channel (detached).
        num_utterances: sessions in the batch.
    """

    loss: Tensor
    channel_losses: Tensor
    num_utterances: int


class MultiTalkerTransducer(nn.Module):
    """A transducer with a ``channels``-way separator after its encoder.

    Args:
        transducer: the shared encoder, predictor and joiner (its vocabulary includes the turn
            tokens; see :func:`fairstream.training.warm_start.extend_vocabulary`).
        channels: output channels (2: separator-transducer-segmenter; 1: MT-RNN-T).
        separator_dim: bottleneck of each channel's projection.
        eot_weight: λ of the end-of-turn latency penalty, per second of delay (0: none).
        sot_id, eot_id: ids of the turn tokens.
    """

    def __init__(self, transducer: Transducer, *, channels: int = 2, separator_dim: int = 256,
                 eot_weight: float = 0.0, sot_id: int, eot_id: int) -> None:
        super().__init__()
        if channels < 1:
            raise InputDataError(f"channels must be >= 1, got {channels}")
        if eot_weight < 0:
            raise InputDataError(f"eot_weight must be >= 0, got {eot_weight}")
        for name, tid in (("sot_id", sot_id), ("eot_id", eot_id)):
            if not 0 <= tid < transducer.vocab_size or tid == transducer.blank_id:
                raise InputDataError(f"{name} {tid} is not a token of the model's vocabulary "
                                     f"(size {transducer.vocab_size}, blank {transducer.blank_id})")
        self.transducer = transducer
        self.channels = channels
        self.eot_weight = float(eot_weight)
        self.sot_id, self.eot_id = sot_id, eot_id
        d = transducer.encoder.output_dim
        self.down = nn.ModuleList(nn.Linear(d, separator_dim) for _ in range(channels))
        self.up = nn.ModuleList(nn.Linear(separator_dim, d) for _ in range(channels))
        self.norm = nn.LayerNorm(d)
        self.act = nn.GELU()

    @property
    def frame_s(self) -> float:
        """Seconds per encoder frame."""
        return FRAME_SHIFT_S * self.transducer.subsampling

    @property
    def lookahead_s(self) -> float:
        """Seconds of audio after an encoder frame that the encoder needs before it can emit
        the frame (its ``right_context``): added to every emission time."""
        return float(getattr(self.transducer.encoder, "right_context", 0)) * self.frame_s

    def separate(self, h: Tensor) -> Tensor:
        """Encoder output (B, T', D) -> channels (B, C, T', D)."""
        return torch.stack([self.norm(h + up(self.act(down(h))))
                            for down, up in zip(self.down, self.up, strict=True)], dim=1)

    def encode(self, features: Tensor, feature_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Whole sessions: (B, T, F), (B,) -> channels (B, C, T', D), (B,)."""
        out = self.transducer.encoder(features, feature_lens)
        return self.separate(out.y), out.y_lens

    def forward(self, features: Tensor, feature_lens: Tensor,
                targets: Sequence[Sequence[ChannelTarget]]) -> MultiTalkerOutput:
        """Training loss; ``targets[b][c]`` is session b's channel c.

        Raises:
            InputDataError: a session without exactly ``channels`` channel targets.
        """
        b = features.shape[0]
        if len(targets) != b or any(len(t) != self.channels for t in targets):
            raise InputDataError(f"need {self.channels} channel targets for each of the {b} "
                                 "sessions")
        out = self.transducer.encoder(features, feature_lens)
        chans, lens = self.separate(out.y), out.y_lens
        m = self.transducer
        losses = []
        for c in range(self.channels):
            seqs = [t[c].tokens for t in targets]
            width = max(1, max(len(s) for s in seqs))
            tokens = torch.full((b, width), m.blank_id, dtype=torch.long)
            for i, s in enumerate(seqs):
                tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            token_lens = torch.tensor([len(s) for s in seqs])
            logits = m.joiner(chans[:, c], m.predict(tokens))
            bias = None
            if self.eot_weight > 0:
                bias = eot_delay_bias([t[c] for t in targets], logits.shape[1], width,
                                      self.frame_s, self.eot_weight,
                                      lookahead_s=self.lookahead_s)
            losses.append(rnnt_loss(logits, tokens, lens, token_lens, blank=m.blank_id,
                                    reduction="mean", fastemit_lambda=m.fastemit_lambda,
                                    label_bias=bias))
        stacked = torch.stack(losses)
        loss = stacked.sum()
        for aux in out.aux_losses.values():  # e.g. a gated encoder's compute loss
            loss = loss + aux
        return MultiTalkerOutput(loss, stacked.detach(), b)

    @torch.no_grad()
    def decode(self, features: Tensor, feature_lens: Tensor, *, max_symbols_per_frame: int = 3
               ) -> list[list[Hypothesis]]:
        """Greedy search of every channel of whole sessions: ``[session][channel]``."""
        chans, lens = self.encode(features, feature_lens)
        b, c, t, d = chans.shape
        hyps = greedy_search(self.transducer, chans.reshape(b * c, t, d),
                             lens.repeat_interleave(c),
                             max_symbols_per_frame=max_symbols_per_frame)
        return [hyps[i * c:(i + 1) * c] for i in range(b)]


class MultiTalkerStream:
    """Chunk-by-chunk recognition of ``batch_size`` sessions on every channel.

    ``push(features, lens)`` feeds the next feature frames of each session (``final=True``
    ends them); :meth:`hypotheses` gives ``[session][channel]`` so far. The result after the
    last chunk equals :meth:`MultiTalkerTransducer.decode` on the whole sessions.
    """

    def __init__(self, model: MultiTalkerTransducer, batch_size: int = 1, *,
                 max_symbols_per_frame: int = 3) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_symbols = max_symbols_per_frame
        self.encoder_state: Any = None  # Any: the encoder's own state type
        self.search: GreedyState = init_greedy_state(model.transducer,
                                                     batch_size * model.channels)

    @torch.no_grad()
    def push(self, features: Tensor, feature_lens: Tensor, *, final: bool = False) -> None:
        """Consume the next chunk (B, t, F) of each session."""
        y, y_lens, self.encoder_state = self.model.transducer.stream(
            features, feature_lens, self.encoder_state, final=final)
        chans = self.model.separate(y)
        b, c, t, d = chans.shape
        self.search = greedy_search_chunk(
            self.model.transducer, chans.reshape(b * c, t, d), y_lens.repeat_interleave(c),
            self.search, max_symbols_per_frame=self.max_symbols)

    def hypotheses(self) -> list[list[Hypothesis]]:
        """``[session][channel]`` hypotheses so far."""
        hyps = greedy_hypotheses(self.model.transducer, self.search)
        c = self.model.channels
        return [hyps[i * c:(i + 1) * c] for i in range(self.batch_size)]


def turns_of(hypothesis: Hypothesis, session_id: str, channel: int, *, sot_id: int,
             eot_id: int, decode: Any, frame_s: float,  # Any: ids -> text
             lookahead_s: float = 0.0) -> list[Segment]:
    """Cut one channel's tokens into turns at its turn tokens: a turn starts at a ``<sot>``
    (or at the first word when the channel opens without one) and ends at the end of the
    frame of the next ``<eot>`` (or, without one, at the end of its last token's frame:
    such a turn's end is not an ``<eot>`` emission). Times are emission times: a token of
    encoder frame t is out at ``t · frame_s + lookahead_s``, its frame ends ``frame_s``
    later. Each turn is a SegLST segment whose speaker is the channel (``"ch<c>"``); turns
    without words are dropped.
    """
    out: list[Segment] = []
    words: list[int] = []
    start: float | None = None
    last = 0.0
    for tok, frame in zip(hypothesis.tokens, hypothesis.frames, strict=True):
        at = frame * frame_s + lookahead_s
        if tok == sot_id:
            if words:
                out.append(Segment(session_id, f"ch{channel}", start or 0.0, last,
                                   decode(words)))
            words, start = [], at
        elif tok == eot_id:
            if words:
                out.append(Segment(session_id, f"ch{channel}", start if start is not None
                                   else at, at + frame_s, decode(words)))
            words, start = [], None
        else:
            if start is None:
                start = at
            words.append(tok)
        last = at + frame_s
    if words:
        out.append(Segment(session_id, f"ch{channel}", start or 0.0, last, decode(words)))
    return out
