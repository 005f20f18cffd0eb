"""Opening input files defensively: regular files only, bounded lines, ids parsed as written.

Every function raises :class:`mbrec.errors.DataError` naming the file, the line or field, and the fix.
The limits are documented in docs/data-validation.md.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from mbrec.errors import DataError

#: Longest line of a table (``.inter``, ``item_categories``, id lists), in bytes.
MAX_TABLE_LINE_BYTES = 1 << 20
#: Longest line of a raw review or metadata file (one JSON record), in bytes.
MAX_RECORD_LINE_BYTES = 16 << 20
#: Largest LATTICE split file (one JSON object), in bytes.
MAX_JSON_BYTES = 1 << 30
#: Ids are plain decimal digits (optionally ``.0``), at most this many digits (fits int64).
MAX_ID_DIGITS = 18
#: The largest id may be at most ``ID_SLACK_FACTOR`` x the number of distinct ids + ``ID_SLACK_MIN``.
ID_SLACK_FACTOR, ID_SLACK_MIN = 2, 1000

_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
_ID_TEXT = r"[0-9]+(?:\.0*)?"
_ID_RE = re.compile(_ID_TEXT)


def open_regular(path: str | Path, what: str = "file", fix: str = "pass the path of a regular file") -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file (a FIFO, device, socket
    or folder) *without blocking*: the file is opened non-blocking and checked with ``fstat``, so a
    FIFO without a writer cannot hang the reader and nothing can be swapped in between."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DataError(path, what, "does not exist", fix) from None
    except OSError as e:
        raise DataError(path, what, f"cannot be opened ({e.strerror or e})", "check the path and its permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise DataError(path, what, f"is {kind}, not a regular file", fix)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def require_regular(path: str | Path, what: str = "file", fix: str = "pass the path of a regular file") -> int:
    """Check that ``path`` is a readable regular file (see :func:`open_regular`); its size in bytes."""
    with open_regular(path, what, fix) as f:
        return os.fstat(f.fileno()).st_size


def check_line_lengths(f: BinaryIO, path: str | Path, limit: int, fix: str) -> list[int]:
    """Scan ``f`` from its start and refuse a line longer than ``limit`` bytes (before a parser would
    hold it in memory); rewinds ``f`` and returns the numbers of the blank lines (empty or a lone CR)."""
    f.seek(0)
    line, run, tail, blank = 1, 0, b"", []
    empty = (b"", b"\r")
    while chunk := f.read(1 << 20):
        parts = chunk.split(b"\n")
        lengths = [run + len(parts[0]), *map(len, parts[1:])]
        if max(lengths) > limit:
            at = line + next(i for i, n in enumerate(lengths) if n > limit)
            raise DataError(path, f"line {at}", f"is longer than the limit of {limit:,} bytes", fix)
        complete = parts[:-1]  # the last part is the start of a line that the next chunk may continue
        if complete:
            if run <= 1 and tail + complete[0] in empty:  # the line carried over from the previous chunk
                blank.append(line)
            if b"" in complete or b"\r" in complete:
                blank += [line + i for i, part in enumerate(complete) if i and part in empty]
        tail = (tail + parts[0] if len(parts) == 1 else parts[-1])[-2:]
        line += len(complete)
        run = lengths[-1]
    if run == 1 and tail == b"\r":  # a last line without a newline that is a lone CR
        blank.append(line)
    f.seek(0)
    return blank


class IdParseError(ValueError):
    """A value that is not an id; ``index`` is its position, ``value`` the text."""

    def __init__(self, index: int, value: str, problem: str) -> None:
        self.index, self.value, self.problem = index, value, problem
        super().__init__(f"{value!r}: {problem}")


def id_problem(text: str) -> str | None:
    """Why ``text`` is not an id (plain digits, optionally ``.0``, at most MAX_ID_DIGITS digits), or None."""
    t = text.strip()
    if not _ID_RE.fullmatch(t):
        if re.fullmatch("-" + _ID_TEXT, t):
            return "is negative"
        if not t:
            return "is empty"
        return "is not an integer written in plain digits (like 12, or 12.0)"
    if len(t.split(".", 1)[0].lstrip("0")) > MAX_ID_DIGITS:
        return f"has more than {MAX_ID_DIGITS} digits"
    return None


#: Newline-separated plain ids (the usual case, checked in one pass).
PLAIN_IDS = re.compile(rf"[0-9]{{1,{MAX_ID_DIGITS}}}(?:\n[0-9]{{1,{MAX_ID_DIGITS}}})*")


def parse_ids(values: pd.Series) -> tuple[np.ndarray, int]:
    """Texts -> int64 ids and how many were written as integral floats (``12.0``); raises IdParseError."""
    texts = values.tolist()
    if PLAIN_IDS.fullmatch("\n".join(texts)):  # the usual case, checked in one C-level pass
        return np.array(texts, dtype=np.int64), 0
    s = values.astype(str).str.strip()
    whole = s.str.split(".", n=1).str[0]
    ok = s.str.fullmatch(_ID_TEXT).to_numpy(dtype=bool) & (whole.str.lstrip("0").str.len() <= MAX_ID_DIGITS).to_numpy(dtype=bool)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise IdParseError(i, str(values.iloc[i]), id_problem(str(values.iloc[i])) or "is not an id")
    floats = int(s.str.contains(".", regex=False).sum())
    return whole.astype(np.int64).to_numpy(np.int64) if len(s) else np.zeros(0, np.int64), floats


def check_id_range(ids: np.ndarray, path: str | Path, field: str, fix: str) -> None:
    """Refuse ids whose largest value is far beyond the number of distinct ids (the arrays sized by the
    largest id would be mostly empty, and a stray huge id would allocate terabytes) — before anything
    is allocated by id."""
    if ids.size == 0:
        return
    distinct = int(pd.unique(ids).size)
    allowed = ID_SLACK_FACTOR * distinct + ID_SLACK_MIN
    top = int(ids.max())
    if top + 1 > allowed:
        raise DataError(path, field, f"the largest id is {top} but there are only {distinct:,} distinct ids "
                        f"(at most {allowed:,} id slots are allowed: {ID_SLACK_FACTOR} x distinct + {ID_SLACK_MIN})",
                        fix)
