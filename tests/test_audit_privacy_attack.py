"""The differencing attack on audit reports.

Every count a report publishes (speakers, reference words, errors, utterances; errors also
as WER × words) is the total of some set of speakers. The attacker reads report.json and every
CSV file, writes each published (set, quantity) as a linear equation over the *atoms* (the
speakers grouped by which published sets they belong to, known here from the data) and asks,
by linear algebra, whether any set of fewer than ``min_cohort_speakers`` speakers has its
total determined: whether its indicator vector lies in the row space of the published sets'
indicator matrix. Single atoms are checked by least-norm projection; unions of atoms by a
mixed-integer program (x binary over the small atoms, x = Mᵀy), each hit verified by least
squares.

Randomized audits: random sizes, tiny accent and gender groups, speakers without
coordinates, zip codes or embeddings, speakers missing from the speaker table, random
minimum cohort sizes; every audit method that can run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from fairstream.audit import AuditConfig, AuditResult, PrivacyConfig, run_audit
from fairstream.audit.privacy import derivable_set
from fairstream.audit.publish import assemble
from fairstream.audit.synthetic import make_synthetic_audit

N_AUDITS = 20
METHODS = ("attribute:accent,attribute:gender,attribute:age_band,attribute:accent+gender,"
           "geo,geodemo,embedding")

# columns that publish a set's speaker count, and those that publish its errors and words
# (a WER with its words, or with the rest's WER and the overall, gives both)
SPEAKER_COLS = ("n_speakers", "n_speakers_bottom", "share_speakers_pct",
                "bottom_share_speakers_pct", "count", "alpha_node")
PERFORMANCE_COLS = ("ref_words", "errors", "substitutions", "deletions", "insertions", "wer",
                    "wer_ci_low", "wer_ci_high", "wer_rest", "difference", "gap_pct",
                    "gap_ci_low", "gap_ci_high", "share_words_pct", "wer_bottom",
                    "wer_gap_pct", "wer_gap_ci_low", "wer_gap_ci_high",
                    "bottom_share_words_pct")


@dataclass
class Equations:
    """Published sets per quantity, named for the failure message."""

    sets: dict[str, list[tuple[str, np.ndarray]]] = field(
        default_factory=lambda: {"speakers": [], "errors and words": [], "utterances": []})

    def add(self, name: str, members: np.ndarray, row: dict[str, object]) -> None:
        def shown(cols: tuple[str, ...]) -> bool:
            return any(c in row and _number(row[c]) is not None for c in cols)

        if shown(SPEAKER_COLS) or shown(("precision", "recall")):
            self.sets["speakers"].append((name, members))
        if shown(PERFORMANCE_COLS):
            self.sets["errors and words"].append((name, members))
        if shown(("n_utterances",)):
            self.sets["utterances"].append((name, members))


def _number(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _make_audit(seed: int, root: Path) -> tuple[AuditResult, dict[str, np.ndarray]]:
    """A random audit with small groups, written to ``root/report``; and the truth the
    attacker uses to name sets (speaker masks in the audit's speaker order)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(70, 170))
    d = make_synthetic_audit(
        n_speakers=n, utts_per_speaker=int(rng.integers(2, 6)),
        n_accents=int(rng.integers(3, 6)), n_planted_accents=1,
        accent_factor=float(rng.uniform(1.0, 2.5)), geo_factor=float(rng.uniform(1.0, 3.0)),
        rural_factor=float(rng.uniform(1.0, 1.8)), n_zips=int(rng.integers(6, 40)),
        embedding_noise=float(rng.uniform(0.3, 1.2)), seed=seed)
    spk = d.speakers.copy()
    ids = spk["speaker_id"].to_numpy()
    pick = rng.permutation(n)
    at = 0
    for j in range(int(rng.integers(1, 4))):  # tiny accents
        k = int(rng.integers(1, 9))
        spk.loc[pick[at:at + k], "accent"] = f"rare_{j}"
        at += k
    k = int(rng.integers(0, 6))
    spk.loc[pick[at:at + k], "gender"] = "nonbinary"
    at += k
    k = int(rng.integers(0, 6))
    spk.loc[pick[at:at + k], ["lat", "lon"]] = np.nan
    at += k
    k = int(rng.integers(0, 3))
    spk.loc[pick[at:at + k], "lat"] = 95.0
    at += k
    k = int(rng.integers(0, 5))
    spk.loc[pick[at:at + k], "zip"] = np.nan
    at += k
    k = int(rng.integers(0, 4))
    spk.loc[pick[at:at + k], "zip"] = "99999"
    at += k
    k = int(rng.integers(0, 4))
    no_row = set(ids[pick[at:at + k]])
    at += k
    k = int(rng.integers(0, 5))
    no_emb = set(ids[pick[at:at + k]])
    keep = ~np.isin(d.embedding_ids, list(no_emb))
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "corpus.json").write_text(json.dumps({
        "format": "fairstream-corpus", "version": 1,
        "planted": {"under_represented_accents": d.planted["under_represented_accents"]}}))
    min_cohort = int(rng.choice([5, 8, 10, 12]))
    result = run_audit(
        d.results, speakers=spk[~spk["speaker_id"].isin(no_row)],
        zip_demographics=d.zip_demographics,
        embeddings=(d.embedding_ids[keep], d.embeddings[keep]), corpus_dir=corpus,
        methods=METHODS, out_dir=root / "report",
        config=AuditConfig(n_boot=100, seed=seed,
                           privacy=PrivacyConfig(min_cohort_speakers=min_cohort)))
    order = result.stats.table.index.to_numpy()
    meta = spk[~spk["speaker_id"].isin(no_row)].set_index("speaker_id").reindex(order)
    lat, lon = meta["lat"].to_numpy(float), meta["lon"].to_numpy(float)
    nan = ~(np.isfinite(lat) & np.isfinite(lon))
    zips = meta["zip"]
    no_zip = zips.isna().to_numpy()
    known = set(d.zip_demographics["zip"].astype(str))
    truth = {
        "missing (NaN) latitude or longitude": nan,
        "latitude outside [-90, 90] or longitude outside [-180, 180]":
            ~nan & ((np.abs(lat) > 90) | (np.abs(lon) > 180)),
        "speaker has no zip code": no_zip,
        "zip code not in the demographics table":
            ~no_zip & ~zips.astype(str).isin(known).to_numpy(),
        "speaker has no embedding": np.isin(order, list(no_emb)),
        "no row": np.isin(order, list(no_row)),
        "planted": meta["accent"].isin(d.planted["under_represented_accents"]).to_numpy(),
    }
    return result, truth


