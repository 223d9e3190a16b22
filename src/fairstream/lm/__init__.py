"""Language models for shallow fusion in transducer beam search."""

from __future__ import annotations

from fairstream.lm.ngram import NgramLM

__all__ = ["NgramLM"]
