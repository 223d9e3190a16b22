"""Speaker-level bootstrap as one weight-matrix product.

Utterances of one speaker are correlated, so the bootstrap resamples **speakers** (with
replacement), never utterances. A replicate is then a vector of multiplicities
``w[s]`` (how many times speaker ``s`` was drawn; Σ_s w[s] = S) and any additive statistic of
a replicate — errors or reference words of a group, of a region, of one side of a split — is
``Σ_s w[s] · x[s]``. All replicates and all statistics at once are one matrix product::

    totals (K, R) = X (K, S) @ Wt (S, R)

where ``X`` is a (usually sparse) matrix of per-speaker statistics restricted to each group
and ``Wt`` the transposed weight matrix. There is no Python loop over replicates or groups.

Dimension letters: S speakers, R bootstrap replicates, K statistics (rows of ``X``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "SpeakerBootstrap",
    "group_indicator",
    "percentile_interval",
    "ratio_replicates",
    "two_sided_p_value",
]


@dataclass(frozen=True)
class SpeakerBootstrap:
    """Multinomial speaker-resampling weights for ``n_replicates`` bootstrap replicates.

    Attributes:
        weights_t: (S, R) float32, ``weights_t[s, r]`` = times speaker ``s`` is drawn in
            replicate ``r``. Each column sums to S. Stored speaker-major so that sparse
            ``X @ weights_t`` reads contiguous rows.
        seed: the seed the weights were drawn from (reproducible).
    """

    weights_t: np.ndarray
    seed: int

    @classmethod
    def draw(
        cls, n_speakers: int, n_replicates: int, *, seed: int = 0, chunk: int = 64
    ) -> SpeakerBootstrap:
        """Draw the weights: each replicate samples ``n_speakers`` speakers with replacement.

        Args:
            n_speakers: S, the number of speakers in the audited population.
            n_replicates: R (0 gives an empty (S, 0) matrix: no intervals).
            seed: seed of :func:`numpy.random.default_rng`.
            chunk: replicates drawn per step (bounds temporary memory to chunk × S int64).
        """
        if n_speakers < 1:
            raise ValueError(f"the bootstrap needs at least one speaker, got {n_speakers}")
        if n_replicates < 0:
            raise ValueError(f"n_replicates must be >= 0, got {n_replicates}")
        rng = np.random.default_rng(seed)
        wt = np.empty((n_speakers, n_replicates), dtype=np.float32)
        for r0 in range(0, n_replicates, chunk):
            r1 = min(r0 + chunk, n_replicates)
            draws = rng.integers(0, n_speakers, size=(r1 - r0, n_speakers), dtype=np.int64)
            draws += (np.arange(r1 - r0, dtype=np.int64) * n_speakers)[:, None]
            counts = np.bincount(draws.ravel(), minlength=(r1 - r0) * n_speakers)
            wt[:, r0:r1] = counts.reshape(r1 - r0, n_speakers).T
        return cls(weights_t=wt, seed=seed)

    @property
    def n_speakers(self) -> int:
        """S."""
        return int(self.weights_t.shape[0])

    @property
    def n_replicates(self) -> int:
        """R."""
        return int(self.weights_t.shape[1])

    def totals(self, x: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
        """Per-replicate totals of per-speaker statistics.

        Args:
            x: (K, S) dense or sparse; row k holds statistic k of every speaker (0 outside
                the group it describes).

        Returns:
            (K, R) float64: ``x @ weights_t``.
        """
        if x.shape[1] != self.n_speakers:
            raise ValueError(f"x has {x.shape[1]} speaker columns, bootstrap has {self.n_speakers}")
        if sp.issparse(x):
            out = sp.csr_matrix(x, dtype=np.float32) @ self.weights_t
        else:
            out = np.asarray(x, dtype=np.float32) @ self.weights_t
        return np.asarray(out, dtype=np.float64)


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

