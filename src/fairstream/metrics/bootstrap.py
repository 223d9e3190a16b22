"""Speaker-level bootstrap as one weight-matrix product.

Utterances of one speaker are correlated, so the bootstrap resamples **speakers** (with
replacement), never utterances. A replicate is then a vector of multiplicities
``w[s]`` (how many times speaker ``s`` was drawn; Σ_s w[s] = S) and any additive statistic of
a replicate — errors or reference words of a group, of a region, of one side of a split — is
``Σ_s w[s] · x[s]``. All replicates and all statistics at once are one matrix product::

    totals (K, R) = X (K, S) @ Wt (S, R)

where ``X`` is a (usually sparse) matrix of per-speaker statistics restricted to each group
and ``Wt`` the transposed weight matrix, taken in blocks of replicates so that the working
memory stays bounded. There is no Python loop over groups, nor over single replicates.

Dimension letters: S speakers, R bootstrap replicates, K statistics (rows of ``X``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

__all__ = [
    "SpeakerBootstrap",
    "group_indicator",
    "percentile_interval",
    "ratio_replicates",
    "two_sided_p_value",
]


#: int64 elements drawn per step (bounds the working memory of :meth:`SpeakerBootstrap.draw`
#: at any speaker count: 2**24 elements = 128 MB).
_DRAW_ELEMENTS = 1 << 24
#: float32 elements of one block of weights in :meth:`SpeakerBootstrap.blocks` (128 MB).
_BLOCK_ELEMENTS = 1 << 25
#: a sparse statistic matrix is made dense for the product when it has at most this many
#: elements (256 MB float32) and at least 1/32 of them are non-zero: a dense BLAS product is
#: then faster than the sparse one by more than the zeros it multiplies.
_DENSE_ELEMENTS = 1 << 26
_DENSE_MIN_FILL = 1 / 32


@dataclass(frozen=True)
class SpeakerBootstrap:
    """Multinomial speaker-resampling weights for ``n_replicates`` bootstrap replicates.

    The multiplicities are stored as small unsigned integers (one byte per speaker and
    replicate unless some speaker is drawn more than 255 times): 1,000 replicates of
    1,000,000 speakers take 1 GB, not the 4 GB of float32. Products with per-speaker
    statistics run in blocks of replicates converted to float32 on the fly
    (:meth:`blocks`, :meth:`totals`), so the working memory stays bounded.

    Attributes:
        counts: (R, S) uint8 (or uint16), ``counts[r, s]`` = times speaker ``s`` is drawn in
            replicate ``r``. Each row sums to S. Stored replicate-major: a block of
            replicates is one contiguous slice.
        seed: the seed the weights were drawn from (reproducible).
    """

    counts: np.ndarray
    seed: int

    @classmethod
    def draw(
        cls, n_speakers: int, n_replicates: int, *, seed: int = 0, chunk: int | None = None
    ) -> SpeakerBootstrap:
        """Draw the weights: each replicate samples ``n_speakers`` speakers with replacement.

        Args:
            n_speakers: S, the number of speakers in the audited population.
            n_replicates: R (0 gives an empty (S, 0) matrix: no intervals).
            seed: seed of :func:`numpy.random.default_rng`.
            chunk: replicates drawn per step (bounds temporary memory to chunk × S int64;
                default: as many as fit in 2**24 elements). The draws do not depend on it.
        """
        if n_speakers < 1:
            raise ValueError(f"the bootstrap needs at least one speaker, got {n_speakers}")
        if n_replicates < 0:
            raise ValueError(f"n_replicates must be >= 0, got {n_replicates}")
        step = chunk if chunk is not None else max(1, _DRAW_ELEMENTS // n_speakers)
        rng = np.random.default_rng(seed)
        counts = np.empty((n_replicates, n_speakers), dtype=np.uint8)
        for r0 in range(0, n_replicates, step):
            r1 = min(r0 + step, n_replicates)
            draws = rng.integers(0, n_speakers, size=(r1 - r0, n_speakers), dtype=np.int64)
            draws += (np.arange(r1 - r0, dtype=np.int64) * n_speakers)[:, None]
            block = np.bincount(draws.ravel(), minlength=(r1 - r0) * n_speakers)
            del draws
            if counts.dtype == np.uint8 and block.max(initial=0) > np.iinfo(np.uint8).max:
                counts = counts.astype(np.uint16)  # a speaker drawn > 255 times: tiny S only
            counts[r0:r1] = block.reshape(r1 - r0, n_speakers)
        return cls(counts=counts, seed=seed)

    @property
    def n_speakers(self) -> int:
        """S."""
        return int(self.counts.shape[1])

    @property
    def n_replicates(self) -> int:
        """R."""
        return int(self.counts.shape[0])

    @cached_property
    def weights_t(self) -> np.ndarray:
        """(S, R) float32 multiplicities, materialized once on first use (4 bytes per speaker
        and replicate: prefer :meth:`blocks` / :meth:`totals` for large speaker counts)."""
        return np.asarray(self.counts.T, dtype=np.float32)

    def block_size(self) -> int:
        """Replicates per block of :meth:`blocks` (≥ 1, ≤ 2**24 elements per block)."""
        return max(1, min(self.n_replicates, _BLOCK_ELEMENTS // max(1, self.n_speakers)))

    def blocks(self, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(r0, r1, weights)`` with ``weights`` the (S, r1 − r0) float32 multiplicities of
        replicates r0..r1−1, block after block (``step`` replicates each, default
        :meth:`block_size`)."""
        step = min(step or self.block_size(), self.block_size())
        for r0 in range(0, self.n_replicates, step):
            r1 = min(r0 + step, self.n_replicates)
            yield r0, r1, np.ascontiguousarray(self.counts[r0:r1].T, dtype=np.float32)

    def iter_totals(
        self, x: np.ndarray | sp.spmatrix | sp.sparray, step: int | None = None
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(r0, r1, totals)`` with ``totals`` the (K, r1 − r0) float64 ``x @ weights`` of
        replicates r0..r1−1, block after block (see :meth:`totals`)."""
        k, s = x.shape
        if s != self.n_speakers:
            raise ValueError(f"x has {s} speaker columns, bootstrap has {self.n_speakers}")
        xm: np.ndarray | sp.spmatrix | sp.sparray
        if isinstance(x, np.ndarray):
            xm = np.ascontiguousarray(x, dtype=np.float32)
        elif k * s <= _DENSE_ELEMENTS and x.nnz >= _DENSE_MIN_FILL * k * s:
            xm = np.ascontiguousarray(x.toarray(), dtype=np.float32)
        else:  # speaker-major: each speaker's weight row is read once, in order
            xm = sp.csc_matrix(x, dtype=np.float32)
        for r0, r1, w in self.blocks(step):
            yield r0, r1, np.asarray(xm @ w, dtype=np.float64)

    def totals(self, x: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
        """Per-replicate totals of per-speaker statistics.

        Args:
            x: (K, S) dense or sparse; row k holds statistic k of every speaker (0 outside
                the group it describes). A sparse ``x`` that is dense enough (and not too
                large) is multiplied as a dense matrix, which BLAS does much faster.

        Returns:
            (K, R) float64: ``x @ counts.T``, computed block by block of replicates.
        """
        out = np.empty((x.shape[0], self.n_replicates), dtype=np.float64)
        for r0, r1, tot in self.iter_totals(x):
            out[:, r0:r1] = tot
        return out


def group_indicator(codes: np.ndarray, n_groups: int, values: np.ndarray) -> sp.csr_matrix:
    """Sparse (G, S) matrix with ``values[s]`` at (codes[s], s); codes < 0 are left out.

    Args:
        codes: (S,) int group index of every speaker (-1 = in no group).
        n_groups: G.
        values: (S,) the per-speaker statistic (errors, words, ...).
    """
    codes = np.asarray(codes)
    keep = codes >= 0
    cols = np.nonzero(keep)[0]
    return sp.csr_matrix(
        (np.asarray(values, dtype=np.float32)[keep], (codes[keep], cols)),
        shape=(n_groups, codes.shape[0]),
    )


def ratio_replicates(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, ``nan`` where ``den == 0`` (a group absent from a replicate)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def percentile_interval(
    replicates: np.ndarray, confidence: float = 0.95, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval, ignoring ``nan`` replicates.

    Args:
        replicates: (..., R) bootstrap values along ``axis``.
        confidence: e.g. 0.95 for a 95 % interval.

    Returns:
        (low, high), each of the shape of ``replicates`` without ``axis``; ``nan`` where no
        replicate is finite.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.shape[axis] == 0:
        shape = tuple(d for i, d in enumerate(reps.shape) if i != axis % reps.ndim)
        return np.full(shape, np.nan), np.full(shape, np.nan)
    finite = np.isfinite(reps).any(axis=axis)
    filled = np.where(np.isfinite(reps), reps, np.nan)
    low = np.full(finite.shape, np.nan)
    high = np.full(finite.shape, np.nan)
    if finite.any():
        with np.errstate(all="ignore"):
            q = np.nanquantile(
                np.moveaxis(filled, axis, -1)[finite], [alpha, 1.0 - alpha], axis=-1
            )
        low[finite] = q[0]
        high[finite] = q[1]
    return low, high


def two_sided_p_value(differences: np.ndarray, axis: int = -1) -> np.ndarray:
    """Bootstrap p-value of ``H0: difference = 0`` from replicates of the difference.

    ``p = min(1, 2 · min(#(d* ≤ 0) + 1, #(d* ≥ 0) + 1) / (R + 1))`` over finite replicates —
    the smallest two-sided level at which the percentile interval still excludes 0. It
    never returns 0, the resolution is ``2 / (R + 1)``.
    """
    d = np.asarray(differences, dtype=np.float64)
    ok = np.isfinite(d)
    n = ok.sum(axis=axis)
    le = (ok & (d <= 0)).sum(axis=axis)
    ge = (ok & (d >= 0)).sum(axis=axis)
    with np.errstate(all="ignore"):
        p = 2.0 * (np.minimum(le, ge) + 1.0) / (n + 1.0)
    return np.where(n > 0, np.minimum(p, 1.0), np.nan)

