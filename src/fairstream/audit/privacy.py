"""Privacy rules of the audit.

* No speaker id or individual's metadata appears in a report unless asked for
  (``include_speaker_ids``): tables hold cohort aggregates only, exclusion examples are
  hidden, and the map shows speaker locations aggregated to grid cells.
* Cohorts below ``min_cohort_speakers`` (default 10) are pooled into one merged group, which
  is suppressed (numbers hidden, speakers still counted in "rest" and overall) if it is itself
  too small; the report lists what was pooled or suppressed. The geographic tree and the
  geodemographic search never form a region/cohort below the minimum.
* **No set of fewer than ``min_cohort_speakers`` speakers can be derived by differencing**
  (:func:`protect`): every number the report publishes (report.json, the CSV tables and the
  HTML drawn from them) is the total of some set of speakers, and a reader may add and
  subtract them. A set ``T`` is *derivable* when its indicator vector is a linear combination
  of the indicator vectors of the published sets; its totals then follow from the published
  ones (overall − visible cohorts, a cohort's ``wer_rest``, nested geodemographic
  candidates, ...). After the primary suppression above, complementary (secondary)
  suppression withholds further published sets until no nonempty set below the minimum is
  derivable, separately for the performance totals (errors, words, utterances, WER) and for
  speaker counts (one check of all published sets together settles both tiers when nothing
  small follows from them: each tier publishes a subset of them). The overall line is never
  withheld.

How the check works (:func:`derivable_set`): the published sets cut the speakers into
*atoms* (speakers in exactly the same published sets). A derivable set is a union of atoms
whose 0/1 vector lies in the row space of the published sets × atoms matrix. Atoms of at
least the minimum can never be part of a small set, so the search is confined to the
subspace V of combinations that vanish on them. First a proof: if ``min_cohort_speakers``
disjoint bases of V's column space can be drawn from the speakers (an atom of s speakers
serves at most s bases), removing fewer speakers leaves one basis whole and nothing small is
derivable (fast on many speakers). Otherwise the 0/1 vectors of V on the atoms the drawing
used up are enumerated (at most 2^16 combinations), and if none is small a mixed-integer
program (HiGHS) searches all of V for the smallest. A set found is verified by least squares;
if the program runs out of time the combination blocking the proof is broken anyway.

Which set is withheld (greedy, as statistical agencies do it): among the published sets that
take part in the combination found, the cheapest whose removal makes that set underivable;
cheapest by :class:`Cell` ``rank`` (recovery counts, then alternative geodemographic
candidates, then split-test counts, cohort rows, exclusion counts and finally the bottom
cohorts of the methods table), then by size (smallest first). Then search again, until
nothing below the minimum is derivable. A set withheld is withheld everywhere it appears.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp
from threadpoolctl import threadpool_limits

from fairstream.audit.disaggregate import apply_min_size

__all__ = [
    "ALL_QUANTITIES",
    "LOCKED",
    "RULE",
    "SPEAKERS_ONLY",
    "WITHHELD",
    "Cell",
    "Derivation",
    "Place",
    "PrivacyConfig",
    "Published",
    "apply_min_size",
    "coarse_locations",
    "protect",
    "derivable_set",
]

logger = logging.getLogger(__name__)

#: a cell publishing performance totals (errors, words, utterances, WER) and speakers.
ALL_QUANTITIES = "all"
#: a cell publishing only a speaker count.
SPEAKERS_ONLY = "speakers"
#: rank of a cell that is never withheld (the overall line).
LOCKED = 1_000

#: status of a cohort row withheld by complementary suppression.
WITHHELD = "suppressed (complementary)"

RULE = (
    "No set of fewer than {n} speakers is reported, and none can be derived by adding and "
    "subtracting published numbers: every published count of speakers, words, errors or "
    "utterances (and every WER, share or rest WER they imply) is a total over a set of "
    "speakers; a set is derivable when its indicator is a linear combination of the published "
    "sets. Cohorts below {n} speakers are pooled or suppressed (primary suppression), and "
    "further published sets are withheld (complementary suppression, greedy, never the "
    "overall line) until no nonempty set below {n} speakers is derivable from the report's "
    "tables, report.json and report.html together."
)

_ENUMERATE_MAX = 16  # exact enumeration of 2^k combinations up to this subspace dimension
_TOL = 1e-7
_BREAK_TRIES = 12  # cheapest groups tried one by one before falling back to the cheapest


@dataclass(frozen=True)
class PrivacyConfig:
    """Attributes:
    min_cohort_speakers: smallest cohort whose numbers are reported.
    include_speaker_ids: write per-speaker cohort assignments and exclusion examples (the
        explicit opt-out: no complementary suppression either).
    location_cell_deg: grid cell (degrees) speaker locations are aggregated to on the map.
    """

    min_cohort_speakers: int = 10
    include_speaker_ids: bool = False
    location_cell_deg: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cohort_speakers < 1:
            raise ValueError(f"min_cohort_speakers must be >= 1, got {self.min_cohort_speakers}")
        if self.location_cell_deg <= 0:
            raise ValueError(f"location_cell_deg must be > 0, got {self.location_cell_deg}")


def coarse_locations(
    lat: np.ndarray, lon: np.ndarray, cell_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate points to grid-cell centres.

    Returns:
        (cell centre latitudes (C,), longitudes (C,), speakers per cell (C,)).
    """
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    ci = np.floor(np.asarray(lat)[ok] / cell_deg).astype(np.int64)
    cj = np.floor(np.asarray(lon)[ok] / cell_deg).astype(np.int64)
    cells, counts = np.unique(np.stack([ci, cj], 1), axis=0, return_counts=True)
    return (cells[:, 0] + 0.5) * cell_deg, (cells[:, 1] + 0.5) * cell_deg, counts


