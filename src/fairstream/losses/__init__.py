"""Training losses: the RNN-T loss (:func:`rnnt_loss`)."""

from __future__ import annotations

from fairstream.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss"]
