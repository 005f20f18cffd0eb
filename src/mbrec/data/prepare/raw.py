"""Safe line-by-line reading of McAuley's review and metadata files (gzip or plain)."""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import math
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from tqdm import tqdm

from mbrec.data.files import MAX_RECORD_LINE_BYTES, open_regular
from mbrec.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
REDOWNLOAD = "re-download the file (McAuley's Amazon 2014 release) and check its size"


@contextlib.contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when it starts with the gzip magic; regular files only."""
    with open_regular(path, "file", "pass the path of the downloaded file") as raw:
        try:
            magic = raw.read(2)
            raw.seek(0)
        except OSError as e:
            raise DataError(path, "file", f"cannot be read ({e.strerror or e})", "check the path and its permissions") from e
        if magic == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        else:
            yield raw


def parse_record(text: str, path: Path, lineno: int) -> dict[str, Any]:
    """One line as a dict: JSON first, else a Python literal (``ast.literal_eval`` never runs code)."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, an integer of > 4,300 digits; deep nesting recurses too far
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as e:
            raise DataError(path, f"line {lineno}", f"is neither JSON nor a Python literal ({type(e).__name__}: "
                            f"{str(e)[:80]}); it starts {text[:60]!r}",
                            "the file is corrupt or not an Amazon 2014 file; re-download it (nothing is ever eval()'d)") from None
    if not isinstance(record, dict):
        raise DataError(path, f"line {lineno}", f"is a {type(record).__name__}, not a record {{...}}", REDOWNLOAD)
    return record