# ----------------------------------------------------------------------------- published data


@dataclass
class Published:
    """Everything a report publishes, before it is written.

    Attributes:
        data: report.json's content (JSON-like; NaN → None).
        tables: CSV file name → table.
    """

    data: dict[str, Any]  # Any: JSON-like values of any shape
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Place:
    """Where a cell's numbers appear.

    Attributes:
        where: ``("table", file name)`` for a row of ``Published.tables``, or ``("data",
            key, ...)`` for an element of the list (or the dict) at that path of
            ``Published.data``.
        row: the row / list index; None: the dict at ``where`` itself.
        hide: the columns or keys blanked (NaN / None) when the cell is withheld.
        set_to: columns or keys set to a value when the cell is withheld; a string element
            of a list (a note) is replaced by the value of ``"text"``.
    """

    where: tuple[str, ...]
    row: int | None
    hide: tuple[str, ...] = ()
    set_to: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Cell:
    """One published set of speakers.

    Attributes:
        name: how the privacy record names it, e.g. ``"cohorts_geo.csv: region 2"``.
        members: (S,) bool, its speakers; None: not known to the check (always withheld).
        quantities: :data:`ALL_QUANTITIES` or :data:`SPEAKERS_ONLY`.
        rank: withheld before cells of higher rank; :data:`LOCKED`: never.
        places: every place its numbers appear.
    """

    name: str
    members: np.ndarray | None
    quantities: str
    rank: int
    places: tuple[Place, ...] = ()


@dataclass(frozen=True)
class Derivation:
    """A set derivable from published sets.

    Attributes:
        members: (S,) bool, the derivable set (None when the search could not decide and
            ``weights`` is only a direction to break).
        weights: (P,) coefficients of the published sets whose combination gives it.
    """

    members: np.ndarray | None
    weights: np.ndarray


# ----------------------------------------------------------------------------- linear algebra


def _atoms(sets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P × A) 0/1 matrix of the sets over their atoms, atom sizes (A,), atom of each
    speaker (S,).

    Atoms are ordered by their membership bits read as a binary number (first set most
    significant), each represented by its first speaker: the order of ``np.unique(axis=0)``
    on the packed bits, found by a stable sort of 64-bit words (one word per 64 sets).
    """
    n_sets, n_speakers = sets.shape
    packed = np.packbits(sets.T, axis=1)  # (S, ceil(P / 8)) bytes, first set in the top bit
    width = -(-max(n_sets, 1) // 64) * 8
    padded = np.zeros((n_speakers, width), dtype=np.uint8)
    padded[:, :packed.shape[1]] = packed
    words = padded.view(">u8").astype(np.uint64)  # big-endian: word order is byte order
    order = np.lexsort(words.T[::-1])  # stable; the first word is the primary key
    ordered = words[order]
    new = np.ones(n_speakers, dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    inverse = np.empty(n_speakers, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    counts = np.diff(np.append(starts, n_speakers))
    return sets[:, order[starts]].astype(np.float64), counts.astype(np.int64), inverse


def _coefficients(m: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """Least-norm ``y`` with ``m.T @ y == x`` (m: P × A), or None when x is not in the row
    space."""
    y, *_ = np.linalg.lstsq(m.T, x, rcond=None)
    return y if np.abs(m.T @ y - x).max() <= 1e-6 else None


def _left_null(c: np.ndarray) -> np.ndarray:
    """(P, d) basis of {y : y @ c = 0} for c (P × n), via pivoted QR (cheap for small P)."""
    if c.shape[1] == 0:
        return np.eye(c.shape[0])
    q, r, _ = scipy.linalg.qr(c, pivoting=True, mode="full")
    d = np.abs(np.diag(r))
    rank = int((d > _TOL * max(1.0, d[0] if len(d) else 0.0)).sum())
    return np.asarray(q[:, rank:])


def _longest(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values, largest first."""
    top = np.argpartition(-values, n)[:n] if len(values) > n else np.arange(len(values))
    return top[np.argsort(-values[top], kind="stable")]