def _equations(result: AuditResult, truth: dict[str, np.ndarray], out: Path) -> Equations:
    """Every published count of the report in ``out``, as (set, quantity) equations; each
    visible count is checked against the data (so the sets are named right)."""
    stats = result.stats
    words, errors = stats.words.astype(float), stats.errors.astype(float)
    utts = stats.utterances.astype(float)
    n_all = stats.n_speakers
    data = json.loads((out / "report.json").read_text())
    eq = Equations()

    def check(name: str, members: np.ndarray, row: dict[str, object]) -> None:
        got = {c: _number(row.get(c)) for c in ("n_speakers", "ref_words", "errors", "wer",
                                                 "n_utterances", "count")}
        if got["n_speakers"] is not None or got["count"] is not None:
            assert (got["n_speakers"] or got["count"]) == members.sum(), name
        if got["ref_words"] is not None:
            assert got["ref_words"] == words[members].sum(), name
        if got["errors"] is not None:
            assert got["errors"] == errors[members].sum(), name
        if got["wer"] is not None:
            assert got["wer"] == pytest.approx(errors[members].sum() / words[members].sum()), name
        if got["n_utterances"] is not None:
            assert got["n_utterances"] == utts[members].sum(), name
        eq.add(name, members, row)

    everyone = np.ones(n_all, dtype=bool)
    check("overall", everyone, data["overall"])
    eq.sets["utterances"].append(("provenance rows_used", everyone))
    if _number(data["provenance"].get("planted_speakers")) is not None:
        assert data["provenance"]["planted_speakers"] == truth["planted"].sum()
        eq.sets["speakers"].append(("planted", truth["planted"]))
    methods = pd.read_csv(out / "methods.csv")
    for i, row in methods.iterrows():
        outcome = result.outcomes[row["method"]]
        bottom = outcome.bottom.mask
        rec = {k: v for k, v in row.items() if k not in ("precision", "recall")}
        rec["n_speakers"], rec["wer"] = row["n_speakers_bottom"], row["wer_bottom"]
        if not bottom.any():
            continue
        check(f"methods.csv {row['method']}", bottom, rec)
        assert data["methods"][i]["wer_bottom"] == _number(row["wer_bottom"])
        if _number(row["precision"]) is not None or _number(row["recall"]) is not None:
            both = bottom & truth["planted"]
            assert _number(row["precision"]) == pytest.approx(both.sum() / bottom.sum())
            eq.sets["speakers"].append((f"methods.csv {row['method']} recovery", both))
    for m, outcome in result.outcomes.items():
        name = "cohorts_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", m) + ".csv"
        table = pd.read_csv(out / name, keep_default_na=False, na_values=[""])
        labels, codes = outcome.partition.labels, outcome.partition.codes
        for i, row in table.iterrows():
            members = codes == labels.index(row["group"])
            check(f"{name} {row['group']}", members, row.to_dict())
            assert _number(data["cohorts"][m][i].get("wer")) == _number(row.get("wer"))
        detail = outcome.detail
        if (out / "geo_split_tests.csv").exists() and m == "geo":
            tests = pd.read_csv(out / "geo_split_tests.csv")
            for _, row in tests.iterrows():
                inside = [r.region_id for r in detail.regions
                          if row["path"] == "all" or r.path == row["path"]
                          or r.path.startswith(row["path"] + " & ")]
                check(f"geo_split_tests.csv {row['path']}", np.isin(codes, inside) & (codes >= 0),
                      row.to_dict())
        if m == "geodemo":
            cand = pd.read_csv(out / "geodemographic_candidates.csv")
            top = data["geodemographic"]["top_candidates"]
            for i, row in cand.iterrows():
                members = np.zeros(n_all, dtype=bool)
                members[detail.candidate_members[i]] = True
                check(f"geodemographic_candidates.csv {row['definition']}", members,
                      row.to_dict())
                if i < len(top):
                    assert _number(top[i]["wer"]) == _number(row["wer"])
    exclusions = pd.read_csv(out / "exclusions.csv")
    for _, row in exclusions[exclusions["unit"] == "speakers"].iterrows():
        reason = str(row["reason"]).removesuffix(" (count withheld for privacy)")
        check(f"exclusions.csv {reason}", truth[reason], row.to_dict())
    for note in data["notes"]:
        found = re.match(r"(\d+) speakers \((\d+) utterances\) of the results have no row", note)
        if found:
            members = truth["no row"]
            check("notes: no row", members, {"n_speakers": found.group(1),
                                             "n_utterances": found.group(2)})
    return eq


