"""Shared pieces of the fuzz tests (``tests/test_fuzz_*.py``): Hypothesis profiles, input
strategies and the error contract every reader is held to.

Profiles (selected with ``FAIRSTREAM_FUZZ_PROFILE``):

* ``ci`` (default): 25 examples per test, derandomized, so CI runs the same inputs every time;
* ``long``: 2,000 random examples per test (``benchmarks/fuzz.py`` runs it).

``FAIRSTREAM_FUZZ_EXAMPLES=N`` overrides the number of examples of the selected profile. The
profiles are applied per test (``@FUZZ``), so the other Hypothesis tests keep their settings.

Contract: a reader either parses its input or raises a
:class:`~fairstream.errors.FairstreamError` whose message names the file; any other exception
fails the test, and readers that exclude rows must account for every row read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from fairstream.audit.inputs import ResultsTable
from fairstream.errors import FairstreamError

T = TypeVar("T")

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, database=None,
                          suppress_health_check=_QUIET, print_blob=True)

PROFILE = os.environ.get("FAIRSTREAM_FUZZ_PROFILE", "ci")
_examples = os.environ.get("FAIRSTREAM_FUZZ_EXAMPLES")
#: decorator applying the selected profile to one test.
FUZZ = settings(settings.get_profile(PROFILE),
                **({"max_examples": int(_examples)} if _examples else {}))

# ----------------------------------------------------------------------------- strategies

#: values that break naive parsers: empty, blanks, non-numbers, NaN/inf, huge/negative numbers,
#: separators, quotes, non-ASCII and control characters.
NASTY = ("", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1", "2.5", "1e400", "-0",
         "9" * 30, "1e18", "abc", "None", "null", "NA", "é", "😀", "\t", ",", ";", "\"",
         "'", "(", ")", "-", "x y", "\x00", "\x0b", "\u2028", "\ufeff", "[1, 2]", "{}")

ident = st.text("abcdefghijk0123456789_", min_size=1, max_size=8)
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=12), ident)
word_text = st.lists(st.sampled_from(["a", "b", "the", "cat", "é", "x1"]), max_size=5).map(
    " ".join)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` as is, or with up to four line- or byte-level corruptions."""
    lines = valid.split(b"\n")
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "dup", "bad_utf8", "bytes", "truncate", "field",
                                   "swap", "crlf", "empty"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0))) if lines else 0
        if op == "empty":
            lines = []
        elif not lines:
            lines = [draw(st.binary(max_size=20))]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "bad_utf8":
            cut = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9\x80",
                                                              b"\xfe\xff"])) + lines[i][cut:]
        elif op == "bytes":
            cut = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:cut] + draw(st.binary(max_size=8)) + lines[i][cut:]
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "field":
            sep = draw(st.sampled_from([b" ", b",", b"\t"]))
            lines[i] += sep + draw(nasty_text).encode("utf-8")
        elif op == "swap":
            lines[i] = draw(nasty_text).encode("utf-8")
        elif op == "crlf":
            lines[i] += b"\r"
    return b"\n".join(lines)


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``good`` four times in five, else ``bad`` (so that some inputs parse)."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 0 else good)


def random_or_mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` as is (half of the time), corrupted (a third) or random bytes (a sixth)."""
    return st.integers(0, 5).flatmap(
        lambda i: st.binary(max_size=200) if i == 0 else mutated(valid) if i < 3
        else st.just(valid))


def cut_or_random(valid: bytes) -> st.SearchStrategy[bytes]:
    """For binary formats: ``valid`` cut short, or random bytes."""
    return st.one_of(st.integers(0, len(valid)).map(lambda n: valid[:n]), st.binary(max_size=100))


# ----------------------------------------------------------------------------- contract


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh temporary directory per example (function-scoped fixtures are per test)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        yield Path(d)


def parses_or_fails_cleanly(call: Callable[[], T], names: Sequence[str | Path]) -> T | None:
    """Run ``call``: return its result, or ``None`` when it raised a FairstreamError whose
    message names one of ``names`` (file names or paths). Any other exception propagates."""
    try:
        out = call()
    except FairstreamError as exc:
        event(f"refused ({type(exc).__name__})")
        msg = str(exc)
        shown = [Path(n).name for n in names]
        assert any(n in msg for n in shown), f"error does not name any of {shown}: {msg}"
        return None
    event("parsed")
    return out


def rows_accounted_for(table: ResultsTable) -> None:
    """Rows read = rows kept + rows reported as excluded (no silent loss)."""
    excluded = sum(ex.count for ex in table.exclusions)
    assert table.n_rows_read == len(table.utterances) + excluded, (
        table.n_rows_read, len(table.utterances), table.exclusions)


def read_written(reader: Callable[[Path], T], name: str, content: bytes) -> T | None:
    """Write ``content`` to a scratch file ``name`` and read it: the reader's result, or
    ``None`` after a FairstreamError naming the file (see :func:`parses_or_fails_cleanly`)."""
    with scratch_dir() as d:
        path = d / name
        path.write_bytes(content)
        return parses_or_fails_cleanly(lambda: reader(path), [path])