def _independent(x: np.ndarray) -> np.ndarray | None:
    """Indices of k columns of ``x`` (k × n) spanning R^k, preferring long columns; None if
    the columns do not span it. Pivoted QR on the 8k longest columns, then, while short of
    k, on the 8k columns longest outside the span chosen so far."""
    k = x.shape[0]
    norms = np.linalg.norm(x, axis=0)
    tol = 1e-9 * max(float(norms.max()), 1.0)
    chosen = np.zeros(0, dtype=np.int64)
    q = np.zeros((k, 0))
    cand = _longest(norms, 8 * k)
    while True:
        sub = x[:, cand] - q @ (q.T @ x[:, cand])
        _, r, piv = scipy.linalg.qr(sub, pivoting=True, mode="economic")
        rank = int((np.abs(np.diag(r)) > tol).sum())
        chosen = np.concatenate([chosen, cand[piv[:rank]]])
        if len(chosen) >= k:
            return chosen[:k]
        q = np.linalg.qr(x[:, chosen])[0]
        outside = np.sqrt(np.maximum(norms ** 2 - ((q.T @ x) ** 2).sum(axis=0), 0.0))
        ok = np.flatnonzero(outside > 1e-6 * max(float(norms.max()), 1.0))
        if len(ok) == 0 or rank == 0:
            return None
        cand = ok[_longest(outside[ok], 8 * k)]


def _packed(columns: np.ndarray, sizes: np.ndarray, need: int) -> np.ndarray | None:
    """Try to draw ``need`` disjoint bases of the column space from the speakers.

    Each atom's column stands for its speakers (``sizes`` copies); a basis takes at most one
    copy of an atom, and an atom serves at most ``sizes`` bases. When all ``need`` bases are
    drawn, removing a set of fewer than ``need`` speakers leaves one basis whole, so no
    nonzero vector of the subspace is supported on it: nothing below ``need`` speakers is
    derivable (a proof; the bases are drawn greedily, atoms with more copies left first).

    Returns:
        None when proven; else (A_small,) bool, the atoms used up when drawing stopped (every
        vector of the subspace vanishing on the others is supported on them, and at least one
        is nonzero).
    """
    k = columns.shape[0]
    norms = np.linalg.norm(columns, axis=0)
    unit = columns / np.where(norms > 0, norms, 1.0)
    live = norms > _TOL
    left = np.where(live, sizes, 0).astype(np.float64)
    for _ in range(need):
        avail = np.flatnonzero(left > 0)
        pick = _independent(unit[:, avail] * left[avail]) if len(avail) >= k else None
        if pick is None:
            return np.asarray(live & (left == 0))
        left[avail[pick]] -= 1
    return None


def _milp(columns: np.ndarray, sizes: np.ndarray, limit: int,
          time_limit: float) -> tuple[bool, list[np.ndarray]]:
    """The smallest 0/1 vector x = wᵀ·columns with 1 ≤ sizes·x ≤ limit, by a mixed-integer
    program (HiGHS): x binary, w free. Returns (decided, [x] or [])."""
    k, n = columns.shape
    eq = sp.hstack([sp.eye(n, format="csr"), sp.csr_matrix(-columns.T)], format="csr")
    weight = np.concatenate([sizes, np.zeros(k)]).astype(np.float64)
    res = milp(weight, integrality=np.concatenate([np.ones(n), np.zeros(k)]),
               constraints=[LinearConstraint(eq, 0, 0),
                            LinearConstraint(sp.csr_matrix(weight[None, :]), 1, limit)],
               bounds=Bounds(np.concatenate([np.zeros(n), np.full(k, -np.inf)]),
                             np.concatenate([np.ones(n), np.full(k, np.inf)])),
               options={"time_limit": time_limit, "disp": False})
    if res.status == 2:  # infeasible: nothing derivable
        return True, []
    if res.x is None:
        return False, []
    return True, [np.rint(res.x[:n])]


