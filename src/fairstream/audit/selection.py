"""Inference that accounts for choosing the worst cohort (max-statistic speaker bootstrap).

Every audit method searches before it reports: the worst of K attribute groups, the largest
gap among ~80 geodemographic partitions, the worst k-means cluster, the worst region of the
geographic tree. Testing the chosen cohort against the rest as if it had been named in
advance (the *conditional* or naive test) gives p-values and intervals that are too
optimistic. This module corrects them with the same speaker-bootstrap replicates.

Each method states its **candidates**: the C cohorts its search could have reported, each
compared with the rest of the audited speakers. For candidate c and bootstrap replicate r:

* gap ``g_c`` = (WER_c / WER_rest(c) − 1) × 100, the audit's WER gap (%), and its replicate
  ``g*_{c,r}`` from the resampled speakers;
* ``se_c`` = standard deviation (ddof 1) of ``g*_{c,·}`` over the replicates;
* centred studentized replicate ``t*_{c,r} = (g*_{c,r} − g_c) / se_c``;
* replicate maximum ``M*_r = max_c |t*_{c,r}|`` over the candidates with ``se_c > 0``.

For the chosen cohort b, with ``T_b = g_b / se_b``:

* **selection-corrected p** = (#{r : M*_r ≥ |T_b|} + 1) / (R + 1), over the replicates with a
  finite maximum (the +1 keeps it a valid p-value and never 0);
* **critical value** ``c = M*_(k)``, the k-th smallest replicate maximum with
  ``k = ⌈(1 − α)(R + 1)⌉`` and α = 1 − confidence (``c = ∞`` when k > R: too few replicates
  for that tail);
* **simultaneous interval** ``g_b ± c · se_b``: with probability ≈ 1 − α the intervals of all
  C candidates cover their true gaps at once, so the one the search picked is covered,
  whichever it was. With this choice of c, ``p ≤ α`` exactly when the interval excludes 0.

**Two-sided.** ``M*`` takes the absolute value, so both the p-value and the interval are
two-sided, like the conditional test they correct (the bootstrap's two-sided p-value and
percentile interval). For a worst cohort the question is one-sided ("served worse"), and a
one-sided maximum ``max_c t*`` would be slightly more powerful; we keep the two-sided form so
that the p-value and the interval always agree (p ≤ α ⟺ the interval excludes 0) and because
symmetric two-sided studentized intervals are less sensitive to the skew of a ratio statistic
than one-sided ones. It is conservative for the one-sided claim.

**Headline.** With C = 1 nothing was chosen and the conditional figures are the answer
("single comparison"). With C > 1 the headline p-value is the larger of the corrected and the
conditional p-value and the headline interval the hull of the simultaneous and the
conditional (percentile) interval: both remain valid, and the headline never claims more
than the conditional figure (p never smaller, interval never narrower).

The computation is vectorized: candidates are reduced to *atoms* (speakers with the same
membership in every candidate), the per-atom replicate totals are one sparse × weight-matrix
product for all methods together, and candidate totals are a (C × atoms) @ (atoms × R)
product. Replicates are processed in chunks so that no block exceeds ``max_block`` numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fairstream.metrics.bootstrap import SpeakerBootstrap, ratio_replicates, two_sided_p_value

__all__ = [
    "SelectionProblem",
    "SelectionTest",
    "candidate_atoms",
    "chosen_index",
    "inference_label",
    "max_statistic_critical_value",
    "max_statistic_p_value",
    "replicate_maxima",
    "selection_test",
    "selection_tests",
]

#: largest block of numbers (candidates × replicates, or atom rows × replicates) held at once.
MAX_BLOCK = 1 << 22


@dataclass(frozen=True)
class SelectionProblem:
    """One method's search: its candidate cohorts and the one it chose.

    Attributes:
        candidates: (C, S) bool, row c = the speakers of candidate cohort c.
        chosen: row index of the chosen cohort.
    """

    candidates: np.ndarray
    chosen: int


@dataclass(frozen=True)
class SelectionTest:
    """The chosen cohort against the rest: conditional, selection-corrected and headline.

    Attributes:
        n_candidates: C.
        n_speakers: speakers of the chosen cohort; ``n_speakers_rest`` of the rest.
        errors, words: its errors and reference words; ``errors_rest``, ``words_rest`` of the
            rest.
        wer, wer_rest: WER of the chosen cohort and of the rest.
        gap_pct: WER gap (%) of the chosen cohort.
        se: bootstrap standard error of the gap.
        statistic: ``|gap| / se`` (``T_b``).
        critical_value: ``c`` of the simultaneous intervals (∞: too few replicates).
        p_value_max: the selection-corrected p-value (max-statistic).
        ci_low_max, ci_high_max: the simultaneous interval ``gap ± c · se``.
        p_value_naive: two-sided bootstrap p-value of WER = WER_rest, conditional on the choice.
        ci_low_naive, ci_high_naive: percentile interval of the gap, conditional on the choice.
        p_value, ci_low, ci_high: the headline (see the module docstring).
        n_replicates: replicates with a finite maximum statistic.
    """

    n_candidates: int
    n_speakers: int
    n_speakers_rest: int
    errors: float
    words: float
    errors_rest: float
    words_rest: float
    wer: float
    wer_rest: float
    gap_pct: float
    se: float
    statistic: float
    critical_value: float
    p_value_max: float
    ci_low_max: float
    ci_high_max: float
    p_value_naive: float
    ci_low_naive: float
    ci_high_naive: float
    p_value: float
    ci_low: float
    ci_high: float
    n_replicates: int


def inference_label(n_candidates: int) -> str:
    """How the headline figures of a test over ``n_candidates`` candidates were obtained."""
    if n_candidates == 1:
        return "single comparison"
    return f"max-statistic over {n_candidates} candidates"


def chosen_index(candidates: np.ndarray, mask: np.ndarray) -> int | None:
    """Row of ``candidates`` equal to ``mask`` (None when no row is)."""
    hits = np.nonzero((np.asarray(candidates, dtype=bool) == np.asarray(mask, bool)[None])
                      .all(axis=1))[0]
    return int(hits[0]) if len(hits) else None


def candidate_atoms(candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group speakers with the same membership in every candidate.

    Args:
        candidates: (C, S) bool.

    Returns:
        (codes (S,) int64: the atom of each speaker, membership (C, A) bool: candidate c holds
        atom a). Every candidate is the union of its atoms.
    """
    cand = np.asarray(candidates, dtype=bool)
    if cand.ndim != 2 or cand.shape[0] == 0:
        raise ValueError(f"candidates must be a non-empty (C, S) matrix, got shape {cand.shape}")
    packed = np.ascontiguousarray(np.packbits(cand, axis=0).T)  # (S, ⌈C/8⌉)
    keys = packed.view(np.dtype((np.void, packed.shape[1])))[:, 0]
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    return codes.ravel().astype(np.int64), cand[:, first]


