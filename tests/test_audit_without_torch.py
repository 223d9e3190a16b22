"""The audit and its metrics work on the base install: no torch, no other `[asr]` extra.

Each test runs Python in a subprocess whose import system refuses every optional dependency
(a ``sys.meta_path`` finder raising ``ModuleNotFoundError``), as on ``pip install fairstream``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _audit_fixture import write_fixed_input
from click.testing import CliRunner

from fairstream.cli import main

# top-level modules of the [asr] and [corpus] extras
BLOCKED = ("torch", "lhotse", "kaldi_native_fbank", "sentencepiece", "soundfile", "yaml",
           "espeakng_loader", "zipcodes", "torchaudio")

_PRELUDE = f"""
import importlib.abc, sys
BLOCKED = set({BLOCKED!r})

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""

_RUN_CLI = _PRELUDE + """
from fairstream.cli import main
try:
    main(args=sys.argv[1:], prog_name="fairstream")
    code = 0
except SystemExit as exc:
    code = exc.code
leaked = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
print("imported optional modules:", leaked, file=sys.stderr)
sys.exit(code if not leaked else 99)
"""


def _blocked(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return _blocked(_RUN_CLI, *args)


def test_the_blocker_blocks() -> None:
    r = _blocked(_PRELUDE + "import torch")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_import_audit_and_metrics_without_torch() -> None:
    r = _blocked(_PRELUDE + """
import fairstream, fairstream.audit, fairstream.audit.report, fairstream.audit.synthetic
import fairstream.metrics.wer, fairstream.metrics.bootstrap, fairstream.metrics.verification
from fairstream.audit import run_audit
leaked = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
assert not leaked, leaked
""")
    assert r.returncode == 0, r.stderr


def test_help_without_torch() -> None:
    for args in (["--help"], ["audit", "--help"]):
        r = _cli(*args)
        assert r.returncode == 0, r.stderr
        assert "Usage: fairstream" in r.stdout


def _numbers(report: Path) -> dict[str, object]:
    data = json.loads(report.read_text())
    data["provenance"].pop("timings_s")
    return data  # type: ignore[no-any-return]


def test_audit_cli_on_a_csv_gives_the_same_report_without_torch(tmp_path: Path) -> None:
    root = write_fixed_input(tmp_path / "in")
    args = ["audit", "--results", str(root / "results.csv"), "--corpus-dir", str(root),
            "--embeddings", str(root / "emb.npy"), "--embedding-ids", str(root / "emb_ids.txt"),
            "--n-boot", "100", "--no-progress", "--out"]
    r = _cli(*args, str(tmp_path / "blocked"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "report:" in r.stdout
    with_torch = CliRunner().invoke(main, [*args, str(tmp_path / "present")])
    assert with_torch.exit_code == 0, with_torch.output
    blocked = _numbers(tmp_path / "blocked" / "report.json")
    present = _numbers(tmp_path / "present" / "report.json")
    assert [m["method"] for m in blocked["methods"]] == [  # type: ignore[index]
        "attribute:accent", "attribute:gender", "attribute:age_band", "geo", "geodemo",
        "embedding"]
    assert blocked == present
    for name in ("methods.csv", "cohorts_geo.csv", "cohorts_embedding.csv"):
        assert (tmp_path / "blocked" / name).read_text() == \
            (tmp_path / "present" / name).read_text(), name


def test_fallback_embedding_names_the_extra(tmp_path: Path) -> None:
    root = write_fixed_input(tmp_path / "in")
    (root / "audio").mkdir()
    r = _cli("audit", "--results", str(root / "results.csv"), "--corpus-dir", str(root),
             "--methods", "embedding", "--n-boot", "0", "--no-progress",
             "--out", str(tmp_path / "o"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fallback fbank embedding" in r.stderr
    assert "pip install 'fairstream[asr]'" in r.stderr


def test_a_training_command_names_its_extra(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "lstm_transducer.yaml"
    r = _cli("train", "--config", str(recipe), "--corpus", str(tmp_path),
             "--out", str(tmp_path / "exp"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "this command needs the [asr] extra" in r.stderr
