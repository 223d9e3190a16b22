"""Token n-gram language model with interpolated Kneser-Ney smoothing.

The model is over the recognizer's own token ids (the tokenizer's vocabulary, blank
excluded) plus an end-of-sentence symbol, so a transducer beam search can add its scores
token by token (shallow fusion) without any word-level machinery. It trains in a second on
the transcripts of a few thousand utterances and is stored as a small JSON file.

Smoothing (Chen & Goodman's interpolated Kneser-Ney with one discount per order)::

    P_n(w | h) = max(c(h w) - D_n, 0) / c(h .)  +  D_n * N1+(h .) / c(h .) * P_{n-1}(w | h')

where ``h'`` drops the oldest token of ``h``, ``c`` are raw counts at the highest order and
continuation counts (number of distinct left neighbours) below it, except for n-grams that
begin at the sentence start, which keep their counts; ``D_n = n1 / (n1 + 2 n2)``
from the count-of-counts (kept inside [0.05, 0.95]), and the unigram level interpolates with
the uniform distribution.
A context never seen at order ``n`` backs off to order ``n - 1`` entirely. Every distribution
sums to one over the tokens and end-of-sentence (tested).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fairstream._io import atomic_write_text
from fairstream.errors import InputDataError

__all__ = ["NgramLM"]

_FORMAT = "fairstream-token-ngram"
_CACHE_LIMIT = 100_000  # cached distributions (about 1 KB each at V = 128); cleared when full
_BOS = -1  # context padding before the first token


class _TextEncoder(Protocol):
    """What :meth:`NgramLM.fit_texts` needs of a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def blank_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class _Level:
    """Counts of one order: for each context, the following tokens and their counts."""

    discount: float
    successors: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]  # ids, counts


