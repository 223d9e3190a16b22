"""Selection-corrected inference: brute force, ordering against the naive test, one
candidate, calibration under the null, and the confirmation split."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fairstream.audit import AuditConfig, EmbeddingConfig, PrivacyConfig, run_audit
from fairstream.audit.api import _held_out_half
from fairstream.audit.methods import AttributeMethod, AuditInputs, Proposal, register_method
from fairstream.audit.selection import candidate_atoms, inference_label, selection_test
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.cli import main
from fairstream.metrics.bootstrap import SpeakerBootstrap

NEW_FIELDS = ("p_value_naive", "wer_gap_ci_low_naive", "wer_gap_ci_high_naive", "n_candidates",
              "inference")


def _brute_force(e: np.ndarray, w: np.ndarray, cands: np.ndarray, chosen: int, r: int,
                 seed: int, confidence: float) -> dict[str, float]:
    """Resample speakers with the draws of SpeakerBootstrap.draw, one replicate at a time."""
    rng = np.random.default_rng(seed)
    s = len(e)
    gaps, diffs = [], []
    for r0 in range(0, r, 64):  # SpeakerBootstrap.draw draws 64 replicates per step
        draws = rng.integers(0, s, size=(min(r0 + 64, r) - r0, s), dtype=np.int64)
        for drawn in draws:
            row_g, row_d = [], []
            for c in cands:
                inside = c[drawn]
                e_c, w_c = e[drawn][inside].sum(), w[drawn][inside].sum()
                e_r, w_r = e[drawn][~inside].sum(), w[drawn][~inside].sum()
                wer_c = e_c / w_c if w_c > 0 else math.nan
                wer_r = e_r / w_r if w_r > 0 else math.nan
                row_g.append((wer_c / wer_r - 1.0) * 100.0)
                row_d.append(wer_c - wer_r)
            gaps.append(row_g)
            diffs.append(row_d)
    g_rep, d_rep = np.array(gaps).T, np.array(diffs).T  # (C, R)
    g = np.array([((e[c].sum() / w[c].sum()) / (e[~c].sum() / w[~c].sum()) - 1.0) * 100.0
                  for c in cands])
    se = np.array([np.std(row[np.isfinite(row)], ddof=1) for row in g_rep])
    t = np.abs(g_rep - g[:, None]) / se[:, None]
    m = np.nanmax(np.where(np.isfinite(t), t, np.nan), axis=0)
    stat = abs(g[chosen]) / se[chosen]
    crit = np.sort(m)[math.ceil(confidence * (r + 1)) - 1]
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(g_rep[chosen][np.isfinite(g_rep[chosen])], [a, 1.0 - a])
    d = d_rep[chosen][np.isfinite(d_rep[chosen])]  # replicates without the cohort: left out
    p_naive = min(1.0, 2.0 * (min((d <= 0).sum(), (d >= 0).sum()) + 1.0) / (len(d) + 1.0))
    return {"gap": g[chosen], "se": se[chosen], "statistic": stat, "crit": crit,
            "p_max": ((m >= stat).sum() + 1.0) / (r + 1.0),
            "lo_max": g[chosen] - crit * se[chosen], "hi_max": g[chosen] + crit * se[chosen],
            "lo_naive": lo, "hi_naive": hi, "p_naive": p_naive}


def _toy(seed: int, s: int = 48, groups: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.integers(20, 60, s).astype(np.float64)
    code = rng.integers(0, groups, s)
    e = rng.binomial(w.astype(np.int64), np.where(code == 0, 0.3, 0.2)).astype(np.float64)
    return e, w, code


@pytest.mark.parametrize("max_block", [1 << 22, 9])  # one chunk, and replicates in chunks
def test_matches_brute_force_speaker_resampling(max_block: int) -> None:
    e, w, code = _toy(0)
    cands = np.stack([code == g for g in range(4)] + [(code == 1) | (code == 2)])
    boot = SpeakerBootstrap.draw(len(e), 130, seed=5)
    for chosen in (0, 4):
        got = selection_test(e, w, boot, cands, chosen, confidence=0.9, max_block=max_block)
        want = _brute_force(e, w, cands, chosen, 130, seed=5, confidence=0.9)
        assert got.n_candidates == 5 and got.n_replicates == 130
        assert got.gap_pct == pytest.approx(want["gap"], rel=1e-12)
        assert got.se == pytest.approx(want["se"], rel=1e-9)
        assert got.statistic == pytest.approx(want["statistic"], rel=1e-9)
        assert got.critical_value == pytest.approx(want["crit"], rel=1e-9)
        assert got.p_value_max == pytest.approx(want["p_max"], rel=1e-12)
        assert (got.ci_low_max, got.ci_high_max) == pytest.approx(
            (want["lo_max"], want["hi_max"]), rel=1e-9)
        assert (got.ci_low_naive, got.ci_high_naive) == pytest.approx(
            (want["lo_naive"], want["hi_naive"]), rel=1e-9)
        assert got.p_value_naive == pytest.approx(want["p_naive"], rel=1e-12)
        # p <= alpha exactly when the simultaneous interval excludes 0
        assert (got.p_value_max <= 0.1) == (got.ci_low_max > 0 or got.ci_high_max < 0)


def test_audit_row_matches_brute_force() -> None:
    """The methods-table row of run_audit: the same bootstrap seed, speakers and candidates."""
    d = make_synthetic_audit(n_speakers=60, n_accents=3, utts_per_speaker=3, seed=4)
    res = run_audit(d.results, speakers=d.speakers, methods="attribute:accent",
                    config=AuditConfig(n_boot=70, seed=3))
    per = d.results.groupby("speaker_id")[["sub", "del", "ins", "hits"]].sum().sort_index()
    e = (per["sub"] + per["del"] + per["ins"]).to_numpy(np.float64)
    w = (per["sub"] + per["del"] + per["hits"]).to_numpy(np.float64)
    accent = d.speakers.set_index("speaker_id").loc[per.index, "accent"].to_numpy()
    groups = sorted(set(accent))
    cands = np.stack([accent == g for g in groups])
    row = res.methods.iloc[0]
    chosen = groups.index(row["bottom_cohort"])
    want = _brute_force(e, w, cands, chosen, 70, seed=3, confidence=0.95)
    assert row["n_candidates"] == 3 and row["inference"] == "max-statistic over 3 candidates"
    assert row["wer_gap_pct"] == pytest.approx(want["gap"], rel=1e-12)
    assert row["wer_gap_ci_low_naive"] == pytest.approx(want["lo_naive"], rel=1e-9)
    assert row["wer_gap_ci_high_naive"] == pytest.approx(want["hi_naive"], rel=1e-9)
    assert row["p_value_naive"] == pytest.approx(want["p_naive"], rel=1e-12)
    assert row["p_value"] == pytest.approx(max(want["p_naive"], want["p_max"]), rel=1e-12)
    assert row["wer_gap_ci_low"] == pytest.approx(min(want["lo_naive"], want["lo_max"]), rel=1e-9)
    assert row["wer_gap_ci_high"] == pytest.approx(max(want["hi_naive"], want["hi_max"]),
                                                   rel=1e-9)


def test_more_candidates_never_make_the_test_less_strict() -> None:
    e, w, code = _toy(1, s=80, groups=6)
    cands = np.stack([code == g for g in range(6)])
    boot = SpeakerBootstrap.draw(len(e), 400, seed=2)
    many = selection_test(e, w, boot, cands, 0)
    one = selection_test(e, w, boot, cands[:1], 0)
    # the maximum over candidates dominates any single candidate's statistic
    assert many.critical_value >= one.critical_value
    assert many.p_value_max >= one.p_value_max
    assert many.critical_value > one.critical_value  # strictly, with 6 candidates
    # the headline is never more confident than the conditional figure
    assert many.p_value >= many.p_value_naive
    assert many.ci_low <= many.ci_low_naive and many.ci_high >= many.ci_high_naive
    assert many.ci_low <= many.ci_low_max and many.ci_high >= many.ci_high_max


def test_one_candidate_is_the_conditional_test() -> None:
    e, w, code = _toy(2)
    boot = SpeakerBootstrap.draw(len(e), 200, seed=0)
    t = selection_test(e, w, boot, (code == 0)[None], 0)
    assert inference_label(t.n_candidates) == "single comparison"
    assert (t.p_value, t.ci_low, t.ci_high) == (t.p_value_naive, t.ci_low_naive,
                                                t.ci_high_naive)
    assert np.isfinite([t.p_value, t.ci_low, t.ci_high]).all()


def test_one_reportable_group_in_an_audit_is_a_single_comparison() -> None:
    d = make_synthetic_audit(n_speakers=40, seed=3)
    spk = d.speakers.copy()
    spk["site"] = np.where(np.arange(len(spk)) < 32, "main", "other")  # 8 < 10: merged
    res = run_audit(d.results, speakers=spk, methods="attribute:site",
                    config=AuditConfig(n_boot=100))
    row = res.methods.iloc[0]
    assert row["bottom_cohort"] == "main" and row["n_candidates"] == 1
    assert row["inference"] == "single comparison"
    for c in ("p_value", "wer_gap_ci_low", "wer_gap_ci_high"):
        assert np.isfinite(row[c]) and row[c] == row[f"{c}_naive"], c


def test_atoms_reproduce_every_candidate() -> None:
    rng = np.random.default_rng(0)
    cands = rng.random((11, 300)) < 0.4
    codes, member = candidate_atoms(cands)
    assert member.shape == (11, codes.max() + 1)
    assert (member[:, codes] == cands).all()


def test_calibration_under_the_null() -> None:
    """200 null searches over the 62 unions of 6 groups: corrected FWER near α, naive far
    above it."""
    subsets = [m for m in itertools.product([False, True], repeat=6) if 0 < sum(m) < 6]
    sig = sig_naive = 0
    n_sim = 200
    for i in range(n_sim):
        rng = np.random.default_rng([i, 77])
        s = 120
        code = rng.integers(0, 6, s)
        w = rng.poisson(40, s).astype(np.float64) + 1
        p = 0.15 * rng.lognormal(0.0, 0.3, s)
        e = rng.binomial(w.astype(np.int64), np.clip(p, 0, 0.9)).astype(np.float64)
        cands = np.stack([np.isin(code, np.nonzero(m)[0]) for m in subsets])
        big = (cands.sum(1) >= 10) & (cands.sum(1) <= s - 10)
        cands = cands[big]
        g = [((e[c].sum() / w[c].sum()) / (e[~c].sum() / w[~c].sum()) - 1) for c in cands]
        t = selection_test(e, w, SpeakerBootstrap.draw(s, 300, seed=i), cands,
                           int(np.argmax(g)))
        sig += t.p_value <= 0.05
        sig_naive += t.p_value_naive <= 0.05
    assert sig / n_sim <= 0.10
    assert sig_naive / n_sim >= 0.25


@pytest.fixture(scope="module")
def small_audit() -> dict[str, object]:
    d = make_synthetic_audit(n_speakers=160, n_accents=3, n_planted_accents=1,
                             accent_factor=2.0, seed=11)
    return {"results": d.results, "speakers": d.speakers, "zips": d.zip_demographics,
            "emb": (d.embedding_ids, d.embeddings)}


def test_every_method_corrected_figures_contain_the_naive_ones(small_audit: dict) -> None:
    res = run_audit(small_audit["results"], speakers=small_audit["speakers"],
                    zip_demographics=small_audit["zips"], embeddings=small_audit["emb"],
                    methods="attribute:accent,attribute:accent+gender,geo,geodemo,embedding",
                    config=AuditConfig(n_boot=200))
    m = res.methods.set_index("method")
    assert set(NEW_FIELDS) <= set(m.columns)
    tested = m[m["n_speakers_bottom"] > 0]
    assert len(tested) >= 4
    assert (tested["p_value"] >= tested["p_value_naive"]).all()
    assert (tested["wer_gap_ci_low"] <= tested["wer_gap_ci_low_naive"]).all()
    assert (tested["wer_gap_ci_high"] >= tested["wer_gap_ci_high_naive"]).all()
    assert m.loc["geodemo", "n_candidates"] == res.outcomes["geodemo"].detail.n_candidates
    assert m.loc["geodemo", "inference"] == (
        f"max-statistic over {m.loc['geodemo', 'n_candidates']} candidates")


def test_embedding_bottom_share_unions_are_candidates(small_audit: dict) -> None:
    cfg = AuditConfig(n_boot=50, embedding=EmbeddingConfig(k=4, bottom_share=60.0))
    res = run_audit(small_audit["results"], speakers=small_audit["speakers"],
                    embeddings=small_audit["emb"], methods="embedding", config=cfg)
    row = res.methods.iloc[0]
    assert row["n_candidates"] > 4  # the clusters and their unions within 60 %
    assert np.isfinite(row["p_value"])


class _Outsider(AttributeMethod):
    """Chooses a cohort its candidates do not list (a broken method)."""

    kind = "outsider"
    usage = "outsider"
    takes_argument = False

    def __init__(self) -> None:
        super().__init__(("accent",))

    @classmethod
    def from_spec(cls, argument: str | None) -> _Outsider:
        return cls()

    def candidates(self, proposal: Proposal, inputs: AuditInputs) -> np.ndarray:
        return np.zeros((1, inputs.stats.n_speakers), dtype=bool)


def test_a_bottom_outside_the_candidates_is_an_error(
        small_audit: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from fairstream.audit import methods as audit_methods

    monkeypatch.setattr(audit_methods, "_REGISTRY", dict(audit_methods._REGISTRY))
    register_method(_Outsider)
    with pytest.raises(ValueError, match="outsider.*not among its 1 candidates"):
        run_audit(small_audit["results"], speakers=small_audit["speakers"],
                  methods="outsider", config=AuditConfig(n_boot=20))


def test_confirm_split_discovers_without_the_held_out_errors(small_audit: dict) -> None:
    methods = "attribute:accent,geodemo,embedding"
    cfg = AuditConfig(n_boot=200, confirm_split=True, seed=4)
    kw = {"speakers": small_audit["speakers"], "zip_demographics": small_audit["zips"],
          "embeddings": small_audit["emb"], "methods": methods, "config": cfg}
    first = run_audit(small_audit["results"], **kw).methods.set_index("method")
    assert (first["inference"] == "confirm split").all()
    assert first.loc["attribute:accent", "p_value"] < 0.05  # the planted accent, held out
    # scramble the errors of the held-out half: the same cohorts are found, tested anew
    res = small_audit["results"].copy()
    speakers = np.array(sorted(res["speaker_id"].unique()))
    held = set(speakers[_held_out_half(len(speakers), 4)])
    rows = res["speaker_id"].isin(held).to_numpy()
    rng = np.random.default_rng(0)
    res.loc[rows, "sub"] = rng.integers(0, 4, rows.sum())
    res.loc[rows, "del"] = 0
    res.loc[rows, "ins"] = 0
    res["hits"] = res["n_ref_words"] - res["sub"] - res["del"]
    second = run_audit(res, **kw).methods.set_index("method")
    assert (second["bottom_cohort"] == first["bottom_cohort"]).all()
    assert (second["wer_gap_pct"] != first["wer_gap_pct"]).all()
    # the tested cohort is its part in the held-out half
    n_held = len(held)
    share = first["bottom_share_speakers_pct"] * n_held / 100
    assert share.to_numpy() == pytest.approx(first["n_speakers_bottom"].to_numpy())


def test_confirm_split_small_held_out_part_is_suppressed(small_audit: dict) -> None:
    cfg = AuditConfig(n_boot=50, confirm_split=True,
                      privacy=PrivacyConfig(min_cohort_speakers=30))
    row = run_audit(small_audit["results"], speakers=small_audit["speakers"],
                    methods="attribute:accent+gender", config=cfg).methods.iloc[0]
    assert row["n_speakers_bottom"] < 30
    assert row["bottom_cohort"].startswith("(suppressed")
    for c in ("p_value", "p_value_naive", "wer_gap_ci_low_naive", "wer_gap_ci_high_naive",
              "wer_gap_ci_low", "wer_gap_pct"):
        assert math.isnan(row[c]), c


def test_confirm_split_from_the_cli(small_audit: dict, tmp_path: Path) -> None:
    small_audit["results"].to_csv(tmp_path / "results.csv", index=False)
    small_audit["speakers"].to_csv(tmp_path / "speakers.csv", index=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["audit", "--results", str(tmp_path / "results.csv"),
                                  "--speakers", str(tmp_path / "speakers.csv"),
                                  "--methods", "attribute:accent", "--n-boot", "100",
                                  "--confirm-split", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "tested on the other" in r.output and "conditional on this choice" in r.output
    methods = pd.read_csv(out / "methods.csv")
    assert methods["inference"].tolist() == ["confirm split"]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["confirm_split"] is True
    assert set(NEW_FIELDS) <= set(report["methods"][0])


def test_calibration_benchmark_tiny(tmp_path: Path) -> None:
    """benchmarks/audit_calibration.py end to end on a tiny setting: the results file's fields."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "audit_calibration.py"
    spec = importlib.util.spec_from_file_location("bench_audit_calibration", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_audit_calibration"] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "calibration.json"
    bench.main(["--sims", "3", "--power-sims", "1", "--effects", "3.0", "--cohort-speakers",
                "30", "--speakers", "120", "--utts", "4", "--n-boot", "100", "--workers", "1",
                "--out", str(out)])
    data = json.loads(out.read_text())
    assert [m["method"] for m in data["methods"]] == list(bench.METHODS)
    for m in data["methods"]:
        assert m["n_sim"] == 3 and 0.0 <= m["null_fwer"] <= 1.0
        assert 0.0 <= m["null_fwer_naive"] <= 1.0
    assert {(p["method"], p["effect"], p["cohort_speakers"]) for p in data["power"]} == {
        (m, 3.0, 30) for m in bench.METHODS}
    assert all(p["n_sim"] == 1 and p["power"] in (0.0, 1.0) for p in data["power"])
    # a planted cohort three times worse, 30 of 120 speakers: the attribute finds it
    accent = next(p for p in data["power"] if p["method"] == "attribute:accent")
    assert accent["power"] == 1.0
