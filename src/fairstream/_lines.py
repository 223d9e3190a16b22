"""Line-oriented text files (Kaldi tables, trn files, trial lists, id lists), read strictly.

Lines are split on ``\\n`` (a trailing ``\\r`` is dropped with the other edge whitespace by the
readers), so a reported line number is the one an editor shows; a UTF-8 byte-order mark is
ignored; a line that is not UTF-8 is an :class:`~fairstream.errors.InputDataError` naming the
file and the line.
"""

from __future__ import annotations

from pathlib import Path

from fairstream.errors import InputDataError

__all__ = ["read_lines"]


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based line numbers.

    Args:
        path: the file.
        what: what the file is, for messages ("trial list", "hypothesis file", ...).

    Raises:
        InputDataError: the file is missing or unreadable, or a line is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputDataError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputDataError(f"cannot read {what} {path}: {exc}") from exc
    data = data.removeprefix(b"\xef\xbb\xbf")
    out: list[tuple[int, str]] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputDataError(
                f"{path}:{lineno}: {what} line is not valid UTF-8 "
                f"(byte {raw[exc.start]:#04x} at column {exc.start + 1})"
            ) from None
        if line.strip():
            out.append((lineno, line))
    return out