class NgramLM:
    """Interpolated Kneser-Ney n-gram over token ids.

    Outputs are indexed like the model's vocabulary; index ``blank_id`` never has mass and
    index ``vocab_size`` is end-of-sentence (:attr:`eos_id`). Build one with :meth:`fit`.

    Attributes:
        order: n of the n-gram (2 or more).
        vocab_size: The tokenizer's vocabulary size, blank included.
        blank_id: The blank id (gets probability 0).
    """

    def __init__(self, order: int, vocab_size: int, blank_id: int, levels: list[_Level]) -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self._levels = levels  # index n-1 holds order n
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def eos_id(self) -> int:
        """Index of end-of-sentence in :meth:`log_probs` (= ``vocab_size``)."""
        return self.vocab_size

    @classmethod
    def fit(
        cls,
        sequences: Iterable[Sequence[int]],
        *,
        vocab_size: int,
        order: int = 4,
        blank_id: int = 0,
    ) -> NgramLM:
        """Count n-grams of token-id sequences (one per sentence) and smooth them.

        Raises:
            InputDataError: ``order < 2``, no sequences, or a token outside ``[0, vocab_size)``
                or equal to ``blank_id`` (the offending sentence is named by position).
        """
        if order < 2:
            raise InputDataError(f"n-gram order must be >= 2, got {order}")
        eos = vocab_size
        top: dict[tuple[int, ...], int] = defaultdict(int)
        n_sentences = 0
        for i, seq in enumerate(sequences):
            ids = [int(t) for t in seq]
            bad = [t for t in ids if not 0 <= t < vocab_size or t == blank_id]
            if bad:
                raise InputDataError(
                    f"sentence {i}: token id {bad[0]} is outside the vocabulary "
                    f"(0..{vocab_size - 1}, blank {blank_id} excluded)"
                )
            padded = [_BOS] * (order - 1) + ids + [eos]
            for j in range(order - 1, len(padded)):
                top[tuple(padded[j - order + 1 : j + 1])] += 1
            n_sentences += 1
        if n_sentences == 0:
            raise InputDataError("cannot fit an n-gram LM on zero sentences")
        counts: list[dict[tuple[int, ...], int]] = [{} for _ in range(order)]
        counts[order - 1] = dict(top)
        for n in range(order - 1, 0, -1):  # continuation counts of order n from order n + 1
            lower: dict[tuple[int, ...], int] = defaultdict(int)
            for gram, c in counts[n].items():
                # a gram that starts at the sentence start has only the padding to its left:
                # it keeps its count (as in KenLM) instead of a continuation count of 1
                lower[gram[1:]] += c if gram[1] == _BOS else 1
            counts[n - 1] = dict(lower)
        levels = []
        for grams in counts:
            histogram = np.bincount(np.fromiter(grams.values(), dtype=np.int64), minlength=3)
            n1, n2 = int(histogram[1]), int(histogram[2])
            discount = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
            grouped: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
            for gram, c in grams.items():
                grouped[gram[:-1]].append((gram[-1], c))
            successors = {
                ctx: (np.array([w for w, _ in pairs], dtype=np.int64),
                      np.array([c for _, c in pairs], dtype=np.float64))
                for ctx, pairs in grouped.items()
            }
            levels.append(_Level(discount=min(max(discount, 0.05), 0.95), successors=successors))
        return cls(order, vocab_size, blank_id, levels)

    @classmethod
    def fit_texts(cls, texts: Iterable[str], tokenizer: _TextEncoder, *,
                  order: int = 4) -> NgramLM:
        """Fit on transcripts: each is normalized and encoded with ``tokenizer`` (anything
        with ``encode``, ``vocab_size`` and ``blank_id``), one sentence per text; empty
        transcripts are left out."""
        from fairstream.data.text import normalize

        seqs = [ids for ids in (tokenizer.encode(normalize(t)) for t in texts) if ids]
        return cls.fit(seqs, vocab_size=tokenizer.vocab_size, order=order,
                       blank_id=tokenizer.blank_id)

    def initial_context(self) -> tuple[int, ...]:
        """Context before the first token of a sentence."""
        return (_BOS,) * (self.order - 1)

    def advance(self, context: tuple[int, ...], token: int) -> tuple[int, ...]:
        """Context after ``token`` (the last ``order - 1`` tokens)."""
        return (*context[1:], int(token))

    def log_probs(self, context: tuple[int, ...]) -> np.ndarray:
        """Natural-log probabilities of every next output given the last ``order - 1`` tokens.

        Returns:
            ``(vocab_size + 1,)`` float64; ``-inf`` at the blank, end-of-sentence last.
            Cached per context, up to 100,000 contexts (do not modify the array).
        """
        cached = self._cache.get(context)
        if cached is not None:
            return cached
        if len(context) != self.order - 1:
            raise InputDataError(
                f"context must hold {self.order - 1} tokens for a {self.order}-gram, "
                f"got {context!r}"
            )
        prob = self._probs(context)
        with np.errstate(divide="ignore"):
            out: np.ndarray = np.log(prob)
        if len(self._cache) >= _CACHE_LIMIT:  # bounded memory on long-running decoders
            self._cache.clear()
        self._cache[context] = out
        return out

    def _probs(self, context: tuple[int, ...]) -> np.ndarray:
        n_out = self.vocab_size + 1
        prob = np.full(n_out, 1.0 / (n_out - 1))  # uniform over tokens + eos, blank excluded
        prob[self.blank_id] = 0.0
        for n in range(1, self.order + 1):
            level = self._levels[n - 1]
            ctx = context[len(context) - (n - 1) :] if n > 1 else ()
            found = level.successors.get(ctx)
            if found is None:
                continue  # unseen context: keep the lower-order distribution
            ids, cnt = found
            total = float(cnt.sum())
            d = level.discount
            mixed = prob * (d * len(ids) / total)
            mixed[ids] += np.maximum(cnt - d, 0.0) / total
            prob = mixed
        return prob

    def score(self, tokens: Sequence[int], *, eos: bool = True) -> float:
        """Natural-log probability of a token sequence (with end-of-sentence if ``eos``)."""
        ctx = self.initial_context()
        total = 0.0
        for t in tokens:
            total += float(self.log_probs(ctx)[int(t)])
            ctx = self.advance(ctx, int(t))
        if eos:
            total += float(self.log_probs(ctx)[self.eos_id])
        return total

    def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
        """Per-token perplexity (end-of-sentence counted as a token)."""
        logp, n = 0.0, 0
        for seq in sequences:
            logp += self.score(seq)
            n += len(seq) + 1
        if n == 0:
            raise InputDataError("perplexity of zero sentences")
        return math.exp(-logp / n)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (atomically)."""
        doc = {
            "format": _FORMAT,
            "version": 1,
            "order": self.order,
            "vocab_size": self.vocab_size,
            "blank_id": self.blank_id,
            "levels": [
                {
                    "discount": lv.discount,
                    "contexts": [
                        [list(ctx), ids.tolist(), cnt.astype(np.int64).tolist()]
                        for ctx, (ids, cnt) in lv.successors.items()
                    ],
                }
                for lv in self._levels
            ],
        }
        return atomic_write_text(path, json.dumps(doc, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NgramLM:
        """Read a model written by :meth:`save`.

        Raises:
            InputDataError: the file is missing, not JSON, or not a fairstream token n-gram.
        """
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError as exc:
            raise InputDataError(f"LM file {p} does not exist") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputDataError(f"LM file {p} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise InputDataError(f"{p} is not a fairstream token n-gram LM (format {_FORMAT!r})")
        try:
            order = int(doc["order"])
            levels = [
                _Level(
                    discount=float(lv["discount"]),
                    successors={
                        tuple(int(x) for x in ctx): (np.asarray(ids, dtype=np.int64),
                                                     np.asarray(cnt, dtype=np.float64))
                        for ctx, ids, cnt in lv["contexts"]
                    },
                )
                for lv in doc["levels"]
            ]
            lm = cls(order, int(doc["vocab_size"]), int(doc["blank_id"]), levels)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputDataError(f"LM file {p} is malformed: {exc!r}") from exc
        if len(levels) != order:
            raise InputDataError(f"LM file {p} has {len(levels)} levels for order {order}")
        return lm

    def __repr__(self) -> str:
        sizes = ", ".join(str(len(lv.successors)) for lv in self._levels)
        return f"NgramLM(order={self.order}, vocab_size={self.vocab_size}, contexts=[{sizes}])"
