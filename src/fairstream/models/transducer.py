"""The transducer: wires an encoder, a predictor and a joiner (no logic of its own beyond that).

Dimension letters: B batch, T feature frames, F features, T' encoder frames, U tokens,
V vocabulary (blank included, id 0 by default), D model dims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.encoders.base import EncoderOutput, StreamingEncoder, check_encoder
from fairstream.models.joiner import Joiner
from fairstream.models.predictor import LSTMPredictor, StatelessPredictor
from fairstream.models.state import PredictorState

__all__ = ["Transducer", "TransducerOutput"]


@dataclass(frozen=True)
class TransducerOutput:
    """Result of :meth:`Transducer.forward`.

    Attributes:
        loss: Scalar training loss: ``rnnt_loss + ctc_weight * ctc_loss`` plus the sum of
            the encoder's auxiliary losses.
        rnnt_loss: Scalar, mean per-utterance RNN-T negative log-likelihood (detached).
        ctc_loss: Scalar, mean per-utterance CTC loss of the auxiliary head (detached);
            0 when the model has no CTC head.
        encoder_lens: ``(B,)`` encoder frames per utterance.
        num_utterances: B.
        aux_losses: The encoder's auxiliary losses (detached), by name.
        stats: The encoder's statistics as floats, by name (for logging).
    """

    loss: Tensor
    rnnt_loss: Tensor
    ctc_loss: Tensor
    encoder_lens: Tensor
    num_utterances: int
    aux_losses: Mapping[str, Tensor] = field(default_factory=dict)
    stats: Mapping[str, float] = field(default_factory=dict)


class Transducer(nn.Module):
    """RNN-T model ``Transducer(encoder, predictor, joiner)``.

    Args:
        encoder: An ``nn.Module`` following the encoder contract
            (:class:`~fairstream.models.encoders.base.StreamingEncoder`).
        predictor: :class:`StatelessPredictor` or :class:`LSTMPredictor`.
        joiner: :class:`Joiner`.
        blank_id: Blank id (0).
        ctc_weight: Weight of an auxiliary CTC loss on the encoder output; 0 builds no CTC
            head. The CTC head steers the encoder towards monotonic alignments early in
            training, which keeps a small transducer from leaning on its predictor.
        fastemit_lambda: FastEmit regularization passed to the RNN-T loss.

    Raises:
        InputDataError: if the encoder does not follow the contract, or on a bad weight.
    """

    encoder: StreamingEncoder[Any]  # Any: the state type is the encoder's own

    def __init__(
        self,
        encoder: StreamingEncoder[Any],  # Any: the state type is the encoder's own
        predictor: StatelessPredictor | LSTMPredictor,
        joiner: Joiner,
        *,
        blank_id: int = 0,
        ctc_weight: float = 0.0,
        fastemit_lambda: float = 0.0,
    ) -> None:
        super().__init__()
        if ctc_weight < 0:
            raise InputDataError(f"ctc_weight must be >= 0, got {ctc_weight}")
        if not isinstance(encoder, nn.Module):
            raise InputDataError(f"the encoder must be an nn.Module, got {type(encoder).__name__}")
        check_encoder(encoder)
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.blank_id = blank_id
        self.vocab_size = joiner.vocab_size
        self.ctc_weight = float(ctc_weight)
        self.fastemit_lambda = float(fastemit_lambda)
        self.ctc_head: nn.Linear | None = (
            nn.Linear(encoder.output_dim, self.vocab_size) if ctc_weight > 0 else None
        )

    @property
    def subsampling(self) -> int:
        """Feature frames per encoder frame."""
        return self.encoder.subsampling

    # ------------------------------------------------------------------ parts
    def encode(self, features: Tensor, feature_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Full-utterance encoder pass: ``(B, T, F), (B,) -> (B, T', D), (B,)``.

        For search; :meth:`forward` uses the whole :class:`EncoderOutput` (auxiliary losses
        and statistics included).
        """
        out = self.encoder(features, feature_lens)
        return out.y, out.y_lens

    def stream(
        self,
        features: Tensor,
        feature_lens: Tensor,
        state: Any | None = None,  # Any: the state type is the encoder's own
        *,
        final: bool = False,
    ) -> tuple[Tensor, Tensor, Any]:  # Any: the encoder's own state type
        """Encode the next chunk: ``(B, t, F), (B,), state -> (B, t', D), (B,), state``.

        ``final`` ends the streams: the encoder also emits the frames it held back for
        lookahead (see ``right_context`` of the encoder contract).
        """
        return self.encoder.stream(features, feature_lens, state, final=final)

    def predict(self, tokens: Tensor) -> Tensor:
        """Predictor outputs for every prefix: ``(B, U) -> (B, U+1, D)``."""
        out: Tensor = self.predictor(tokens)
        return out

    def predict_step(
        self, tokens: Tensor, state: PredictorState | None
    ) -> tuple[Tensor, PredictorState]:
        """One predictor step: ``(B,) tokens, state -> (B, D), state``; ``None`` = fresh."""
        if state is None:
            state = self.predictor.init_state(tokens.shape[0], device=tokens.device)
        return self.predictor.step(tokens, state)  # type: ignore[arg-type]

    def join(self, encoder_out: Tensor, predictor_out: Tensor) -> Tensor:
        """Joiner logits: ``(B, T', D), (B, U+1, D) -> (B, T', U+1, V)``."""
        out: Tensor = self.joiner(encoder_out, predictor_out)
        return out

    # ------------------------------------------------------------------ training
    def forward(
        self, features: Tensor, feature_lens: Tensor, tokens: Tensor, token_lens: Tensor
    ) -> TransducerOutput:
        """Training loss.

        Args:
            features: ``(B, T, F)``.
            feature_lens: ``(B,)`` int64.
            tokens: ``(B, U)`` int64 targets (no blank), padded with anything.
            token_lens: ``(B,)`` int64.

        Returns:
            :class:`TransducerOutput` with the mean per-utterance loss.
        """
        from fairstream.losses.rnnt import rnnt_loss

        if tokens.dim() != 2 or token_lens.shape != (tokens.shape[0],):
            raise InputDataError(
                f"tokens must be (B, U) with token_lens (B,), got {tuple(tokens.shape)} and "
                f"{tuple(token_lens.shape)}"
            )
        if tokens.shape[0] != features.shape[0]:
            raise InputDataError(
                f"batch size mismatch: {features.shape[0]} feature rows, "
                f"{tokens.shape[0]} token rows"
            )
        if token_lens.numel() and int(token_lens.max()) > tokens.shape[1]:
            raise InputDataError(
                f"token_lens max {int(token_lens.max())} exceeds token width {tokens.shape[1]}"
            )
        tokens = tokens.long()
        # pad positions may hold anything; make them valid ids for the predictor
        pos = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        tokens = torch.where(pos < token_lens.unsqueeze(1), tokens, self.blank_id)
        enc_out: EncoderOutput = self.encoder(features, feature_lens)
        enc, enc_lens = enc_out.y, enc_out.y_lens
        pred = self.predict(tokens)
        logits = self.joiner(enc, pred)  # (B, T', U+1, V)
        rnnt = rnnt_loss(
            logits,
            tokens,
            enc_lens,
            token_lens,
            blank=self.blank_id,
            reduction="mean",
            fastemit_lambda=self.fastemit_lambda,
        )
        loss = rnnt
        ctc = rnnt.new_zeros(())
        if self.ctc_head is not None:
            log_probs = F.log_softmax(self.ctc_head(enc), dim=-1)
            ctc = F.ctc_loss(
                log_probs.transpose(0, 1),
                tokens,
                enc_lens,
                token_lens,
                blank=self.blank_id,
                reduction="sum",
                zero_infinity=True,
            ) / max(features.shape[0], 1)
            loss = rnnt + self.ctc_weight * ctc
        for aux in enc_out.aux_losses.values():
            loss = loss + aux
        return TransducerOutput(
            loss=loss,
            rnnt_loss=rnnt.detach(),
            ctc_loss=ctc.detach(),
            encoder_lens=enc_lens,
            num_utterances=int(features.shape[0]),
            aux_losses={k: v.detach() for k, v in enc_out.aux_losses.items()},
            stats={k: float(v) for k, v in enc_out.stats.items()},
        )