def replicate_maxima(t: np.ndarray) -> np.ndarray:
    """``M*_r``: per replicate (column), the largest finite entry over the candidates (rows).

    Args:
        t: (C, R) studentized replicates ``|t*_{c,r}|``; non-finite entries (a candidate
            undefined in that replicate) are left out.

    Returns:
        (R,) the maxima, nan where no entry of the replicate is finite.
    """
    m = np.where(np.isfinite(t), t, -np.inf).max(axis=0)
    return np.where(np.isfinite(m), m, np.nan)


def max_statistic_p_value(m_star: np.ndarray, statistic: float) -> float:
    """(#{r : M*_r ≥ statistic} + 1) / (R + 1) over the replicates with a finite maximum."""
    m = m_star[np.isfinite(m_star)]
    return (float((m >= statistic).sum()) + 1.0) / (len(m) + 1.0)


def max_statistic_critical_value(m_star: np.ndarray, confidence: float) -> float:
    """``M*_(k)``, the k-th smallest finite maximum, ``k = ⌈confidence · (R + 1)⌉``.

    ∞ when k > R (too few replicates for that tail). A statistic exceeds it exactly when
    its :func:`max_statistic_p_value` is at most 1 − confidence.
    """
    m = m_star[np.isfinite(m_star)]
    k = math.ceil(confidence * (len(m) + 1) - 1e-9)
    return float(np.sort(m)[k - 1]) if k <= len(m) else math.inf


