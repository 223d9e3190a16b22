"""Text files read strictly: UTF-8 (a byte-order mark is ignored), and a byte that is not UTF-8
is an :class:`~fairstream.errors.InputDataError` naming the file and the line.

:func:`read_lines` serves the line-oriented formats (Kaldi tables, trn files, trial lists, id
lists). Lines are split on ``\\n`` only, so a reported line number is the one an editor shows
(a trailing ``\\r`` goes with the other edge whitespace the readers strip).
"""

from __future__ import annotations

from pathlib import Path

from fairstream.errors import InputDataError

__all__ = ["read_lines", "read_text"]


def read_text(path: Path, what: str) -> str:
    """The content of ``path`` as text.

    Args:
        path: the file.
        what: what the file is, for messages ("trial list", "config", ...).

    Raises:
        InputDataError: the file is missing or unreadable, or not UTF-8 (names the line).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputDataError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputDataError(f"cannot read {what} {path}: {exc}") from exc
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputDataError(
            f"{path}:{line}: {what} is not valid UTF-8 (byte {data[exc.start]:#04x} at "
            f"column {column})"
        ) from None


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based line numbers (see :func:`read_text`)."""
    return [(n, line) for n, line in enumerate(read_text(path, what).split("\n"), start=1)
            if line.strip()]