def _reduced(vectors: np.ndarray) -> np.ndarray:
    """Reduced basis (k × n) of the row space of ``vectors`` (m × n): row i is 1 at its own
    pivot column and 0 at the other rows' pivots, so a 0/1 vector of the space is the sum
    of the rows whose pivots it contains."""
    if vectors.size == 0:
        return np.zeros((0, vectors.shape[1]))
    u, s, vt = np.linalg.svd(vectors, full_matrices=False)
    k = int((s > _TOL * max(1.0, s[0])).sum())
    if k == 0:
        return np.zeros((0, vectors.shape[1]))
    q = vt[:k]
    _, _, piv = scipy.linalg.qr(q, pivoting=True, mode="economic")
    basis = np.linalg.solve(q[:, piv[:k]], q)
    basis[np.abs(basis) < _TOL] = 0.0
    return basis


def _enumerate(basis: np.ndarray, sizes: np.ndarray, limit: int) -> list[np.ndarray]:
    """All 0/1 vectors of the row space of a reduced ``basis`` with 1 ≤ size ≤ limit,
    smallest first."""
    k = basis.shape[0]
    found: list[tuple[int, np.ndarray]] = []
    codes = np.arange(1, 2 ** k, dtype=np.int64)
    for start in range(0, len(codes), 4096):
        z = ((codes[start:start + 4096, None] >> np.arange(k)) & 1).astype(np.float64)
        x = z @ basis
        r = np.rint(x)
        ok = (np.abs(x - r) < 1e-6).all(1) & ((r == 0) | (r == 1)).all(1)
        weight = r @ sizes
        for i in np.flatnonzero(ok & (weight >= 1) & (weight <= limit)):
            found.append((int(weight[i]), r[i]))
    return [x for _, x in sorted(found, key=lambda t: t[0])]


def _row_basis(x: np.ndarray) -> np.ndarray:
    """(k × n) rows spanning the row space of ``x`` (m × n, m small), k = its rank."""
    vals, vecs = np.linalg.eigh(x @ x.T)
    keep = vals > _TOL * max(1.0, vals.max() if len(vals) else 0.0)
    return np.asarray(vecs[:, keep].T @ x)


def derivable_set(sets: np.ndarray, limit: int, *, time_limit: float = 30.0
                  ) -> Derivation | None:
    """A nonempty set of at most ``limit`` speakers derivable from ``sets``, if there is one.

    Steps (module docstring): atoms; the subspace V of combinations vanishing on the atoms
    above ``limit``; a packing proof that nothing small is derivable (fast on many speakers);
    when it fails, the 0/1 vectors of V on the atoms it used up are enumerated, and if none
    is small, a mixed-integer program searches all of V for the smallest.

    Args:
        sets: (P, S) bool, the published sets.
        limit: the largest size that counts as small (``min_cohort_speakers − 1``).
        time_limit: seconds the integer program may take.

    Returns:
        The set and the coefficients of the published sets that give it; or None (proven:
        nothing small is derivable). When the program runs out of time, ``members`` is None
        and ``weights`` a combination that blocks the proof (breaking it is the safe course).
    """
    if limit < 1 or sets.shape[0] == 0:
        return None
    # thin matrices (tens of rows): BLAS threads cost more than they gain, and on a busy
    # machine their waiting doubles the check's time
    with threadpool_limits(limits=1):
        return _search(np.asarray(sets, dtype=bool), limit, time_limit)


