"""Mitigation: cohort definitions that travel, the EWC / L2-SP penalty, the Fisher file,
the paired before/after comparison, data mixing, and `fairstream mitigate` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fairstream.audit.cohorts import Cohort, assign_cohort, choose_cohort, load_cohorts
from fairstream.errors import CheckpointError, InputDataError
from fairstream.mitigation.compare import compare_results
from fairstream.mitigation.penalty import (
    AnchorPenalty,
    estimate_fisher,
    load_fisher,
    parameter_fingerprint,
    save_fisher,
)
from fairstream.training.loop import LossOutput

SPEAKERS = pd.DataFrame({
    "speaker_id": ["a", "b", "c", "d", "e"],
    "split": ["train"] * 5,
    "accent": ["x", "y", "x", "z", "x"],
    "gender": ["f", "m", "m", "f", "f"],
    "lat": [30.0, 40.0, 35.0, 50.0, 29.9],
    "lon": [-80.0, -90.0, -100.0, -70.0, -80.0],
    "zip": ["10001", "20002", "30003", "40004", "99999"],
})


def _cohort(method: str, label: str, definition: dict, **kw) -> Cohort:
    base = {"bottom": False, "wer": None, "n_speakers": 10, "evidence": {}}
    base.update(kw)
    return Cohort(method=method, label=label, definition=definition, **base)


# ------------------------------------------------------------------ cohort definitions

def test_attribute_and_intersection_definitions_apply_to_other_speakers() -> None:
    one = {"kind": "attribute", "values": {"accent": "x"}}
    both = {"kind": "attribute", "values": {"accent": "x", "gender": "f"}}
    assert assign_cohort(one, SPEAKERS).tolist() == [True, False, True, False, True]
    assert assign_cohort(both, SPEAKERS).tolist() == [True, False, False, False, True]
    with pytest.raises(InputDataError, match="'age_band'"):
        assign_cohort({"kind": "attribute", "values": {"age_band": "60+"}}, SPEAKERS)


def test_geo_box_is_half_open_and_unbounded_at_the_audited_edge() -> None:
    box = {"kind": "geo_box", "lat_col": "lat", "lon_col": "lon", "lat_min": None,
           "lat_max": 35.0, "lon_min": -85.0, "lon_max": None}
    # lat < 35 (35.0 itself is out), lon >= -85; no lower lat bound: 29.9 is in
    assert assign_cohort(box, SPEAKERS).tolist() == [True, False, False, False, True]


def test_zip_predicates_numeric_categorical_and_negated() -> None:
    zips = pd.DataFrame({"income": [10.0, 50.0, 20.0, 80.0], "urban": ["r", "u", "r", "u"]},
                        index=pd.Index(["10001", "20002", "30003", "40004"], name="zip"))
    low = {"kind": "zip_predicate", "zip_col": "zip", "predicate": "income <= 20",
           "negate": False}
    assert assign_cohort(low, SPEAKERS, zip_table=zips).tolist() == [True, False, True, False,
                                                                     False]
    rest = {**low, "negate": True}  # the rest: matched zips only (99999 is in neither)
    assert assign_cohort(rest, SPEAKERS, zip_table=zips).tolist() == [False, True, False, True,
                                                                      False]
    cat = {**low, "predicate": "urban in {u}"}
    assert assign_cohort(cat, SPEAKERS, zip_table=zips).tolist() == [False, True, False, True,
                                                                     False]
    with pytest.raises(InputDataError, match="zip table"):
        assign_cohort(low, SPEAKERS)


def test_centroid_definition_assigns_the_nearest_centre_after_the_same_normalization() -> None:
    d = {"kind": "centroid", "label": "cluster 1", "source": "given",
         "normalization": {"kind": "l2"}, "centroids": [[1.0, 0.0], [0.0, 1.0]],
         "centroid_labels": ["cluster 1", "cluster 2"]}
    emb = pd.DataFrame([[5.0, 1.0], [0.1, 3.0], [2.0, 1.9]], index=["a", "b", "c"])
    # d and e have no embedding: in no cohort
    assert assign_cohort(d, SPEAKERS, embeddings=emb).tolist() == [True, False, True, False,
                                                                   False]
    with pytest.raises(InputDataError, match="embeddings"):
        assign_cohort(d, SPEAKERS)


def test_choose_cohort_takes_the_strongest_corrected_evidence_or_the_named_one() -> None:
    weak = _cohort("geo", "region 1", {}, bottom=True, evidence={"p_value": 0.2,
                                                                  "wer_gap_ci_low": 1.0})
    strong = _cohort("attribute:accent", "x", {}, bottom=True,
                     evidence={"p_value": 0.01, "wer_gap_ci_low": 5.0})
    other = _cohort("attribute:accent", "y", {}, evidence={"p_value": 0.01})
    assert choose_cohort([weak, strong, other]) is strong
    assert choose_cohort([weak, strong, other], "attribute:accent=y") is other
    assert choose_cohort([weak, strong, other], "region 1") is weak
    with pytest.raises(InputDataError, match="not in the file.*attribute:accent=x"):
        choose_cohort([weak, strong], "nope")
    with pytest.raises(InputDataError, match="no method"):
        choose_cohort([other])


def test_audit_writes_cohorts_json_whose_definitions_reproduce_its_cohorts(tmp_path: Path
                                                                          ) -> None:
    from fairstream.audit import AuditConfig, run_audit
    from fairstream.audit.inputs import read_zip_demographics
    from fairstream.audit.synthetic import make_synthetic_audit

    d = make_synthetic_audit(n_speakers=240, n_accents=4, n_planted_accents=1,
                             accent_factor=2.2, geo_factor=2.0, rural_factor=1.5,
                             embedding_noise=0.3, seed=7)
    audit = run_audit(d.results, speakers=d.speakers, zip_demographics=d.zip_demographics,
                      embeddings=(np.asarray(d.embedding_ids), d.embeddings),
                      out_dir=tmp_path / "audit", config=AuditConfig(n_boot=50))
    cohorts = load_cohorts(tmp_path / "audit" / "cohorts.json")
    table = audit.stats.table.reset_index()
    emb = pd.DataFrame(d.embeddings, index=[str(i) for i in d.embedding_ids])
    emb = emb.groupby(level=0).mean()
    zips = read_zip_demographics(d.zip_demographics)
    kinds = set()
    for name, outcome in audit.outcomes.items():
        mine = [c for c in cohorts if c.method == name]
        assert mine, name
        for c in mine:  # the definition finds exactly the audited members of the cohort
            kinds.add(c.definition["kind"])
            g = outcome.partition.labels.index(c.label)
            members = outcome.partition.codes == g
            got = assign_cohort(c, table, zip_table=zips, embeddings=emb)
            assert got.tolist() == members.tolist(), (name, c.label)
    assert kinds == {"attribute", "geo_box", "zip_predicate", "centroid"}
    assert sum(c.bottom for c in cohorts) >= 3


# ------------------------------------------------------------------ the penalty

class _Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _objective(model: nn.Module, batch: torch.Tensor) -> LossOutput:
    return LossOutput(model(batch).pow(2).mean(), len(batch), {})


def test_anchor_penalty_is_ewc_formula_and_l2sp_with_unit_fisher() -> None:
    torch.manual_seed(0)
    m = _Lin()
    fisher = {n: torch.rand_like(p) for n, p in m.named_parameters()}
    ewc, l2sp = AnchorPenalty(0.7, fisher), AnchorPenalty(0.7)
    for hook in (ewc, l2sp):
        hook.on_train_start(m, None)  # type: ignore[arg-type]
        assert hook.extra_loss(m, None) == 0  # at the anchor
    anchor = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    want = sum(0.5 * 0.7 * (fisher[n] * (p - anchor[n]) ** 2).sum()
               for n, p in m.named_parameters())
    want_l2 = sum(0.5 * 0.7 * ((p - anchor[n]) ** 2).sum() for n, p in m.named_parameters())
    assert torch.allclose(ewc.extra_loss(m, None), want)
    assert torch.allclose(l2sp.extra_loss(m, None), want_l2)
    # resumable: the anchor travels in the hook state
    again = AnchorPenalty(0.7, fisher)
    again.load_state_dict(ewc.state_dict())
    assert torch.allclose(again.extra_loss(m, None), want)


def test_fisher_has_mean_one_and_its_file_refuses_other_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _Lin()
    batches = [torch.randn(4, 3) for _ in range(5)]
    f = estimate_fisher(m, _objective, batches, 5)
    total = sum(float(v.sum()) for v in f.values())
    assert total / sum(v.numel() for v in f.values()) == pytest.approx(1.0)
    # proportional to the mean squared batch gradient
    g2 = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for b in batches:
        m.zero_grad()
        _objective(m, b).loss.backward()
        for n, p in m.named_parameters():
            g2[n] += p.grad ** 2
    ratio = f["lin.weight"] / g2["lin.weight"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-5)
    path = save_fisher(tmp_path / "m.fisher.pt", f, parameter_fingerprint(m), {"n_batches": 5})
    assert set(load_fisher(path, m)) == {"lin.weight", "lin.bias"}
    with torch.no_grad():
        m.lin.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="other weights"):
        load_fisher(path, m)
    with pytest.raises(CheckpointError, match="another model"):
        load_fisher(path, nn.Sequential(nn.Linear(3, 3)))


# ------------------------------------------------------------------ the comparison

def _results(errors: dict[str, list[int]], words: int = 10) -> pd.DataFrame:
    rows = []
    for spk, errs in errors.items():
        for i, e in enumerate(errs):
            rows.append({"utt_id": f"{spk}-{i}", "speaker_id": spk, "n_ref_words": words,
                         "sub": e, "del": 0, "ins": 0})
    return pd.DataFrame(rows)


def test_compare_pairs_speakers_and_computes_every_statistic_by_hand() -> None:
    before = _results({"a": [5, 5], "b": [1, 1], "c": [2, 2], "d": [3, 3]})
    after = _results({"a": [2, 2], "b": [1, 1], "c": [3, 3], "d": [3, 3]})
    cohort_of = {"a": "bad", "b": "good", "c": "good", "d": "mid"}
    comp = compare_results(before, after, cohort_of, bottom="bad", n_boot=300, seed=1)
    s = comp.summary
    assert s["overall_before"] == pytest.approx(22 / 80)
    assert s["overall_after"] == pytest.approx(18 / 80)
    assert s["bottom_before"] == pytest.approx(0.5) and s["bottom_after"] == pytest.approx(0.2)
    wb, wa = np.array([0.5, 0.15, 0.3]), np.array([0.2, 0.2, 0.3])
    assert s["variance_before"] == pytest.approx(wb.var())
    assert s["variance_after"] == pytest.approx(wa.var())
    assert s["max_before"] == pytest.approx(0.5)
    rest_b, rest_a = 12 / 60, 14 / 60
    assert s["gap_pct_before"] == pytest.approx(100 * (0.5 / rest_b - 1))
    assert s["gap_pct_after"] == pytest.approx(100 * (0.2 / rest_a - 1))
    assert s["forgetting_max"] == pytest.approx(0.05) and s["forgetting_cohort"] == "good"
    lo, hi = s["overall_diff_ci"]
    assert lo <= s["overall_diff"] <= hi
    row = comp.cohorts.set_index("cohort").loc["bad"]
    assert row["mitigated"] and row["diff"] == pytest.approx(-0.3)
    # one speaker per cohort "bad": every replicate that draws it sees the same -0.3
    assert row["diff_ci_low"] == pytest.approx(-0.3) and row["diff_ci_high"] == pytest.approx(-0.3)
    md = comp.markdown()
    assert "bad (mitigated)" in md and "forgetting" in md


def test_compare_of_identical_tables_is_zero_with_a_zero_interval() -> None:
    t = _results({"a": [1, 2], "b": [3, 0], "c": [1, 1]})
    comp = compare_results(t, t.copy(), {"a": "x", "b": "y", "c": "y"}, bottom="x", n_boot=50)
    assert comp.summary["overall_diff"] == 0.0
    assert comp.summary["overall_diff_ci"] == [0.0, 0.0]
    assert comp.summary["forgetting_max"] == 0.0


def test_compare_errors_name_the_problem() -> None:
    t = _results({"a": [1], "b": [2]})
    with pytest.raises(InputDataError, match="share no utterance"):
        compare_results(t, t.assign(utt_id=t["utt_id"] + "x"), {"a": "x"})
    with pytest.raises(InputDataError, match="n_ref_words of utterance 'a-0'"):
        compare_results(t, t.assign(n_ref_words=[9, 10]), {"a": "x"})
    with pytest.raises(InputDataError, match="cohort 'zz' has no test speaker"):
        compare_results(t, t, {"a": "x", "b": "y"}, bottom="zz")
    with pytest.raises(InputDataError, match="lacks the column"):
        compare_results(t.drop(columns="ins"), t, {"a": "x"})


# ------------------------------------------------------------------ data and end to end

def test_general_share_mixes_that_share_of_other_cuts(tmp_path: Path) -> None:
    from audio_factory import make_cuts

    from fairstream.training.selection import SelectConfig, select_cuts

    cuts = make_cuts(tmp_path / "audio", n=16)
    spk = sorted({c.supervisions[0].speaker for c in cuts})
    table = pd.DataFrame({"speaker_id": spk, "split": "train"})
    one = spk[0]
    n_sel = sum(c.supervisions[0].speaker == one for c in cuts)
    mixed = select_cuts(cuts, SelectConfig(where=f"speaker_id == '{one}'", general_share=0.5),
                        table)
    mine = sum(c.supervisions[0].speaker == one for c in mixed)
    assert mine == n_sel and len(mixed) == min(len(cuts), 2 * n_sel)
    again = select_cuts(cuts, SelectConfig(where=f"speaker_id == '{one}'", general_share=0.5),
                        table)
    assert [c.id for c in again] == [c.id for c in mixed]  # the same draw every run
    with pytest.raises(InputDataError, match="general_share"):
        SelectConfig(where="x", general_share=0.5, oversample=2)
    with pytest.raises(InputDataError, match="general_share"):
        SelectConfig(where="x", general_share=1.0)


def test_mitigate_end_to_end_on_the_tiny_corpus(tiny_corpus: Path, tmp_path_factory,
                                                tmp_path: Path) -> None:
    from _tiny_asr import tiny_trained_model
    from click.testing import CliRunner

    from fairstream.cli import main

    exp = tiny_trained_model(tiny_corpus, tmp_path_factory)
    speakers = pd.read_csv(tiny_corpus / "speakers.csv")
    accent = speakers.loc[speakers["split"] == "train", "accent"].value_counts().index[0]
    doc = {"version": 1, "methods": [{
        "method": "attribute:accent", "bottom": accent,
        "evidence": {"p_value": 0.01, "wer_gap_ci_low": 3.0},
        "cohorts": [{"label": str(a), "bottom": a == accent, "wer": 0.3, "n_speakers": 3,
                     "definition": {"kind": "attribute", "values": {"accent": str(a)}}}
                    for a in sorted(speakers["accent"].unique())]}]}
    cohorts = tmp_path / "cohorts.json"
    cohorts.write_text(json.dumps(doc))
    runner = CliRunner()
    base = ["mitigate", "--checkpoint", str(exp / "averaged.pt"), "--corpus", str(tiny_corpus),
            "--cohorts", str(cohorts), "--steps", "2", "--bootstrap", "20", "--no-progress",
            "--fisher-batches", "2"]
    report = tmp_path / "report.html"
    report.write_text('<html><body><h2 id="methods">M</h2>\n<h2 id="details">D</h2></body>')
    r = runner.invoke(main, [*base, "--method", "ewc", "--out", str(tmp_path / "ewc"),
                             "--report", str(report)])
    assert r.exit_code == 0, r.output
    page = report.read_text()
    assert page.count('id="mitigation"') == 1 and "data:image/png;base64," in page
    assert page.index('id="mitigation"') < page.index('id="details"')
    r = runner.invoke(main, [*base, "--method", "ewc", "--out", str(tmp_path / "ewc"),
                             "--report", str(report)])  # resumed: done, section replaced
    assert r.exit_code == 0, r.output
    assert report.read_text().count('id="mitigation"') == 1
    # the same directory with other settings is refused, not silently resumed
    r = runner.invoke(main, [*base, "--method", "ewc", "--lam", "3", "--out",
                             str(tmp_path / "ewc")])
    assert r.exit_code != 0 and "holds a mitigation run with other settings (config" in r.output
    r = runner.invoke(main, [*base, "--method", "cohort-input", "--out", str(tmp_path / "ci")])
    assert r.exit_code == 0, r.output
    from fairstream.mitigation.cohort_input import load_offsets

    offsets, labels, name = load_offsets(tmp_path / "ci" / "cohort_input.pt")
    assert labels == ["rest", "cohort"] and name == f"attribute:accent={accent}"
    assert offsets.shape == (2, 80) and np.abs(offsets).sum() > 0  # trained, not left at zero
    ci = pd.read_parquet(tmp_path / "ci" / "results_test.parquet")
    before = pd.read_parquet(tmp_path / "before_test.parquet")
    assert sorted(ci["utt_id"]) == sorted(before["utt_id"])
    assert "(mitigated)" in r.output
    out = json.loads((tmp_path / "ewc" / "comparison.json").read_text())
    assert out["bottom"] == accent and out["summary"]["n_speakers"] > 0
    assert (exp / "averaged.pt.fisher.pt").exists()
    assert (tmp_path / "ewc" / "comparison.png").stat().st_size > 0
    # a cohort with too few training speakers is refused, saying how many matched
    doc["methods"][0]["cohorts"].append({"label": "nobody", "bottom": False, "wer": 0.1,
                                         "n_speakers": 3, "definition": {
                                             "kind": "attribute", "values": {"accent": "zz"}}})
    cohorts.write_text(json.dumps(doc))
    r = runner.invoke(main, [*base, "--cohort", "attribute:accent=nobody", "--out",
                             str(tmp_path / "none")])
    assert r.exit_code != 0 and "matches 0 of the" in r.output
    # compare: the CLI on the two result tables
    r = runner.invoke(main, ["compare", str(tmp_path / "before_test.parquet"),
                             str(tmp_path / "ewc" / "results_test.parquet"), "--cohort", accent,
                             "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    assert "overall WER" in r.output
    # the same with the cohorts of cohorts.json mapped onto the results' speakers
    r = runner.invoke(main, ["compare", str(tmp_path / "before_test.parquet"),
                             str(tmp_path / "ewc" / "results_test.parquet"), "--cohorts",
                             str(cohorts), "--cohort", f"attribute:accent={accent}",
                             "--bootstrap", "20", "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert f"{accent} (mitigated)" in r.output
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["bottom"] == accent


# ------------------------------------------------------------------ cohort input

def test_cohort_input_adds_its_offset_to_valid_frames_and_equals_a_cohort_cmvn() -> None:
    from fairstream.features.fbank import Cmvn
    from fairstream.mitigation.cohort_input import CohortInputObjective, cohort_cmvn
    from fairstream.training.data import Batch

    seen = {}

    def base(model, batch):  # records what the model would see
        seen["x"] = batch.features
        return LossOutput(batch.features.sum(), batch.size, {})

    offsets = nn.Parameter(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    feats = torch.zeros(2, 4, 3)
    batch = Batch(features=feats, feature_lens=torch.tensor([4, 2]),
                  tokens=torch.zeros(2, 1, dtype=torch.long), token_lens=torch.tensor([1, 1]),
                  cut_ids=["u1", "u2"], speaker_ids=["rest", "member"], texts=["a", "b"])
    out = CohortInputObjective(base, offsets, {"member": 1})(None, batch)
    x = seen["x"]
    assert torch.equal(x[0], torch.zeros(4, 3))  # the rest's offset starts at zero
    assert torch.equal(x[1, :2], torch.tensor([[1.0, 2.0, 3.0]] * 2))
    assert torch.equal(x[1, 2:], torch.zeros(2, 3))  # padding untouched
    out.loss.backward()
    assert torch.equal(offsets.grad[1], torch.tensor([2.0, 2.0, 2.0]))  # two valid frames
    cmvn = Cmvn(mean=np.array([1.0, -2.0, 0.5]), std=np.array([2.0, 0.5, 1.0]))
    raw = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    off = np.array([0.3, -1.0, 2.0], dtype=np.float32)
    shifted = cohort_cmvn(cmvn, off)
    np.testing.assert_allclose((raw - shifted.mean) / shifted.std,
                               (raw - cmvn.mean) / cmvn.std + off, rtol=1e-5, atol=1e-5)