def _gap(e: np.ndarray, w: np.ndarray, e_rest: np.ndarray, w_rest: np.ndarray) -> np.ndarray:
    """WER gap (%) = (WER / WER_rest − 1) × 100, nan where a WER is undefined."""
    with np.errstate(all="ignore"):
        return (ratio_replicates(e, w) / ratio_replicates(e_rest, w_rest) - 1.0) * 100.0


@dataclass(frozen=True)
class _Prepared:
    """One problem reduced to atoms, with its point estimates."""

    member: np.ndarray  # (C, A) float64
    codes: np.ndarray  # (S,) atom of each speaker
    rows: slice  # its atom rows in the stacked product (errors then words)
    n_atoms: int
    gap: np.ndarray  # (C,)
    chosen: int
    e_all: float
    w_all: float
    e_c: float
    w_c: float
    n_spk: int
    n_all: int


def _prepare(problem: SelectionProblem, e: np.ndarray, w: np.ndarray, row0: int) -> _Prepared:
    cand = np.asarray(problem.candidates, dtype=bool)
    if cand.ndim != 2 or cand.shape[1] != len(e):
        raise ValueError(f"candidates have shape {cand.shape}, expected (C, {len(e)})")
    if not 0 <= problem.chosen < cand.shape[0]:
        raise ValueError(f"chosen index {problem.chosen} is not one of {cand.shape[0]} "
                         "candidates")
    codes, member = candidate_atoms(cand)
    a = member.shape[1]
    ae = np.bincount(codes, weights=e, minlength=a)
    aw = np.bincount(codes, weights=w, minlength=a)
    mf = member.astype(np.float64)
    ce, cw = mf @ ae, mf @ aw
    e_all, w_all = float(ae.sum()), float(aw.sum())
    b = problem.chosen
    return _Prepared(member=mf, codes=codes, rows=slice(row0, row0 + 2 * a), n_atoms=a,
                     gap=_gap(ce, cw, e_all - ce, w_all - cw), chosen=b, e_all=e_all,
                     w_all=w_all, e_c=float(ce[b]), w_c=float(cw[b]),
                     n_spk=int(cand[b].sum()), n_all=len(e))


def _atom_statistics(preps: Sequence[_Prepared], e: np.ndarray, w: np.ndarray) -> sp.csr_matrix:
    """(K, S) sparse: per problem, the errors then the words of each atom's speakers.

    Every speaker is in exactly one atom of each problem, so column s holds 2 entries per
    problem, built directly in compressed-column form.
    """
    s = len(e)
    rows = np.empty((s, 2 * len(preps)), dtype=np.int64)
    vals = np.empty((s, 2 * len(preps)), dtype=np.float32)
    for i, p in enumerate(preps):
        rows[:, 2 * i] = p.rows.start + p.codes
        rows[:, 2 * i + 1] = p.rows.start + p.n_atoms + p.codes
        vals[:, 2 * i], vals[:, 2 * i + 1] = e, w
    k = preps[-1].rows.stop
    indptr = np.arange(0, rows.size + 1, 2 * len(preps), dtype=np.int64)
    return sp.csc_matrix((vals.ravel(), rows.ravel(), indptr), shape=(k, s)).tocsr()