def _search(sets: np.ndarray, limit: int, time_limit: float) -> Derivation | None:
    """:func:`derivable_set` on a nonempty family, ``limit`` ≥ 1."""
    m, sizes, atom_of = _atoms(sets)
    small = sizes <= limit
    if not small.any():
        return None
    columns = _row_basis(_left_null(m[:, ~small]).T @ m[:, small])  # V = {w @ columns}
    if columns.shape[0] == 0:
        return None
    stuck = _packed(columns, sizes[small], limit + 1)
    if stuck is None:
        return None
    # the vectors of V supported on the used-up atoms (w ⊥ every other column)
    inside = _reduced(_left_null(columns[:, ~stuck]).T @ columns[:, stuck])
    found: list[np.ndarray] = []
    if 0 < inside.shape[0] <= _ENUMERATE_MAX:
        for xs in _enumerate(inside, sizes[small][stuck], limit):
            x = np.zeros(int(small.sum()))
            x[stuck] = xs
            found.append(x)
    decided = True
    if not found:
        decided, found = _milp(columns, sizes[small], limit, time_limit)
    for xs in found:
        x = np.zeros(m.shape[1])
        x[small] = xs
        y = _coefficients(m, x)
        if y is not None:
            return Derivation(members=x[atom_of] > 0.5, weights=y)
        logger.debug("derivable-set candidate failed verification; ignored")
        decided = False
    if decided:
        return None
    x = np.zeros(m.shape[1])
    x[np.flatnonzero(small)[stuck]] = inside[0] if inside.shape[0] else 1.0
    y, *_ = np.linalg.lstsq(m.T, x, rcond=None)
    logger.info("privacy check undecided; withholding conservatively")
    return Derivation(members=None, weights=y)


# ----------------------------------------------------------------------------- protection


@dataclass
class _Group:
    """Cells publishing the same set of speakers."""

    members: np.ndarray
    cells: list[Cell]
    withheld: str = ""

    @property
    def rank(self) -> int:
        return max(c.rank for c in self.cells)

    @property
    def performance(self) -> bool:
        return any(c.quantities == ALL_QUANTITIES for c in self.cells)

    @property
    def size(self) -> int:
        return int(self.members.sum())


def _groups(cells: Sequence[Cell], n_speakers: int) -> list[_Group]:
    """Cells grouped by their set; a cell whose set is unknown is a group of its own, withheld
    from the start."""
    out: dict[bytes, _Group] = {}
    unknown = []
    for c in cells:
        if c.members is None:
            unknown.append(_Group(np.zeros(n_speakers, dtype=bool), [c], "primary"))
            continue
        mem = np.asarray(c.members, dtype=bool)
        if not mem.any():
            continue  # an empty set publishes nothing
        key = np.packbits(mem).tobytes()
        if key in out:
            out[key].cells.append(c)
        else:
            out[key] = _Group(mem, [c])
    return list(out.values()) + unknown


def _break(active: list[_Group], found: Derivation) -> _Group:
    """The group to withhold so that ``found`` is no longer derivable (greedy: the cheapest
    group taking part whose removal alone breaks it, else the cheapest taking part)."""
    involved = [i for i, w in enumerate(found.weights)
                if abs(w) > 1e-9 and active[i].rank < LOCKED]
    if not involved:
        raise RuntimeError("a set below the minimum is derivable from the overall line alone")
    involved.sort(key=lambda i: (active[i].rank, active[i].size))
    if found.members is not None:
        m, _, _ = _atoms(np.array([g.members for g in active] + [found.members]))
        for i in involved[:_BREAK_TRIES]:
            if _coefficients(np.delete(m[:-1], i, axis=0), m[-1]) is None:
                return active[i]
    return active[involved[0]]


def _blank_rows(table: pd.DataFrame, col: str, rows: list[int]) -> None:
    """Blank rows of one column, keeping integer columns integer (nullable) in the CSV."""
    dtype = table[col].dtype
    if pd.api.types.is_bool_dtype(dtype):
        table[col] = table[col].astype("boolean")
    elif pd.api.types.is_integer_dtype(dtype):
        table[col] = table[col].astype("Int64")
    elif not pd.api.types.is_float_dtype(dtype):
        table[col] = table[col].astype(object)
    blank = (np.nan if pd.api.types.is_float_dtype(table[col].dtype)
             else None if table[col].dtype == object else pd.NA)
    table.iloc[rows, table.columns.get_loc(col)] = blank


def _apply_tables(pub: Published, places: list[Place]) -> None:
    """Blank (and relabel) the table rows of withheld cells, one column at a time."""
    hide: dict[tuple[str, str], set[int]] = {}
    relabel: dict[tuple[str, str], dict[int, object]] = {}
    for place in places:
        name = place.where[1]
        table = pub.tables.get(name)
        if table is None or place.row is None or place.row >= len(table):
            continue
        for col in place.hide:
            if col in table.columns:
                hide.setdefault((name, col), set()).add(place.row)
        for col, value in place.set_to:
            if col in table.columns:
                relabel.setdefault((name, col), {})[place.row] = value
    for (name, col), rows in hide.items():
        _blank_rows(pub.tables[name], col, sorted(rows))
    for (name, col), values in relabel.items():
        table = pub.tables[name]
        table[col] = table[col].astype(object)
        for row, value in values.items():
            table.iloc[row, table.columns.get_loc(col)] = value


