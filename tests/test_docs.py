"""The documentation is self-contained: nothing cites files outside the repository, and every pointer
into docs/ (a relative Markdown link or a ``docs/<page>.md#anchor`` in a comment) resolves."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "pyproject.toml", "Makefile", "src", "conf", "tests", "benchmarks", "docs"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ""}
# A reference-material folder or a spec page by name, outside docs/ (brackets keep this file from matching).
OUTSIDE = re.compile(r"shared[/]|spec[/]")
PAGE = re.compile(r"(?<![\w/])(ckd|backbones|balancers|stack|performance|architecture)[.]md")
DOCS_REF = re.compile(r"docs/([a-z_]+[.]md)(#[\w-]+)?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _files() -> list[Path]:
    out = []
    for name in SCANNED:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts]
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for m in re.finditer(r"^#+\s+(.+)$", text, flags=re.M):
        s = slug(m.group(1))
        seen[s] = seen.get(s, 0) + 1
    return {s if i == 0 else f"{s}-{i}" for s, n in seen.items() for i in range(n)}


def test_slug_matches_github_anchors():
    assert slug("Re-weighting modes (`paper` / `official` / `none`)") == "re-weighting-modes-paper--official--none"
    assert slug("Uni-modal teachers (eqs. 8–9)") == "uni-modal-teachers-eqs-89"
    assert slug("Deviations from the paper and from the authors' code") == "deviations-from-the-paper-and-from-the-authors-code"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_cites_material_outside_the_repository(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    bad = [m.group(0) for m in OUTSIDE.finditer(text)]
    if path.parent != ROOT / "docs":  # inside docs/, page names are relative links (checked below)
        bad += [m.group(0) for m in PAGE.finditer(text)]
    assert not bad, f"{path.relative_to(ROOT)} cites {sorted(set(bad))}: point into docs/ or state the fact"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docs_pointer_resolves(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for m in DOCS_REF.finditer(text):
        page = ROOT / "docs" / m.group(1)
        assert page.is_file(), f"{path.relative_to(ROOT)}: {m.group(0)} does not exist"
        if m.group(2):
            assert m.group(2)[1:] in anchors(page), f"{path.relative_to(ROOT)}: no heading for {m.group(0)}"


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for m in MD_LINK.finditer(text):
        link = m.group(1)
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        dest = (page.parent / target).resolve() if target else page
        assert dest.exists(), f"{page.name}: link {link} points to nothing"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: link {link} has no such heading"


_METRIC = re.compile(r"(?<![\d.])0\.\d{4}\b")  # a Recall/NDCG value quoted from a run
_CODE_SPAN = re.compile(r"`[^`]*`")


def _measured_tables(text: str) -> list[tuple[int, str | None]]:
    """(line, marker) of every Markdown table quoting a metric value; marker: the ``<!-- measured: ... -->``
    comment since the previous heading or table (None if there is none)."""
    found, marker, start, hit, in_table, in_code = [], None, 0, False, False, False
    for n, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        if line.startswith("#"):
            marker = None
        if "<!-- measured:" in line:
            marker = line.split("<!-- measured:", 1)[1].split("-->")[0].strip()
        row = line.lstrip().startswith("|")
        if row and not in_table:
            in_table, start, hit = True, n, False
        if row and _METRIC.search(_CODE_SPAN.sub("", line)):
            hit = True
        if not row and in_table:
            in_table = False
            if hit:
                found.append((start, marker))
            marker = None
    return found


def _entry_points_exist(command: str) -> list[str]:
    """The programs a marker's command names that do not exist in the repository."""
    import importlib.util

    missing = []
    for module in re.findall(r"python -m ([\w.]+)", command):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
    for script in re.findall(r"python ((?:benchmarks|scripts)/[\w/]+\.py)", command):
        if not (ROOT / script).is_file():
            missing.append(script)
    for target in re.findall(r"\bmake ([\w-]+)", command):
        if not re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M):
            missing.append(f"make {target}")
    return missing


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_measured_table_names_the_command_that_made_it(page: Path) -> None:
    """Docs that cannot drift silently: a table quoting numbers from runs carries, just above it, a
    ``<!-- measured: <command> (when, code) -->`` comment naming what produced it, and that program exists."""
    for line, marker in _measured_tables(page.read_text()):
        assert marker, f"{page.name}:{line}: a table of measured values without a <!-- measured: <command> --> line above it"
        assert re.search(r"python (-m \w|benchmarks/|scripts/)|\bmake \w", marker), f"{page.name}:{line}: {marker!r} names no command"
        assert not (gone := _entry_points_exist(marker)), f"{page.name}:{line}: {gone} in {marker!r} do not exist"


def test_the_measured_table_check_can_fail() -> None:
    text = "## A\n\n| row | Recall@20 |\n|---|---|\n| none | 0.3661 |\n\n<!-- measured: python -m mbrec.nosuch -->\n| x | 0.1234 |\n"
    assert _measured_tables(text) == [(3, None), (8, "python -m mbrec.nosuch")]
    assert _entry_points_exist("python -m mbrec.nosuch; python benchmarks/nosuch.py; make nosuch") == [
        "mbrec.nosuch", "benchmarks/nosuch.py", "make nosuch"]
    assert _entry_points_exist("python -m mbrec.report table2; python benchmarks/balancer_rows.py; make bench") == []
