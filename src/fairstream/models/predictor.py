"""Transducer predictors (the "decoder" or "prediction network").

Both predictors take the token history and give one vector per prefix:

* :class:`StatelessPredictor` (the default) sees only the last ``k`` tokens through an
  embedding and a depthwise 1-D convolution, so decoding carries no recurrent state and a
  small model cannot memorize whole sentences.
* :class:`LSTMPredictor` is the classic recurrent prediction network.

Training: ``forward(tokens (B, U)) -> (B, U+1, D)``; position ``u`` is the output after
the blank start symbol and the first ``u`` tokens. Decoding: ``init_state(B)`` and
``step(tokens (B,), state) -> ((B, D), state)``; a hypothesis starts with
``step(blank, init_state(B))``, which equals position 0 of ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairstream.errors import InputDataError
from fairstream.models.state import LSTMPredictorState, StatelessPredictorState

__all__ = ["LSTMPredictor", "StatelessPredictor"]


def _check_tokens(tokens: Tensor, vocab_size: int) -> None:
    if tokens.dtype not in (torch.int64, torch.int32):
        raise InputDataError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise InputDataError(
            f"token id out of range [0, {vocab_size}): min {int(tokens.min())}, "
            f"max {int(tokens.max())}"
        )


class StatelessPredictor(nn.Module):
    """Embedding + depthwise convolution over the last ``context_size`` tokens.

    Args:
        vocab_size: V, including blank.
        embed_dim: D, the output size.
        context_size: k, tokens of history seen (2 = a bigram-like predictor).
        blank_id: Blank / start-of-sequence id.
        dropout: Dropout on the output during training.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        *,
        context_size: int = 2,
        blank_id: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if context_size < 1:
            raise InputDataError(f"context_size must be >= 1, got {context_size}")
        self.vocab_size = vocab_size
        self.output_dim = embed_dim
        self.context_size = context_size
        self.blank_id = blank_id
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        # depthwise convolution over the k positions: one weight per (channel, position)
        bound = context_size**-0.5
        self.conv_weight = nn.Parameter(
            torch.empty(embed_dim, context_size).uniform_(-bound, bound)
        )
        self.conv_bias = nn.Parameter(torch.empty(embed_dim).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=embed_dim**-0.5)

    def _context_conv(self, embedded: Tensor) -> Tensor:
        # embedded: (B, N, D) with N >= k -> (B, N-k+1, D). Written as multiply-adds: on CPU
        # this is much faster than a grouped Conv1d for k of 2-4.
        k = self.context_size
        n_out = embedded.shape[1] - k + 1
        y = self.conv_bias + embedded[:, :n_out] * self.conv_weight[:, 0]
        for j in range(1, k):
            y = y + embedded[:, j : j + n_out] * self.conv_weight[:, j]
        out: Tensor = self.dropout(F.relu(y))
        return out

    def forward(self, tokens: Tensor) -> Tensor:
        """Outputs for every prefix of ``tokens``.

        Args:
            tokens: ``(B, U)`` int64 token ids (padding values are irrelevant: outputs at
                positions past a sequence's length are simply unused).

        Returns:
            ``(B, U+1, D)``; position 0 follows the blank start symbol alone.
        """
        _check_tokens(tokens, self.vocab_size)
        pad = tokens.new_full((tokens.shape[0], self.context_size), self.blank_id)
        padded = torch.cat([pad, tokens.long()], dim=1)  # (B, U+k)
        return self._context_conv(self.embedding(padded))

    def init_state(
        self, batch_size: int, device: torch.device | None = None
    ) -> StatelessPredictorState:
        """State before any token: a context of ``k`` blanks."""
        return StatelessPredictorState(
            context=torch.full(
                (batch_size, self.context_size), self.blank_id, dtype=torch.long, device=device
            )
        )

    def step(
        self, tokens: Tensor, state: StatelessPredictorState
    ) -> tuple[Tensor, StatelessPredictorState]:
        """Push one token per stream and return the new output.

        Args:
            tokens: ``(B,)`` int64, the newest token of each stream.
            state: Context before ``tokens``.

        Returns:
            ``(B, D)`` output and the new state.
        """
        context = torch.cat([state.context[:, 1:], tokens.long().unsqueeze(1)], dim=1)
        out = self._context_conv(self.embedding(context)).squeeze(1)
        return out, StatelessPredictorState(context=context)


class LSTMPredictor(nn.Module):
    """Embedding + LSTM prediction network.

    Args:
        vocab_size: V, including blank.
        embed_dim: Embedding size.
        hidden_dim: D, LSTM size and output size.
        num_layers: LSTM layers.
        blank_id: Blank / start-of-sequence id.
        dropout: Dropout on embeddings and output during training.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 320,
        *,
        num_layers: int = 1,
        blank_id: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.output_dim = hidden_dim
        self.blank_id = blank_id
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=embed_dim**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        """Outputs for every prefix of ``tokens``.

        Args:
            tokens: ``(B, U)`` int64 token ids.

        Returns:
            ``(B, U+1, D)``; position 0 follows the blank start symbol alone.
        """
        _check_tokens(tokens, self.vocab_size)
        sos = tokens.new_full((tokens.shape[0], 1), self.blank_id)
        x = self.dropout(self.embedding(torch.cat([sos, tokens.long()], dim=1)))
        y, _ = self.lstm(x)
        out: Tensor = self.dropout(y)
        return out

    def init_state(self, batch_size: int, device: torch.device | None = None) -> LSTMPredictorState:
        """Zero state, before the start symbol."""
        dtype = self.embedding.weight.dtype
        z = torch.zeros(self.num_layers, batch_size, self.hidden_dim, device=device, dtype=dtype)
        return LSTMPredictorState(h=z, c=z.clone())

    def step(self, tokens: Tensor, state: LSTMPredictorState) -> tuple[Tensor, LSTMPredictorState]:
        """Push one token per stream and return the new output.

        Args:
            tokens: ``(B,)`` int64, the newest token of each stream.
            state: State before ``tokens``.

        Returns:
            ``(B, D)`` output and the new state.
        """
        x = self.dropout(self.embedding(tokens.long()).unsqueeze(1))
        y, (h, c) = self.lstm(x, (state.h, state.c))
        return self.dropout(y.squeeze(1)), LSTMPredictorState(h=h, c=c)