def _apply_data(pub: Published, place: Place) -> None:
    """Blank (and relabel) one place of a withheld cell in report.json's data."""
    target: Any = pub.data  # Any: a JSON-like container
    for key in place.where[1:]:
        if not isinstance(target, dict) or key not in target:
            return
        target = target[key]
    if place.row is not None:
        if not isinstance(target, list) or place.row >= len(target):
            return
        if isinstance(target[place.row], str):
            text = dict(place.set_to).get("text")
            if text is not None:
                target[place.row] = text
            return
        target = target[place.row]
    if isinstance(target, dict):
        for key in place.hide:
            if key in target:
                target[key] = None
        for key, value in place.set_to:
            if key in target:
                target[key] = value


def protect(published: Published, cells: Sequence[Cell], config: PrivacyConfig) -> Published:
    """Apply primary and complementary suppression (module docstring) to a report.

    Args:
        published: the report's data and tables, as assembled.
        cells: every published set of speakers and where its numbers appear.
        config: the privacy settings.

    Returns:
        A copy with the withheld numbers blanked and ``data["privacy"]`` recording the rule
        and what was withheld and why.
    """
    out = Published(copy.deepcopy(published.data),
                    {k: v.copy() for k, v in published.tables.items()})
    n_min = config.min_cohort_speakers
    before = out.data.get("privacy")
    record: dict[str, object] = dict(before) if isinstance(before, dict) else {}
    record["min_cohort_speakers"] = n_min
    if config.include_speaker_ids or n_min <= 1:
        record["rule"] = ("Speaker ids were allowed for this report: cohorts below the minimum "
                          "are pooled or suppressed, and no complementary suppression is "
                          "applied." if config.include_speaker_ids
                          else "No minimum cohort size: nothing is withheld.")
        record["complementary"] = False
        record["primary_suppressed"] = []
        record["secondary_suppressed"] = []
        out.data["privacy"] = record
        return out
    n_all = max((len(c.members) for c in cells if c.members is not None), default=0)
    groups = _groups(cells, n_all)
    limit = min(n_min - 1, n_all - 1)
    primary: list[str] = []
    secondary: list[dict[str, str]] = []
    for g in groups:
        if g.withheld or (g.size <= limit and g.rank < LOCKED):
            g.withheld = "primary"
            primary += [c.name for c in g.cells]
    # Every set a tier publishes stays published in the union of both tiers, so a proof that
    # nothing small follows from all remaining sets together settles both tiers in one check
    # (the usual case); otherwise each tier is searched and broken as below.
    settled = derivable_set(np.array([g.members for g in groups if not g.withheld]),
                            limit) is None
    for tier in (ALL_QUANTITIES, SPEAKERS_ONLY):
        while not settled:
            active = [g for g in groups if not g.withheld
                      and (tier == SPEAKERS_ONLY or g.performance)]
            found = derivable_set(np.array([g.members for g in active]), limit)
            if found is None:
                break
            g = _break(active, found)
            g.withheld = tier
            what = ("errors, words and WER" if tier == ALL_QUANTITIES else "speaker counts")
            reason = (f"complementary: with the other published {what} it would let a set "
                      f"of fewer than {n_min} speakers be derived by differencing")
            secondary += [{"cell": c.name, "reason": reason} for c in g.cells]
    places = [p for g in groups if g.withheld for c in g.cells for p in c.places]
    _apply_tables(out, [p for p in places if p.where[0] == "table"])
    for place in places:
        if place.where[0] == "data":
            _apply_data(out, place)
    record["rule"] = RULE.format(n=n_min)
    record["complementary"] = True
    record["primary_suppressed"] = primary
    record["secondary_suppressed"] = secondary
    record["sentence"] = (
        f"Cohorts below {n_min} speakers are pooled or suppressed; "
        + (f"{len(secondary)} further published "
           f"{'number set was' if len(secondary) == 1 else 'number sets were'} withheld so "
           "that no group below the minimum can be derived by subtracting published numbers."
           if secondary else
           "no further number needed withholding: no group below the minimum can be derived "
           "by subtracting published numbers.")
    )
    out.data["privacy"] = record
    logger.info("privacy: %d primary, %d complementary suppressions", len(primary),
                len(secondary))
    return out
