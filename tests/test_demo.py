"""The demo job end to end on the tiny corpus: every stage runs, a rerun resumes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fairstream.cli import main
from fairstream.demo import DemoConfig, TrainingRecord, _train_overrides
from fairstream.errors import CorpusError


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
    text = summary["test_text"]
    overall = next(r for r in summary["wer_by_accent"] if r["accent"] == "overall")
    assert text["test_utterances"] == overall["utterances"]
    assert 0 <= text["seen_sentences"] <= text["test_utterances"]
    assert "test sentences also in the training transcripts" in first.output
    # the 3-second safety cap stopped training long before the recipe's 2,800 steps: said
    training = summary["training"]
    assert training["target_steps"] == 2800 and 0 < training["steps"] < 2800
    assert training["stop_reason"] == "budget" and training["stopped_early"]
    assert "WARNING: the wall-clock safety cap (schedule.budget_minutes=0.05)" in first.output
    assert training["warning"] in (out / "summary.md").read_text()

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "reusing the trained model" in again.output
    assert "reusing the speaker model" in again.output
    assert "reusing" in again.output and "results_greedy.parquet" in again.output


def test_demo_extends_its_corpus_with_an_audit_split_and_audits_it(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preset with an audit split: an older build without it is extended, not rebuilt; the
    audit split is decoded with the recipe's search, embedded and audited; the test split
    still gives the WER table."""
    import fairstream.data.presets as presets

    tiny = presets.get_preset("tiny")
    with_audit = dataclasses.replace(
        tiny, extra_splits=(presets.SplitSpec("audit", speakers=12, utterances_per_speaker=1),))
    monkeypatch.setattr(presets, "get_preset",
                        lambda name: with_audit if name == "tiny" else tiny)
    out = tmp_path / "demo"
    shutil.copytree(tiny_corpus, out / "corpus")
    args = ["demo", "--out", str(out), "--preset", "tiny", "--nproc", "1",
            "--budget-minutes", "0.05", "--speaker-steps", "2", "--n-boot", "20",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "reusing the corpus" not in result.output
    for name in ("results_audit.parquet", "embeddings_audit_speakers.parquet",
                 "audit/report.json"):
        assert (out / name).exists(), name
    assert "auditing the audit split (results_audit.parquet)" in result.output
    # the mitigation stage runs on a corpus with an audit split: EWC on the strongest bottom
    # cohort, or a named reason why there is none (12 audited speakers rarely give a cohort)
    assert "== mitigate" in result.output
    assert ("mitigation skipped: " in result.output) != ("EWC on " in result.output)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audited_split"] == "audit" and summary["audited"]["n_speakers"] == 12
    report = json.loads((out / "audit" / "report.json").read_text())
    assert report["overall"]["n_speakers"] == 12
    assert "Audited: the audit split, 12 speakers" in (out / "summary.md").read_text()
    # the test split (8 speakers) is still what the WER table reports
    overall = next(r for r in summary["wer_by_accent"] if r["accent"] == "overall")
    assert overall["speakers"] == 8
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "reusing the corpus" in again.output and "results_audit.parquet" in again.output
    # the mitigation stage itself, on a cohort named by hand (12 audited speakers are too
    # few for the audit to report one): EWC, the test split before and after, the audit again
    from fairstream.data.corpus import load_corpus
    from fairstream.demo import DemoConfig, _mitigate

    gender = str(load_corpus(out / "corpus").speakers.query("split == 'train'")["gender"]
                 .value_counts().index[0])
    (out / "audit" / "cohorts.json").write_text(json.dumps({"version": 1, "methods": [{
        "method": "attribute:gender", "bottom": gender, "evidence": {"p_value": 0.01},
        "cohorts": [{"label": g, "bottom": g == gender, "wer": 0.3, "n_speakers": 6,
                     "definition": {"kind": "attribute", "values": {"gender": g}}}
                    for g in ("female", "male")]}]}))
    lines: list[str] = []
    md = _mitigate(out, load_corpus(out / "corpus"), out / "exp" / "averaged.pt",
                   out / "audit", DemoConfig(out=out, mitigate_steps=2, n_boot=20,
                                             progress=False), lines.append)
    assert md is not None and f"attribute:gender={gender}" in md and "(mitigated)" in md
    page = (out / "audit" / "report.html").read_text()
    assert 'id="mitigation"' in page and "Audit again on the test speakers" in page
    for tag in ("before", "after"):
        assert (out / "mitigate" / f"audit_{tag}" / "report.html").exists()


def test_demo_steps_is_the_stopping_rule_and_a_full_run_has_no_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fairstream.demo as demo_module

    seen: list[DemoConfig] = []

    def fake_run_demo(config: DemoConfig, echo: Callable[[str], None]) -> None:
        seen.append(config)
        raise CorpusError("stopped here")

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--steps", "7",
                                    "--budget-minutes", "30"])
    assert res.exit_code != 0 and "stopped here" in res.output
    sets = _train_overrides(seen[0], tmp_path / "corpus")
    assert "schedule.max_steps=7" in sets and "schedule.budget_minutes=30.0" in sets
    assert not any("max_steps" in s for s in _train_overrides(DemoConfig(out=tmp_path),
                                                              tmp_path))  # the recipe's
    help_text = CliRunner().invoke(main, ["demo", "--help"]).output
    assert "--steps" in help_text and "safety cap" in help_text

    done = TrainingRecord(steps=2800, target_steps=2800, stop_reason="max_steps",
                          train_minutes=15.2, budget_minutes=60.0, processes=2)
    assert done.warning() is None and not done.stopped_early
    assert done.describe() == ("trained 2800 of 2800 steps in 15.2 min on 2 process(es) "
                               "(stopped: max_steps)")
    early = dataclasses.replace(done, steps=2158, stop_reason="budget")
    assert early.warning() is not None and "at step 2158 of 2800" in early.warning()
    assert early.as_dict()["stopped_early"] is True


def test_text_report_counts_seen_sentences_and_scores_heldout_slot_words(
        tmp_path: Path) -> None:
    import pandas as pd

    from fairstream.data.layout import write_heldout_slots
    from fairstream.demo import summarize_test_text

    class _Sup:
        def __init__(self, text: str) -> None:
            self.text = text

    class _Cut:
        def __init__(self, text: str) -> None:
            self.supervisions = [_Sup(text)]

    class _Corpus:  # what summarize_test_text reads of a Corpus
        root = tmp_path

        def cuts(self, split: str) -> list[_Cut]:
            assert split == "train"
            return [_Cut("Call Anna."), _Cut("play jazz")]

    refs = ["call anna", "call zoe now", "play jazz"]
    decoded = {
        "recipe": pd.DataFrame({"ref": refs, "hyp": ["call anna", "call joe now", "play jazz"]}),
        "greedy": pd.DataFrame({"ref": refs, "hyp": ["call anna", "call zoe now", "play"]}),
    }
    report = summarize_test_text(_Corpus(), decoded)  # type: ignore[arg-type]
    assert (report.test_utterances, report.seen_sentences, report.heldout_words) == (3, 2, 0)
    assert "2 of 3 (66.7 %)" in report.describe() and report.heldout_error_rate == {}

    write_heldout_slots(tmp_path, {"name": ["zoe"]})
    report = summarize_test_text(_Corpus(), decoded)  # type: ignore[arg-type]
    assert report.heldout_words == 1
    assert report.heldout_error_rate == {"recipe": 1.0, "greedy": 0.0}
    assert "held-out slot words: recipe 100.00 %, greedy 0.00 %" in report.describe()
    assert report.as_dict()["seen_share"] == pytest.approx(2 / 3)