def records(path: str | Path, desc: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line; a clear DataError on a truncated gzip stream,
    a line longer than MAX_RECORD_LINE_BYTES, a line that is not UTF-8 or not a record, or a file
    without any record."""
    path = Path(path)
    n = 0
    with _open(path) as f:
        lineno = 0
        try:
            lines = iter(lambda: f.readline(MAX_RECORD_LINE_BYTES + 1), b"")
            for lineno, raw in enumerate(tqdm(lines, desc=desc, unit=" lines", leave=False, mininterval=1.0), start=1):
                if len(raw) > MAX_RECORD_LINE_BYTES and not (len(raw) == MAX_RECORD_LINE_BYTES + 1 and raw.endswith(b"\n")):
                    raise DataError(path, f"line {lineno}", f"is longer than the limit of {MAX_RECORD_LINE_BYTES:,} bytes "
                                    "(a review or metadata record is a few kB)", REDOWNLOAD)
                try:
                    text = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise DataError(path, f"line {lineno}", f"is not UTF-8 ({e.reason} at byte {e.start})", REDOWNLOAD) from None
                if text:
                    n += 1
                    yield lineno, parse_record(text, path, lineno)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise DataError(path, f"line {lineno + 1}", f"the gzip stream is truncated or corrupt ({e})", REDOWNLOAD) from None
    if n == 0:
        raise DataError(path, "contents", "the file holds no records (it is empty)", REDOWNLOAD)


MAX_ID_CHARS = 256
#: unixReviewTime must be whole seconds in [0, MAX_UNIX_TIME] (9999-12-31T23:59:59Z).
MAX_UNIX_TIME = 253_402_300_799
MAX_RATING_MAGNITUDE = 1e6


def check_id(value: Any, path: Path, lineno: int, field: str, fix: str) -> str:
    """A reviewer id or ASIN: a non-empty printable string of at most MAX_ID_CHARS characters (no NUL,
    tab, newline or other control character, which would corrupt the tab-separated id mappings)."""
    if not isinstance(value, str) or not value:
        raise DataError(path, f"line {lineno}: {field}", "missing or not a string", fix)
    if len(value) > MAX_ID_CHARS:
        raise DataError(path, f"line {lineno}: {field}", f"is {len(value):,} characters long (limit {MAX_ID_CHARS})", REDOWNLOAD)
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise DataError(path, f"line {lineno}: {field}", f"{value[:40]!r} holds the unprintable character {bad!r} "
                        f"(U+{ord(bad):04X})", "ids must be printable text without tabs or line breaks; " + REDOWNLOAD)
    return value


def _timestamp(value: Any, path: Path, lineno: int, counts: dict[str, int]) -> int | None:
    """``unixReviewTime``: whole seconds in [0, MAX_UNIX_TIME]; an integral float (``1.3e9``) is accepted
    and counted; absent -> None (counted); anything else is refused."""
    if value is None:
        counts["reviews_without_timestamp"] += 1
        return None
    ok = False
    if isinstance(value, int) and not isinstance(value, bool):
        ok = 0 <= value <= MAX_UNIX_TIME
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value <= MAX_UNIX_TIME:
        counts["timestamps_written_as_float"] += 1
        ok = True
    if not ok:
        raise DataError(path, f"line {lineno}: unixReviewTime", f"{repr(value)[:40]} is not a whole number of seconds "
                        f"between 0 and {MAX_UNIX_TIME} (year 9999)", "fix or remove the field on that line; " + REDOWNLOAD)
    return int(value)


def _rating(value: Any, path: Path, lineno: int, counts: dict[str, int]) -> float | None:
    """``overall``: a finite number with |x| <= MAX_RATING_MAGNITUDE; absent -> None (counted)."""
    if value is None:
        counts["reviews_without_rating"] += 1
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_RATING_MAGNITUDE:
        return float(value)  # NaN fails the comparison above, ints are compared exactly before float()
    raise DataError(path, f"line {lineno}: overall", f"{repr(value)[:40]} is not a rating (a finite number of "
                    f"magnitude <= {MAX_RATING_MAGNITUDE:g})", "fix or remove the field on that line; " + REDOWNLOAD)


def read_reviews(path: str | Path) -> tuple[list[str], list[str], dict[str, list], dict[str, int]]:
    """(reviewerIDs, asins, extra columns, counts) of ``reviews_<Category>_5.json.gz``.

    Duplicated (reviewer, asin) pairs are kept once, the first (counted). The extra columns are
    MMRec's ``rating`` (``overall``) and ``timestamp`` (``unixReviewTime``), None where absent (counted)."""
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    extra: dict[str, list] = {"rating": [], "timestamp": []}
    seen: set[tuple[str, str]] = set()
    lines = duplicates = 0
    odd = {"reviews_without_rating": 0, "reviews_without_timestamp": 0, "timestamps_written_as_float": 0}
    fix = "every review needs 'reviewerID' and 'asin'; the file is not a reviews file or is corrupt"
    for lineno, rec in records(path, "reviews"):
        lines += 1
        pair = (check_id(rec.get("reviewerID"), path, lineno, "reviewerID", fix), check_id(rec.get("asin"), path, lineno, "asin", fix))
        rating = _rating(rec.get("overall"), path, lineno, odd)
        timestamp = _timestamp(rec.get("unixReviewTime"), path, lineno, odd)
        if pair in seen:
            duplicates += 1
            continue
        seen.add(pair)
        users.append(pair[0])
        items.append(pair[1])
        extra["rating"].append(rating)
        extra["timestamp"].append(timestamp)
    return users, items, extra, {"review_lines": lines, "duplicate_reviews_dropped": duplicates,
                                 "reviews": len(users), "reviewers": len(set(users)), "reviewed_items": len(set(items)),
                                 **odd}


def read_meta(path: str | Path, wanted: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Metadata records of the ``wanted`` ASINs (every line is parsed and validated). Of an ASIN with
    several records the first is kept; the repeats of wanted ASINs are counted."""
    path = Path(path)
    meta: dict[str, dict[str, Any]] = {}
    lines = repeated = 0
    for lineno, rec in records(path, "metadata"):
        lines += 1
        asin = check_id(rec.get("asin"), path, lineno, "asin", "every metadata record needs 'asin'; " + REDOWNLOAD)
        if asin in wanted:
            if asin in meta:
                repeated += 1
            else:
                meta[asin] = rec
    return meta, {"meta_lines": lines, "items_without_meta": len(wanted - meta.keys()),
                  "meta_records_repeated_asin_first_kept": repeated}
