"""End to end: run_audit, the report files, privacy, recovery, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fairstream.audit import AuditConfig, EmbeddingConfig, PrivacyConfig, run_audit
from fairstream.audit.synthetic import make_synthetic_audit
from fairstream.cli import main
from fairstream.errors import InputDataError


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus-like directory: speakers.csv, zip_demographics.csv, corpus.json with planted."""
    d = make_synthetic_audit(n_speakers=240, n_accents=4, n_planted_accents=1, accent_factor=2.2,
                             geo_factor=1.0, rural_factor=1.0, embedding_noise=0.3, seed=7)
    root = tmp_path_factory.mktemp("corpus")
    d.speakers.to_csv(root / "speakers.csv", index=False)
    d.zip_demographics.to_csv(root / "zip_demographics.csv", index=False)
    (root / "corpus.json").write_text(json.dumps({
        "format": "fairstream-corpus", "version": 1,
        "planted": {"under_represented_accents": d.planted["under_represented_accents"]},
    }))
    res = d.results.copy()
    res["duration"] = 2.0
    res.to_parquet(root / "results.parquet")
    np.save(root / "emb.npy", d.embeddings)
    (root / "emb_ids.txt").write_text("\n".join(d.embedding_ids) + "\n")
    return root


@pytest.fixture(scope="module")
def audit_result(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    return run_audit(
        corpus_dir / "results.parquet", embeddings=corpus_dir / "emb.npy",
        embedding_ids=corpus_dir / "emb_ids.txt", corpus_dir=corpus_dir,
        methods="attribute:accent,attribute:accent+gender,geo,geodemo,embedding", out_dir=out,
        config=AuditConfig(n_boot=200),
    )


def test_methods_table_and_recovery(audit_result) -> None:
    m = audit_result.methods.set_index("method")
    assert list(m.index) == ["attribute:accent", "attribute:accent+gender", "geo", "geodemo",
                             "embedding"]
    planted = audit_result.provenance["planted"]["under_represented_accents"][0]
    assert m.loc["attribute:accent", "bottom_cohort"] == planted
    assert m.loc["attribute:accent", "precision"] == 1.0
    assert m.loc["attribute:accent", "recall"] == 1.0
    assert m.loc["embedding", "precision"] == 1.0 and m.loc["embedding", "recall"] == 1.0
    assert m.loc["embedding", "ari_accent"] > 0.9
    assert m.loc["attribute:accent", "wer_gap_ci_low"] > 0
    # geo: nothing planted, so no split and no bottom cohort
    assert m.loc["geo", "bottom_cohort"].startswith("(none")
    # the definitions hold for the reported numbers
    row = m.loc["embedding"]
    assert row["wer_gap_pct"] == pytest.approx((row["wer_bottom"] / row["wer_rest"] - 1) * 100)
    stats = audit_result.stats
    share = 100 * row["n_speakers_bottom"] / stats.n_speakers
    assert row["bottom_share_speakers_pct"] == pytest.approx(share)


def test_report_files_and_no_speaker_ids(audit_result, corpus_dir: Path) -> None:
    out = audit_result.out_dir
    for name in ["report.html", "report.json", "methods.csv", "cohorts_attribute_accent.csv",
                 "cohorts_geo.csv", "cohorts_embedding.csv", "exclusions.csv",
                 "geodemographic_candidates.csv", "geo_split_tests.csv"]:
        assert (out / name).exists(), name
    assert not (out / "speaker_cohorts.csv").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert "WER gap (%) = (WER_bottom / WER_rest − 1) × 100" in html
    assert "http://" not in html and "https://" not in html  # opens offline
    data = json.loads((out / "report.json").read_text())
    assert data["format"] == "fairstream-audit"
    assert data["provenance"]["results"]["sha256"]
    speakers = pd.read_csv(corpus_dir / "speakers.csv")["speaker_id"]
    everything = html + json.dumps(data) + "".join(p.read_text() for p in out.glob("*.csv"))
    assert not any(s in everything for s in speakers)


def test_bad_metadata_is_counted_in_the_report(corpus_dir: Path, tmp_path: Path) -> None:
    res = pd.read_parquet(corpus_dir / "results.parquet")
    extra = res.iloc[:3].copy()
    extra["utt_id"] = ["x1", "x2", "x3"]
    extra["speaker_id"] = "ghost"
    res = pd.concat([res, extra], ignore_index=True)
    res.loc[0, "sub"] = np.nan
    spk = pd.read_csv(corpus_dir / "speakers.csv", dtype={"zip": str})
    spk.loc[1, "lat"] = np.nan
    spk.loc[2, "zip"] = "99999"
    r = run_audit(res, speakers=spk, zip_demographics=corpus_dir / "zip_demographics.csv",
                  methods="attribute:accent,geo,geodemo", out_dir=tmp_path,
                  config=AuditConfig(n_boot=50, privacy=PrivacyConfig(min_cohort_speakers=1)))
    reasons = {x.reason: x.count for x in r.exclusions}
    assert reasons["error counts missing, negative or not integers"] == 1
    # the ghost speaker has no metadata: kept, explicit unknown cohort, and no coordinates
    assert reasons["missing (NaN) latitude or longitude"] == 2
    assert reasons["zip code not in the demographics table"] == 1
    assert reasons["speaker has no zip code"] == 1
    acc = r.cohort_tables["attribute:accent"].set_index("group")
    assert acc.loc["unknown", "n_speakers"] == 1 and acc.loc["unknown", "n_utterances"] == 3
    assert any("no row in the speaker table" in n for n in r.notes)
    ex = pd.read_csv(tmp_path / "exclusions.csv")
    assert ex["count"].sum() == sum(reasons.values())
    assert "examples" not in ex.columns
    html = (tmp_path / "report.html").read_text()
    assert "zip code not in the demographics table" in html and "ghost" not in html


def test_include_speaker_ids_writes_assignments(corpus_dir: Path, tmp_path: Path) -> None:
    r = run_audit(corpus_dir / "results.parquet", corpus_dir=corpus_dir, methods="geodemo",
                  out_dir=tmp_path, config=AuditConfig(
                      n_boot=20, privacy=PrivacyConfig(include_speaker_ids=True)))
    assign = pd.read_csv(tmp_path / "speaker_cohorts.csv")
    assert len(assign) == r.stats.n_speakers and "geodemographic" in assign.columns


def test_small_bottom_cohort_is_suppressed(tmp_path: Path) -> None:
    d = make_synthetic_audit(n_speakers=60, n_accents=2, n_planted_accents=1, seed=1)
    spk = d.speakers.copy()
    spk.loc[:4, "accent"] = "rare"  # 5 speakers, made worse below
    res = d.results.copy()
    rare = res["speaker_id"].isin(spk.loc[:4, "speaker_id"])
    res.loc[rare, "sub"] = res.loc[rare, "n_ref_words"]
    res.loc[rare, "hits"] = 0
    res.loc[rare, "del"] = 0
    r = run_audit(res, speakers=spk, methods="attribute:accent", config=AuditConfig(n_boot=20))
    tab = r.cohort_tables["attribute:accent"]
    assert "rare" not in set(tab["group"])
    assert (tab["status"] == "suppressed").sum() == 1
    assert r.methods.loc[0, "bottom_cohort"] != "rare"


def test_unknown_method_and_missing_inputs_are_explained(corpus_dir: Path) -> None:
    with pytest.raises(InputDataError, match="unknown audit method 'kmeans'"):
        run_audit(corpus_dir / "results.parquet", methods="kmeans")
    with pytest.raises(InputDataError, match="geodemo needs a zip demographics table"):
        run_audit(corpus_dir / "results.parquet", speakers=corpus_dir / "speakers.csv",
                  methods="geodemo")
    with pytest.raises(InputDataError, match="embedding needs --embeddings"):
        run_audit(corpus_dir / "results.parquet", speakers=corpus_dir / "speakers.csv",
                  methods="embedding", config=AuditConfig(n_boot=0))


def test_cli_audit_end_to_end(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, [
        "audit", "--results", str(corpus_dir / "results.parquet"), "--corpus-dir", str(corpus_dir),
        "--methods", "attribute:accent,geodemo", "--n-boot", "50", "--out", str(out),
        "--no-progress",
    ])
    assert r.exit_code == 0, r.output
    assert "attribute:accent" in r.output and "report:" in r.output
    assert (out / "report.html").exists()


def test_cli_reports_bad_input_by_name(corpus_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"utt_id": ["a"], "spk": ["s"]}).to_csv(bad, index=False)
    r = CliRunner().invoke(main, ["audit", "--results", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0
    assert "['speaker_id']" in r.output
    r = CliRunner().invoke(main, ["audit", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "exactly one of --results" in r.output


def test_cli_help_teaches() -> None:
    r = CliRunner().invoke(main, ["audit", "--help"])
    assert r.exit_code == 0
    for text in ("--methods", "attribute:<col>", "WER gap (%)", "speaker-level bootstrap",
                 "--kaldi-text", "--trn-ref", "--include-speaker-ids"):
        assert text in r.output, text


def test_on_the_tiny_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    """The corpus' own speakers.csv, zip_demographics.csv, corpus.json planted cohorts and
    audio (fallback embedding), with a results table that serves the planted accents worse."""
    root = Path(tiny_corpus)
    spk = pd.read_csv(root / "speakers.csv")
    planted = json.loads((root / "corpus.json").read_text())["planted"]["under_represented_accents"]
    rng = np.random.default_rng(0)
    rows = []
    for s, acc in zip(spk["speaker_id"], spk["accent"]):
        p = 0.4 if acc in planted else 0.05
        for j in range(4):
            sub = int(rng.binomial(10, p))
            rows.append({"utt_id": f"{s}_{j}", "speaker_id": s, "sub": sub, "del": 0, "ins": 0,
                         "hits": 10 - sub})
    r = run_audit(
        pd.DataFrame(rows), corpus_dir=root, out_dir=tmp_path,
        methods="attribute:accent,geo,geodemo,embedding",
        config=AuditConfig(n_boot=100, privacy=PrivacyConfig(min_cohort_speakers=2),
                           embedding=EmbeddingConfig(k_range=(2, 4))),
    )
    assert r.overall["n_speakers"] == len(spk)
    m = r.methods.set_index("method")
    assert m.loc["attribute:accent", "bottom_cohort"] in planted
    assert m.loc["attribute:accent", "precision"] == 1.0
    assert r.outcomes["embedding"].detail.source.startswith("fallback")
    assert np.isfinite(m.loc["embedding", "ari_accent"])
    assert (tmp_path / "report.html").exists()


def test_methods_without_enough_speakers_are_reported_not_fatal(tmp_path: Path) -> None:
    """On 8 speakers no geodemographic side or k-means cluster reaches 10 speakers: the audit
    still runs the other methods and says why those two are missing."""
    from fairstream.audit.synthetic import make_synthetic_audit

    d = make_synthetic_audit(n_speakers=8, utts_per_speaker=5, seed=3)
    out = run_audit(d.results, speakers=d.speakers, zip_demographics=d.zip_demographics,
                    embeddings=(d.embedding_ids, d.embeddings),
                    methods="attribute:accent,geodemo,embedding",
                    config=AuditConfig(n_boot=20))
    assert set(out.methods["method"]) == {"attribute:accent"}
    assert any(n.startswith("geodemo not reported") for n in out.notes)
    assert any(n.startswith("embedding not reported") for n in out.notes)