def _determined(sets: list[tuple[str, np.ndarray]], min_size: int, n_all: int
                ) -> tuple[int, list[str]] | None:
    """A set of fewer than ``min_size`` speakers whose indicator is in the row space of the
    published sets: (its size, the published sets combined), or None."""
    if not sets:
        return None
    limit = min(min_size - 1, n_all - 1)
    names = [n for n, _ in sets]
    mat = np.array([m for _, m in sets], dtype=bool)
    _, first, counts = np.unique(mat.T, axis=0, return_index=True, return_counts=True)
    m = mat[:, first].astype(float)  # (P, A)
    p, a = m.shape
    u, s, _ = np.linalg.svd(m.T, full_matrices=False)
    q = u[:, s > 1e-9 * s[0]]  # orthonormal basis of the row space, (A, r)

    def combination(x: np.ndarray) -> list[str] | None:
        y, *_ = np.linalg.lstsq(m.T, x, rcond=None)
        if np.abs(m.T @ y - x).max() > 1e-6:
            return None
        big = np.argsort(-np.abs(y))[:12]
        return [f"{y[i]:+.3g} × {names[i]}" for i in big if abs(y[i]) > 1e-9]

    # single atoms: least-norm projection onto the row space
    resid = 1.0 - (q ** 2).sum(axis=1)  # |e_a − QQᵀe_a|² for each atom a
    for atom in np.flatnonzero((resid < 1e-9) & (counts <= limit)):
        x = np.zeros(a)
        x[atom] = 1.0
        used = combination(x)
        if used is not None:
            return int(counts[atom]), used
    # unions of atoms: x binary on the small atoms, x = mᵀ y, 1 ≤ size ≤ limit
    small = counts <= limit
    if not small.any():
        return None
    eqm = sp.hstack([sp.eye(a, format="csr"), sp.csr_matrix(-m.T)], format="csr")
    size = np.concatenate([counts, np.zeros(p)]).astype(float)
    res = milp(size, integrality=np.concatenate([np.ones(a), np.zeros(p)]),
               constraints=[LinearConstraint(eqm, 0, 0),
                            LinearConstraint(sp.csr_matrix(size[None, :]), 1, limit)],
               bounds=Bounds(np.concatenate([np.zeros(a), np.full(p, -np.inf)]),
                             np.concatenate([small.astype(float), np.full(p, np.inf)])),
               options={"time_limit": 60})
    assert res.status in (0, 2), f"the attack could not decide: {res.message}"
    if res.status == 2:
        return None
    x = np.rint(res.x[:a])
    used = combination(x)
    assert used is not None, "the integer program's set failed verification"
    return int(x @ counts), used


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack reads numbers: report.html is still rendered from the published data, but
    its plots (drawn from the same tables) are skipped to keep 20 audits quick."""
    import fairstream.audit.html as page

    for name in ("wer_bars", "methods_plot", "region_map"):
        monkeypatch.setattr(page, name, lambda *args, **kwargs: None, raising=False)


@pytest.mark.parametrize("seed", range(N_AUDITS))
def test_no_small_set_is_derivable(seed: int, tmp_path: Path) -> None:
    result, truth = _make_audit(seed, tmp_path)
    eq = _equations(result, truth, tmp_path / "report")
    min_size = result.config.privacy.min_cohort_speakers
    for quantity, sets in eq.sets.items():
        hit = _determined(sets, min_size, result.stats.n_speakers)
        assert hit is None, (
            f"seed {seed}: the {quantity} of a set of {hit[0]} speakers (< {min_size}) follow "
            f"from the report: {' '.join(hit[1])}")


def _write_unprotected(result: AuditResult, out: Path) -> int:
    """report.json and the CSV tables of ``result`` without protection (what reports
    published before it); returns how many sets of speakers they publish."""
    raw, cells = assemble(result)
    out.mkdir()
    (out / "report.json").write_text(json.dumps(raw.data))
    for name, table in raw.tables.items():
        table.to_csv(out / name, index=False)
    return len(cells)


def test_the_attack_finds_what_an_unprotected_report_leaks(tmp_path: Path) -> None:
    """The same audit written without the protection (as reports were before it): the
    attack derives a set below the minimum, so the test above can fail."""
    result, truth = _make_audit(0, tmp_path)
    out = tmp_path / "raw"
    _write_unprotected(result, out)
    eq = _equations(result, truth, out)
    n_min = result.config.privacy.min_cohort_speakers
    hits = {q: _determined(s, n_min, result.stats.n_speakers) for q, s in eq.sets.items()}
    assert all(h is not None and 1 <= h[0] < n_min for h in hits.values()), hits


def _families(seed: int) -> tuple[list[np.ndarray], int]:
    """Random published-set families: partitions with an unpublished remainder or a hidden
    block, nested sets, unions; and a minimum size."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 600))
    sets = [np.ones(n, dtype=bool)]
    for _ in range(int(rng.integers(2, 5))):
        codes = rng.integers(0, int(rng.integers(2, 7)), n)
        codes[rng.random(n) < rng.choice([0.0, 0.0, 0.0, 0.02])] = -1
        blocks = [codes == g for g in range(codes.max() + 1)]
        if rng.random() < 0.15:
            blocks.pop(int(rng.integers(0, len(blocks))))
        sets += blocks
    for _ in range(int(rng.choice([0, 0, 1, 2]))):
        a = sets[int(rng.integers(1, len(sets)))].copy()
        a[rng.choice(n, int(rng.integers(1, 6)), replace=False)] = True
        sets.append(a)
    return sets, int(rng.integers(3, 13))


