"""The `fairstream sv` commands end to end on the tiny corpus: train, trials, embed, eval.

Also the evaluation's bad-input paths (unknown utterance, mismatched embedding dimension,
missing group column) and AS-norm.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.data.trials import Trial, read_trials
from fairstream.errors import InputDataError
from fairstream.sv.embed import read_embeddings, speakers_path
from fairstream.sv.evaluate import SvEvalConfig, evaluate_sv
from fairstream.sv.scoring import as_norm_stats, index_trials, score_trials
from fairstream.sv.train import load_extractor


@pytest.fixture(scope="module")
def sv_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("sv")
    runner = CliRunner()
    small = ["--set", "model.channels=32", "--set", "data.speakers_per_batch=8",
             "--set", "data.crop_frames=80", "--set", "schedule.log_interval=2",
             "--threads", "1", "--no-progress"]
    for name, extra in (("base", []), ("arw", ["--arw", "--set", "arw.n_clusters=2"])):
        r = runner.invoke(main, ["sv", "train", "--corpus", str(tiny_corpus),
                                 "--out", str(out / name), "--max-steps", "6", *small, *extra])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["sv", "trials", "--corpus", str(tiny_corpus),
                             "--out", str(out / "trials.txt"), "--targets", "5",
                             "--same-gender", "5", "--same-accent", "5", "--random", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["sv", "embed", "--checkpoint", str(out / "base" / "final.pt"),
                             "--corpus", str(tiny_corpus), "--split", "test", "--split", "train",
                             "--out", str(out / "emb.parquet"), "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    torch.set_num_threads(before)
    return out


def test_arw_run_records_adversary_state(sv_run: Path) -> None:
    records = [json.loads(x) for x in (sv_run / "arw" / "metrics.jsonl").read_text().splitlines()]
    assert any("lambda_max" in r for r in records)
    base = [json.loads(x) for x in (sv_run / "base" / "metrics.jsonl").read_text().splitlines()]
    assert not any("lambda_max" in r for r in base)
    newest = max((sv_run / "arw" / "checkpoints").iterdir(), key=lambda p: p.name)
    ck = torch.load(newest, weights_only=True)
    hooks = ck["hooks"][0] if isinstance(ck["hooks"], list) else ck["hooks"]
    state = hooks.get("ArwHook", hooks)
    assert state["steps"] == 6
    assert state["clusters"]["centroids"].shape[0] == 2  # --set arw.n_clusters=2 kept with --arw


def test_embeddings_tables(sv_run: Path, tiny_corpus: Path) -> None:
    table, emb = read_embeddings(sv_run / "emb.parquet")
    assert emb.shape[1] == 192
    assert {"path", "speaker_id", "split", "gender", "accent"} <= set(table.columns)
    assert set(table["split"]) == {"test", "train"}
    assert all((tiny_corpus / "audio" / p).is_file() for p in table["path"])
    spk = pd.read_parquet(speakers_path(sv_run / "emb.parquet"))
    assert len(spk) == table["speaker_id"].nunique()
    assert (spk["n_utterances"] > 0).all()
    assert load_extractor(sv_run / "arw" / "final.pt").model.embedding_dim == 192


def test_eval_command_writes_report(sv_run: Path) -> None:
    out = sv_run / "eval"
    r = CliRunner().invoke(main, ["sv", "eval", "--trials", str(sv_run / "trials.txt"),
                                  "--embeddings", str(sv_run / "emb.parquet"),
                                  "--group-by", "gender", "--n-boot", "50",
                                  "--min-group-speakers", "2", "--snorm",
                                  "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "minDCF(P_target=0.01, Kaldi-normalized)" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scoring"].startswith("cosine + AS-norm")
    assert [d["p_target"] for d in metrics["overall"]["min_dcf"]] == [0.01, 0.05]
    assert "Kaldi" in metrics["overall"]["min_dcf"][0]["normalization"]
    assert set(metrics["groups"]["gender"]["by_group"]) == {"female", "male"}
    for name in ("report.md", "det.png", "eer_by_gender.png", "groups_gender.csv", "scores.txt"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "FDR" in report and "P_target=0.05" in report


def test_eval_rejects_unknown_utterance_and_bad_column(sv_run: Path, tmp_path: Path) -> None:
    trials = read_trials(sv_run / "trials.txt")
    bad = tmp_path / "bad.txt"
    missing = "1 test/nobody/x.flac test/nobody/y.flac\n"
    bad.write_text("\n".join(t.to_line() for t in trials[:3]) + "\n" + missing)
    r = CliRunner().invoke(main, ["sv", "eval", "--trials", str(bad),
                                  "--embeddings", str(sv_run / "emb.parquet"),
                                  "--n-boot", "0", "--out", str(tmp_path / "e")])
    assert r.exit_code != 0 and "test/nobody/x.flac" in r.output
    table, emb = read_embeddings(sv_run / "emb.parquet")
    with pytest.raises(InputDataError, match="no such column"):
        evaluate_sv(trials, table, emb, config=SvEvalConfig(group_by=("shoe_size",), n_boot=0))


def test_all_target_list_is_undefined(sv_run: Path) -> None:
    table, emb = read_embeddings(sv_run / "emb.parquet")
    targets = [t for t in read_trials(sv_run / "trials.txt") if t.label == 1]
    with pytest.raises(InputDataError, match="undefined: the trial list has no non-target trials"):
        evaluate_sv(targets, table, emb, config=SvEvalConfig(group_by=(), n_boot=0))


def test_scoring_dimension_mismatch_and_as_norm() -> None:
    emb = np.eye(4, dtype=np.float32)
    index = index_trials([Trial(1, "a", "a"), Trial(0, "a", "b")], ["a", "b", "c", "d"])
    assert score_trials(emb, index).tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(InputDataError, match="embedding dimensions differ: 4 .* vs 3"):
        as_norm_stats(emb, np.ones((5, 3), np.float32))
    cohort = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], np.float32)
    mu, sd = as_norm_stats(emb, cohort, top_k=2)
    z = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
    top = np.sort(emb @ z.T, axis=1)[:, -2:]
    np.testing.assert_allclose(mu, top.mean(1), rtol=1e-6)
    np.testing.assert_allclose(sd, np.maximum(top.std(1), 1e-6), rtol=1e-6)


def test_read_embeddings_names_bad_rows(tmp_path: Path) -> None:
    df = pd.DataFrame({"path": ["a", "b"], "speaker_id": ["s", "t"],
                       "embedding": [np.ones(3, np.float32), np.ones(4, np.float32)]})
    df.to_parquet(tmp_path / "e.parquet")
    with pytest.raises(InputDataError, match="'b' has dimension 4, the first row 3"):
        read_embeddings(tmp_path / "e.parquet")
    df["embedding"] = [np.ones(3, np.float32), np.array([1, np.nan, 0], np.float32)]
    df.to_parquet(tmp_path / "e.parquet")
    with pytest.raises(InputDataError, match="'b' has non-finite values"):
        read_embeddings(tmp_path / "e.parquet")


def test_utterance_paths_do_not_depend_on_the_working_directory(
    tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairstream.data.corpus import load_corpus
    from fairstream.sv.utterances import utterance_table

    absolute = load_corpus(tiny_corpus)
    table = utterance_table(absolute.cuts("test"), absolute.root, absolute.speakers)
    expected = table["path"].tolist()
    monkeypatch.chdir(tiny_corpus.parent)
    relative = load_corpus(tiny_corpus.name)
    got = utterance_table(relative.cuts("test"), relative.root, relative.speakers)["path"].tolist()
    assert got == expected
    assert all(p.startswith("test/") for p in got)


def test_compare_command_on_identical_systems(sv_run: Path) -> None:
    emb = str(sv_run / "emb.parquet")
    r = CliRunner().invoke(main, ["sv", "compare", "--trials", str(sv_run / "trials.txt"),
                                  "--embeddings", emb, "--embeddings", emb, "--names", "a,b",
                                  "--group-by", "gender", "--n-boot", "20",
                                  "--min-group-speakers", "2", "--out", str(sv_run / "cmp"),
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(sv_run / "cmp" / "comparison.csv")
    assert (rows["change"].abs() < 1e-9).all()
    eer_row = rows[rows["metric"] == "EER (%)"].iloc[0]
    assert eer_row["paper_relative_change"] == pytest.approx(-0.076)
    assert "paired" in (sv_run / "cmp" / "comparison.md").read_text()
    assert (sv_run / "cmp" / "det.png").stat().st_size > 0
