"""Long fuzzing run: every input door of fairstream with the ``long`` Hypothesis profile.

Runs each ``tests/test_fuzz_<door>.py`` in its own pytest process with
``FAIRSTREAM_FUZZ_PROFILE=long`` (2,000 random examples per test unless ``--examples``), and
reads Hypothesis's statistics: examples run, failing tests, and the share of inputs that parsed
(the rest were refused with a fairstream error naming the file). A failure means a reader
raised something other than a ``FairstreamError``, named no file, or lost rows; pytest prints the
shrunk input, and ``--keep-logs`` keeps the output.

Usage: ``nice -n 10 .venv/bin/python benchmarks/fuzz.py [--examples N] [--doors kaldi trn]``
Writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fairstream._io import atomic_write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_TEST = re.compile(r"^(tests/test_fuzz_\w+\.py::\w+):$")
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
_EVENT = re.compile(r"\* ([\d.]+)%, (parsed|refused \((\w+)\))")


def doors() -> list[str]:
    """Door names: the ``<door>`` of every ``tests/test_fuzz_<door>.py``."""
    files = (ROOT / "tests").glob("test_fuzz_*.py")
    return sorted(p.stem.removeprefix("test_fuzz_") for p in files)


# Any: JSON values of mixed types (counts, shares, flags)
def parse_statistics(output: str) -> dict[str, dict[str, Any]]:
    """Per test: examples run (passing + failing over all phases) and event shares."""
    tests: dict[str, dict[str, Any]] = {}  # Any: as above
    current: dict[str, Any] | None = None  # Any: as above
    for line in output.splitlines():
        line = line.strip()
        m = _TEST.match(line)
        if m:
            current = tests.setdefault(m.group(1), {"examples": 0, "failing_examples": 0,
                                                    "outcomes": {}})
            continue
        if current is None:
            continue
        m = _CASES.search(line)
        if m:
            current["examples"] += int(m.group(1)) + int(m.group(2))
            current["failing_examples"] += int(m.group(2))
            continue
        m = _EVENT.search(line)
        if m:
            current["outcomes"][m.group(3) or m.group(2)] = float(m.group(1)) / 100
    return tests


# Any: JSON values of mixed types
def run_door(door: str, examples: int | None, timeout: float) -> dict[str, Any]:
    """Run one door's fuzz tests in a pytest process; its statistics and timing."""
    env = dict(os.environ, FAIRSTREAM_FUZZ_PROFILE="long", OMP_NUM_THREADS="1")
    if examples:
        env["FAIRSTREAM_FUZZ_EXAMPLES"] = str(examples)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "--hypothesis-show-statistics", f"tests/test_fuzz_{door}.py"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        output, timed_out = proc.stdout + proc.stderr, False
        failed = re.search(r"(\d+) failed", output)
        n_failed = int(failed.group(1)) if failed else 0
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        output = out.decode(errors="replace") if isinstance(out, bytes) else out
        timed_out, n_failed = True, 0
    seconds = time.perf_counter() - t0
    tests = parse_statistics(output)
    return {
        "door": door,
        "tests": len(tests),
        "examples": sum(t["examples"] for t in tests.values()),
        "failed_tests": n_failed,
        "timed_out": timed_out,
        "seconds": round(seconds, 1),
        "by_test": tests,
        "output_tail": output.strip().splitlines()[-3:] if (n_failed or timed_out) else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=None,
                        help="examples per test (default: the long profile's 2,000)")
    parser.add_argument("--doors", nargs="*", default=None, help=f"subset of {doors()}")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per door")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = parser.parse_args()

    rows = []
    print(f"{'door':<12} {'tests':>5} {'examples':>9} {'failures':>8} {'seconds':>8}")
    for door in args.doors or doors():
        row = run_door(door, args.examples, args.timeout)
        rows.append(row)
        note = " (timed out)" if row["timed_out"] else ""
        print(f"{door:<12} {row['tests']:>5} {row['examples']:>9} {row['failed_tests']:>8} "
              f"{row['seconds']:>8}{note}", flush=True)
    total = {"examples": sum(r["examples"] for r in rows),
             "failed_tests": sum(r["failed_tests"] for r in rows),
             "seconds": round(sum(r["seconds"] for r in rows), 1)}
    print(f"{'total':<12} {'':>5} {total['examples']:>9} {total['failed_tests']:>8} "
          f"{total['seconds']:>8}")
    result = {
        "profile": "long",
        "examples_per_test": args.examples or 2000,
        "doors": rows,
        "total": total,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