@pytest.mark.parametrize("seed", range(30))
def test_the_protection_search_agrees_with_the_attack(seed: int) -> None:
    """privacy.derivable_set (packing proof, enumeration, integer program over a reduced
    subspace) and this file's attack (projection and an integer program over all atoms)
    agree on whether a small set is derivable."""
    sets, n_min = _families(seed)
    ours = derivable_set(np.array(sets), n_min - 1)
    theirs = _determined([(str(i), s) for i, s in enumerate(sets)], n_min, len(sets[0]))
    assert (ours is None) == (theirs is None), (ours, theirs)
    if ours is not None:
        assert ours.members is not None and 1 <= ours.members.sum() < n_min
        y, *_ = np.linalg.lstsq(np.array(sets, dtype=float).T, ours.members.astype(float),
                                rcond=None)
        assert np.allclose(np.array(sets, dtype=float).T @ y, ours.members)


def _small_audit(tmp_path: Path, **privacy: object) -> tuple[AuditResult, Path]:
    """60 speakers; a 4-speaker accent (suppressed) next to two visible ones."""
    d = make_synthetic_audit(n_speakers=60, n_accents=2, n_planted_accents=1, seed=1)
    spk = d.speakers.copy()
    spk.loc[:3, "accent"] = "rare"
    out = tmp_path / "report"
    result = run_audit(d.results, speakers=spk, methods="attribute:accent", out_dir=out,
                       config=AuditConfig(n_boot=20, privacy=PrivacyConfig(**privacy)))
    return result, out


