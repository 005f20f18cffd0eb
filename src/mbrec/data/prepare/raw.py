"""Safe line-by-line reading of McAuley's review and metadata files (gzip or plain)."""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from mbrec.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
REDOWNLOAD = "re-download the file (McAuley's Amazon 2014 release) and check its size"


def _open(path: Path):
    if not path.is_file():
        raise DataError(path, "file", "does not exist", "pass the path of the downloaded file")
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")
    except OSError as e:
        raise DataError(path, "file", f"cannot be read ({e.strerror or e})", "check the path and its permissions") from e


def parse_record(text: str, path: Path, lineno: int) -> dict[str, Any]:
    """One line as a dict: JSON first, else a Python literal (``ast.literal_eval`` never runs code)."""
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # deeply nested input makes json recurse too far
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
    a line that is not UTF-8 or not a record, or a file without any record."""
    path = Path(path)
    n = 0
    with _open(path) as f:
        lineno = 0
        try:
            for lineno, raw in enumerate(tqdm(f, desc=desc, unit=" lines", leave=False, mininterval=1.0), start=1):
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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_reviews(path: str | Path) -> tuple[list[str], list[str], dict[str, list], dict[str, int]]:
    """(reviewerIDs, asins, extra columns, counts) of ``reviews_<Category>_5.json.gz``.

    Duplicated (reviewer, asin) pairs are kept once, the first (counted). The extra columns are
    MMRec's ``rating`` (``overall``) and ``timestamp`` (``unixReviewTime``), None where absent."""
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    extra: dict[str, list] = {"rating": [], "timestamp": []}
    seen: set[tuple[str, str]] = set()
    lines = duplicates = 0
    for lineno, rec in records(path, "reviews"):
        lines += 1
        for field in ("reviewerID", "asin"):
            value = rec.get(field)
            if not isinstance(value, str) or not value:
                raise DataError(path, f"line {lineno}: {field}", "missing or not a string",
                                "every review needs 'reviewerID' and 'asin'; the file is not a reviews file or is corrupt")
        pair = (rec["reviewerID"], rec["asin"])
        if pair in seen:
            duplicates += 1
            continue
        seen.add(pair)
        users.append(pair[0])
        items.append(pair[1])
        extra["rating"].append(_number(rec.get("overall")))
        extra["timestamp"].append(_number(rec.get("unixReviewTime")))
    return users, items, extra, {"review_lines": lines, "duplicate_reviews_dropped": duplicates,
                                 "reviews": len(users), "reviewers": len(set(users)), "reviewed_items": len(set(items))}


def read_meta(path: str | Path, wanted: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Metadata records of the ``wanted`` ASINs (every line is parsed and validated)."""
    path = Path(path)
    meta: dict[str, dict[str, Any]] = {}
    lines = 0
    for lineno, rec in records(path, "metadata"):
        lines += 1
        asin = rec.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataError(path, f"line {lineno}: asin", "missing or not a string", "every metadata record needs 'asin'; " + REDOWNLOAD)
        if asin in wanted:
            meta[asin] = rec
    return meta, {"meta_lines": lines, "items_without_meta": len(wanted - meta.keys())}
