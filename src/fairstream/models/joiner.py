"""Transducer joiner: combines encoder and predictor outputs into token logits."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from fairstream.errors import InputDataError

__all__ = ["Joiner"]


class Joiner(nn.Module):
    """``logits = out(act(enc_proj(enc) + pred_proj(pred)))``.

    Both inputs are projected *before* broadcasting, so the (B, T', U+1, J) sum is the only
    large intermediate. Decoders call :meth:`project_encoder` once per utterance,
    :meth:`project_predictor` once per new token, and :meth:`joint` per step.

    Args:
        enc_dim: Encoder output size.
        pred_dim: Predictor output size.
        joint_dim: J, hidden size of the joint network.
        vocab_size: V, including blank.
        activation: ``"tanh"`` or ``"relu"``.
    """

    def __init__(
        self,
        enc_dim: int,
        pred_dim: int,
        joint_dim: int,
        vocab_size: int,
        *,
        activation: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "relu"):
            raise InputDataError(f"joiner activation must be 'tanh' or 'relu', got {activation!r}")
        self.vocab_size = vocab_size
        self.enc_proj = nn.Linear(enc_dim, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim, bias=False)
        self.activation: nn.Module = nn.Tanh() if activation == "tanh" else nn.ReLU()
        self.out = nn.Linear(joint_dim, vocab_size)

    def project_encoder(self, enc: Tensor) -> Tensor:
        """``(..., enc_dim) -> (..., J)``."""
        out: Tensor = self.enc_proj(enc)
        return out

    def project_predictor(self, pred: Tensor) -> Tensor:
        """``(..., pred_dim) -> (..., J)``."""
        out: Tensor = self.pred_proj(pred)
        return out

    def joint(self, enc_projected: Tensor, pred_projected: Tensor) -> Tensor:
        """Logits from already projected inputs (broadcasting): ``(..., J) -> (..., V)``."""
        out: Tensor = self.out(self.activation(enc_projected + pred_projected))
        return out

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """Logits for every (frame, prefix) pair.

        Args:
            enc: ``(B, T', 1, enc_dim)`` or ``(B, T', enc_dim)``.
            pred: ``(B, 1, U+1, pred_dim)`` or ``(B, U+1, pred_dim)``.

        Returns:
            ``(B, T', U+1, V)`` un-normalized logits.
        """
        if enc.dim() == 3:
            enc = enc.unsqueeze(2)
        if pred.dim() == 3:
            pred = pred.unsqueeze(1)
        if enc.dim() != 4 or pred.dim() != 4:
            raise InputDataError(
                f"joiner expects enc (B,T,1,D) and pred (B,1,U+1,D), got {tuple(enc.shape)} "
                f"and {tuple(pred.shape)}"
            )
        return self.joint(self.project_encoder(enc), self.project_predictor(pred))