def test_overall_minus_visible_groups_is_closed(tmp_path: Path) -> None:
    """Overall − the visible accents was the suppressed accent: one visible accent is withheld
    (the smaller one, not the bottom cohort), everywhere it appears, and report.json says why."""
    result, out = _small_audit(tmp_path)
    data = json.loads((out / "report.json").read_text())
    table = pd.read_csv(out / "cohorts_attribute_accent.csv")
    status = dict(zip(table["group"], table["status"]))
    bottom = result.methods.loc[0, "bottom_cohort"]
    withheld = [g for g, s in status.items() if s == "suppressed (complementary)"]
    assert len(withheld) == 1 and withheld[0] != bottom
    row = table[table["group"] == withheld[0]].iloc[0]
    assert row[["n_speakers", "ref_words", "errors", "wer", "wer_rest", "gap_pct"]].isna().all()
    record = next(r for r in data["cohorts"]["attribute:accent"] if r["group"] == withheld[0])
    assert record["wer"] is None and record["n_speakers"] is None
    assert data["overall"]["errors"] is not None  # the overall line stays
    privacy = data["privacy"]
    assert privacy["complementary"] is True and "derived" in privacy["rule"]
    assert [x["cell"] for x in privacy["secondary_suppressed"]] == [
        f"cohorts_attribute_accent.csv: {withheld[0]}"]
    methods = pd.read_csv(out / "methods.csv")
    assert np.isfinite(methods.loc[0, "wer_gap_pct"])  # the bottom cohort keeps its numbers


def test_include_speaker_ids_opts_out(tmp_path: Path) -> None:
    _, out = _small_audit(tmp_path, include_speaker_ids=True)
    data = json.loads((out / "report.json").read_text())
    assert data["privacy"]["complementary"] is False
    assert data["privacy"]["secondary_suppressed"] == []
    table = pd.read_csv(out / "cohorts_attribute_accent.csv")
    assert set(table["status"]) == {"ok", "suppressed"}
    assert (out / "speaker_cohorts.csv").exists()


def test_nested_candidates_and_small_bins_are_closed() -> None:
    """{A} and {A, X} publish X; a remainder outside a partition is overall − its blocks; a
    2 × 2 cross-classification determines no cell."""
    n = 60
    a = np.zeros(n, dtype=bool)
    a[:25] = True
    ax = a.copy()
    ax[25:29] = True  # X: 4 speakers
    found = derivable_set(np.array([a, ax]), 9)
    assert found is not None and np.flatnonzero(found.members).tolist() == [25, 26, 27, 28]
    assert found.weights == pytest.approx([-1.0, 1.0])
    everyone = np.ones(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    b[25:57] = True  # outside both: 3 speakers
    assert derivable_set(np.array([everyone, a, b]), 9).members.sum() == 3
    rng = np.random.default_rng(0)
    g, h = rng.random(n) < 0.5, rng.random(n) < 0.5
    assert derivable_set(np.array([everyone, g, ~g, h, ~h]), 9) is None


def test_region_boxes_do_not_give_extreme_locations(tmp_path: Path) -> None:
    """The regions' outer edges are moved out to the location grid (they were the extreme
    speakers' coordinates); inner edges are the tree's thresholds."""
    d = make_synthetic_audit(n_speakers=120, geo_factor=3.0, seed=2)
    run_audit(d.results, speakers=d.speakers, methods="geo", out_dir=tmp_path,
              config=AuditConfig(n_boot=200))
    boxes = pd.read_csv(tmp_path / "cohorts_geo.csv")
    for col in ("lat_min", "lon_min", "lat_max", "lon_max"):
        coord = d.speakers[col[:3]]
        extreme = coord.min() if col.endswith("min") else coord.max()
        edge = boxes[col].min() if col.endswith("min") else boxes[col].max()
        assert edge == np.round(edge) and edge != extreme, col
        assert (edge <= extreme) if col.endswith("min") else (edge >= extreme), col