def _replicate_gaps(p: _Prepared, tot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate gap replicates (C, r) and the chosen cohort's WER and rest-WER replicates."""
    ae, aw = tot[p.rows][:p.n_atoms], tot[p.rows][p.n_atoms:]
    ce, cw = p.member @ ae, p.member @ aw
    te, tw = ae.sum(axis=0), aw.sum(axis=0)
    g = _gap(ce, cw, te[None] - ce, tw[None] - cw)
    b = p.chosen
    return g, ratio_replicates(ce[b], cw[b]), ratio_replicates(te - ce[b], tw - cw[b])


def selection_tests(
    errors: np.ndarray,
    words: np.ndarray,
    boot: SpeakerBootstrap,
    problems: Sequence[SelectionProblem],
    *,
    confidence: float = 0.95,
    max_block: int = MAX_BLOCK,
) -> list[SelectionTest]:
    """Test the chosen cohort of every problem (one bootstrap product for all of them).

    Args:
        errors: (S,) errors per speaker.
        words: (S,) reference words per speaker.
        boot: speaker bootstrap over the same S speakers (R replicates; R = 0 gives nan
            intervals and p-values).
        problems: each method's candidates and chosen cohort.
        confidence: level of the intervals (α = 1 − confidence for the critical value).
        max_block: replicates are processed in chunks so that no (rows × replicates) block
            exceeds this many numbers.

    Returns:
        One :class:`SelectionTest` per problem, in order.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    e = np.asarray(errors, dtype=np.float64)
    w = np.asarray(words, dtype=np.float64)
    if boot.n_speakers != len(e) or len(w) != len(e):
        raise ValueError(f"{len(e)} errors, {len(w)} words and a bootstrap over "
                         f"{boot.n_speakers} speakers do not match")
    preps: list[_Prepared] = []
    for prob in problems:
        preps.append(_prepare(prob, e, w, preps[-1].rows.stop if preps else 0))
    if not preps:
        return []
    r = boot.n_replicates
    x = _atom_statistics(preps, e, w)
    widest = max([x.shape[0]] + [p.member.shape[0] for p in preps])
    step = max(1, max_block // widest)
    # one chunk: keep its gap replicates for pass 2; several: recompute them there
    cache: list[tuple[int, int, list[np.ndarray]]] | None = [] if step >= r else None
    # pass 1: standard errors (shifted sums) and the chosen cohorts' replicates
    n = [np.zeros(p.member.shape[0]) for p in preps]
    s1 = [np.zeros(p.member.shape[0]) for p in preps]
    s2 = [np.zeros(p.member.shape[0]) for p in preps]
    wer_b = [np.empty(r) for _ in preps]
    rest_b = [np.empty(r) for _ in preps]
    gap_b = [np.empty(r) for _ in preps]
    for r0, r1, tot in boot.iter_totals(x, step):
        gaps = []
        for i, p in enumerate(preps):
            g, wb, rb = _replicate_gaps(p, tot)
            wer_b[i][r0:r1], rest_b[i][r0:r1], gap_b[i][r0:r1] = wb, rb, g[p.chosen]
            d = g - p.gap[:, None]
            ok = np.isfinite(d)
            d = np.where(ok, d, 0.0)
            n[i] += ok.sum(axis=1)
            s1[i] += d.sum(axis=1)
            s2[i] += (d * d).sum(axis=1)
            gaps.append(g)
        if cache is not None:
            cache.append((r0, r1, gaps))
    with np.errstate(all="ignore"):
        se = [np.where(ni > 1, np.sqrt(np.maximum(a2 - a1 * a1 / ni, 0.0) / (ni - 1)), np.nan)
              for ni, a1, a2 in zip(n, s1, s2)]
    # pass 2: the maximum statistic of every replicate
    def replicate_gaps() -> Iterator[tuple[int, int, list[np.ndarray]]]:
        if cache is not None:
            yield from cache
            return
        for r0, r1, tot in boot.iter_totals(x, step):
            yield r0, r1, [_replicate_gaps(p, tot)[0] for p in preps]

    m_star = [np.full(r, np.nan) for _ in preps]
    for r0, r1, gaps in replicate_gaps():
        for i, p in enumerate(preps):
            g = gaps[i]
            use = np.isfinite(p.gap) & np.isfinite(se[i]) & (se[i] > 0)
            if not use.any():
                continue
            with np.errstate(all="ignore"):
                t = np.abs(g[use] - p.gap[use, None]) / se[i][use, None]
            m_star[i][r0:r1] = replicate_maxima(t)
    return [_finish(p, se[i][p.chosen], m_star[i], wer_b[i], rest_b[i], gap_b[i], confidence)
            for i, p in enumerate(preps)]


def _finish(p: _Prepared, se_b: float, m_star: np.ndarray, wer_b: np.ndarray,
            rest_b: np.ndarray, gap_b: np.ndarray, confidence: float) -> SelectionTest:
    """The chosen cohort's figures from its replicates and the replicate maxima."""
    c = p.member.shape[0]
    g = float(p.gap[p.chosen])
    m = m_star[np.isfinite(m_star)]
    nan = float("nan")
    stat, crit, p_max, lo_max, hi_max = nan, nan, nan, nan, nan
    if len(m) and math.isfinite(g) and math.isfinite(se_b):
        stat = abs(g) / se_b if se_b > 0 else (math.inf if g != 0 else 0.0)
        p_max = max_statistic_p_value(m, stat)
        crit = max_statistic_critical_value(m, confidence)
        half = crit * se_b if se_b > 0 else 0.0
        lo_max, hi_max = g - half, g + half
    finite = gap_b[np.isfinite(gap_b)]
    if len(finite):  # the percentile interval of metrics.bootstrap, on one vector
        half_alpha = (1.0 - confidence) / 2.0
        lo_n, hi_n = (float(v) for v in np.quantile(finite, [half_alpha, 1.0 - half_alpha]))
    else:
        lo_n, hi_n = nan, nan
    p_n = float(two_sided_p_value(wer_b - rest_b)) if len(gap_b) else nan
    if c == 1:
        p_h, lo_h, hi_h = p_n, lo_n, hi_n
    else:  # nan-propagating: no headline when either figure is undefined
        p_h = float(np.maximum(p_n, p_max))
        lo_h, hi_h = float(np.minimum(lo_n, lo_max)), float(np.maximum(hi_n, hi_max))
    e_rest, w_rest = p.e_all - p.e_c, p.w_all - p.w_c
    return SelectionTest(
        n_candidates=c, n_speakers=p.n_spk, n_speakers_rest=p.n_all - p.n_spk, errors=p.e_c,
        words=p.w_c, errors_rest=e_rest, words_rest=w_rest,
        wer=p.e_c / p.w_c if p.w_c > 0 else nan,
        wer_rest=e_rest / w_rest if w_rest > 0 else nan,
        gap_pct=g, se=float(se_b), statistic=stat, critical_value=crit, p_value_max=p_max,
        ci_low_max=lo_max, ci_high_max=hi_max, p_value_naive=p_n, ci_low_naive=lo_n,
        ci_high_naive=hi_n, p_value=p_h, ci_low=lo_h, ci_high=hi_h, n_replicates=len(m),
    )


def selection_test(
    errors: np.ndarray,
    words: np.ndarray,
    boot: SpeakerBootstrap,
    candidates: np.ndarray,
    chosen: int,
    *,
    confidence: float = 0.95,
    max_block: int = MAX_BLOCK,
) -> SelectionTest:
    """:func:`selection_tests` for one problem."""
    return selection_tests(errors, words, boot, [SelectionProblem(candidates, chosen)],
                           confidence=confidence, max_block=max_block)[0]
