"""The demo job end to end on the tiny corpus: every stage runs, a rerun resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from fairstream.cli import main


def test_demo_runs_every_stage_and_resumes(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "demo"
    shutil.copytree(tiny_corpus, out / "corpus")  # the corpus stage then reuses it
    args = ["demo", "--out", str(out), "--preset", "tiny", "--nproc", "1",
            "--budget-minutes", "0.05", "--speaker-steps", "2", "--n-boot", "20",
            "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    for name in ("exp/averaged.pt", "exp/lm.json", "results.parquet", "results_greedy.parquet",
                 "sv/final.pt",
                 "embeddings_speakers.parquet", "audit/report.html", "summary.md"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    accents = {row["accent"] for row in summary["wer_by_accent"]}
    assert "overall" in accents and len(accents) > 2
    assert all("greedy_wer_percent" in row for row in summary["wer_by_accent"])
    assert "fitted NgramLM(order=6" in first.output  # the recipe's beam search + LM ran
    assert "== speaker" in first.output

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "reusing the trained model" in again.output
    assert "reusing the speaker model" in again.output
    assert "reusing" in again.output and "results_greedy.parquet" in again.output
