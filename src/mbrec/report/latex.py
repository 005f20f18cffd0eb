"""LaTeX tables (booktabs) from a cell table.

``paper`` layout, as the paper prints its tables: datasets as column groups, metrics as sub-columns,
rows = backbone × balancer (the base row named after the backbone), the best value of each column within
a backbone in bold, a compact ``±`` std and ``*`` where the paired test against the base row gives
p ≤ 0.05; Table 1 adds the Δ row of the proposed method. ``long`` layout: one line per row, every number
spelled out (as the Markdown table).

Either starts with ``\\begin{tabular}`` (to ``\\input`` inside one's own ``table`` environment) and is
followed by a footnote-size paragraph with the provenance, so the numbers never travel without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mbrec.report import rows as R
from mbrec.report.rows import BACKBONE_NAMES
from mbrec.report.tables import BASE, SIGNIFICANCE, is_smoke, label, provenance, row_cells, scaled
from mbrec.utils import atomic_write_text

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "≤": r"$\le$",
        "≥": r"$\ge$", "–": "--", "—": "---", "Δ": r"$\Delta$", "λ": r"$\lambda$", "ρ": r"$\rho$", "·": r"$\cdot$",
        "×": r"$\times$"}
SHORT = {"recall": "R", "ndcg": "NDCG", "ndcg_lattice": r"NDCG$_\mathrm{L}$", "precision": "P", "hit": "H"}


def tex(text: object) -> str:
    """``text`` with LaTeX's special characters escaped and the few Unicode symbols we print as math."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def short_label(metric: str) -> str:
    """A sub-column header: ``test/recall_at_20`` -> ``R@20``; ``test/recall_at_20/text`` -> ``text``."""
    _, name, *modality = metric.split("/")
    if modality:
        return tex(modality[0])
    base, k = name.rsplit("_at_", 1)
    return f"{SHORT.get(base, tex(base))}@{k}"


def _notes(table: pd.DataFrame, key: list[str]) -> str:
    """The paragraph under the tabular: ``key`` (how to read the cells, if given) and the provenance."""
    lines = [*key, *provenance(table, how_to_read=not key)]
    return ("\\par\\smallskip\n{\\footnotesize\\raggedright\n" + "".join(tex(x) + "\\par\n" for x in lines) + "}\n")


def _smoke_row(table: pd.DataFrame, width: int) -> list[str]:
    if "scale" in table and table["scale"].map(is_smoke).any():
        return [rf"\multicolumn{{{width}}}{{c}}{{\textbf{{SMOKE SCALE: tiny data and budgets, not a result}}}} \\"]
    return []


def long_latex(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """One line per row with every number (mean ± std, change, p, n), as the Markdown table."""
    head = ["dataset", "backbone", "row", "seeds", *(label(m) for m in metrics), "tuning budget"]
    lines = [r"\begin{tabular}{llll" + "r" * len(metrics) + "l}", *_smoke_row(table, len(head)), r"\toprule",
             " & ".join(map(tex, head)) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        lines.append(" & ".join(tex(c) for c in row_cells(r, metrics, table)) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n" + _notes(table, [])


def _block_header(block: tuple, table: pd.DataFrame) -> str:
    dataset, fingerprint, scale = block
    text = dataset.capitalize() if dataset in ("baby", "sports", "clothing", "beauty") else dataset
    if scaled(scale):
        text += f" ({scale})"
    if table.loc[table["dataset"] == dataset, "fingerprint"].nunique() > 1:
        text += f" {str(fingerprint)[:8]}"
    return tex(text)


def _cell(row: pd.Series | None, m: str, best: bool, marks_n: bool) -> str:
    """``mean`` (bold if best) with a small ``±std``, ``*`` if significant against the base row, and the
    paired n as a subscript when not every comparison of the table has the same n."""
    if row is None or pd.isna(row.get(f"{m}:mean", np.nan)):
        return "--"
    mean = f"{row[f'{m}:mean']:.4f}"
    text = rf"\textbf{{{mean}}}" if best else mean
    std = row.get(f"{m}:std", np.nan)
    if pd.notna(std):
        # rounded like every other number (and like the long layout's `± 0.0000`)
        text += r"{\scriptsize$\pm$" + f"{std:.4f}".lstrip("0") + "}"
    return text + _marks(row, m, marks_n)


def _marks(row: pd.Series, m: str, marks_n: bool) -> str:
    p, n = row.get(f"{m}:p", np.nan), row.get(f"{m}:n", np.nan)
    return ("$^{*}$" if pd.notna(p) and p <= SIGNIFICANCE else "") + \
        (f"$_{{n={int(n)}}}$" if marks_n and pd.notna(n) else "")


def _row_text(backbone: str, balancer: str, split: str, first: bool, scales: list[str]) -> str:
    """The base row is named after the backbone (as in the paper); the first row of a backbone without a
    base row carries the backbone's name too; ``[smoke]`` etc. when the row has values at such a scale;
    a row beyond the paper is marked with a dagger."""
    name = BACKBONE_NAMES.get(backbone, backbone)
    text = name if balancer == BASE else (f"{name} {R.label(balancer)}" if first else R.label(balancer))
    mark = r"$^{\dagger}$" if R.paper_row(balancer) is None else ""
    return tex(text + (f" ({split})" if split else "") + "".join(f" [{s}]" for s in scales)) + mark


def _vs_mark(row: pd.Series | None, m: str) -> str:
    """``#`` when a row beyond the paper differs significantly from the peer row (CKD)."""
    p = np.nan if row is None else row.get(f"{m}:p:vs", np.nan)
    return r"$^{\#}$" if pd.notna(p) and p <= SIGNIFICANCE else ""


def _head(table: pd.DataFrame, blocks: list[tuple], metrics: tuple[str, ...]) -> list[str]:
    """Column groups (one per dataset block) over the metric sub-columns."""
    w = len(metrics)
    return [" & " + " & ".join(rf"\multicolumn{{{w}}}{{c}}{{{_block_header(b, table)}}}" for b in blocks) + r" \\",
            "".join(rf"\cmidrule(lr){{{2 + i * w}-{1 + (i + 1) * w}}}" for i in range(len(blocks))),
            "Model & " + " & ".join(short_label(m) for _ in blocks for m in metrics) + r" \\"]


def _backbone_lines(backbone: str, sub: pd.DataFrame, blocks: list[tuple], metrics: tuple[str, ...],
                    marks_n: bool, delta: str | None) -> list[str]:
    """The rows of one backbone (bold = best of its column among them) and its Δ row."""
    keys = list(dict.fromkeys(zip(sub["balancer"], sub["split"])))
    cells = {(r["balancer"], r["split"], (r["dataset"], r["fingerprint"], r["scale"])): r for _, r in sub.iterrows()}
    best = {(b, m): round(max((r[f"{m}:mean"] for (_, _, bb), r in cells.items()
                               if bb == b and pd.notna(r[f"{m}:mean"])), default=np.nan), 4)
            for b in blocks for m in metrics}
    lines = []
    for k, (bal, split) in enumerate(keys):
        here = [cells.get((bal, split, b)) for b in blocks]
        out = [_cell(r, m, len(keys) > 1 and r is not None and round(r[f"{m}:mean"], 4) == best[b, m], marks_n)
               + _vs_mark(r, m) for b, r in zip(blocks, here) for m in metrics]
        scales = list(dict.fromkeys(r["scale"] for r in here if r is not None and scaled(r["scale"])))
        if k and R.paper_row(bal) is None and R.paper_row(keys[k - 1][0]) is not None:  # the rows beyond the paper
            lines.append(r"\cmidrule(l){1-" + str(1 + len(blocks) * len(metrics)) + "}")
        lines.append(_row_text(backbone, bal, split, k == 0, scales) + " & " + " & ".join(out) + r" \\")
        if bal == delta:  # its Δ row right under it (rows beyond the paper follow)
            lines.append(_delta_line(cells, bal, split, blocks, metrics, marks_n))
    return lines


def _delta_line(cells: dict, bal: str, split: str, blocks: list[tuple], metrics: tuple[str, ...], marks_n: bool) -> str:
    """The Δ Improv. row of ``bal``: its change over the base row per column."""
    out = []
    for b in blocks:
        r = cells.get((bal, split, b))
        for m in metrics:
            impr = np.nan if r is None else r.get(f"{m}:impr%", np.nan)
            out.append("--" if pd.isna(impr) else f"{impr:+.2f}\\%".replace("-", "$-$") + _marks(r, m, marks_n))
    return r"$\Delta$ Improv." + (f" ({tex(split)})" if split else "") + " & " + " & ".join(out) + r" \\"


def paper_latex(table: pd.DataFrame, metrics: tuple[str, ...], delta: str | None = None) -> str:
    """The paper's layout (see the module docstring); ``delta``: the row whose change over the base row is
    printed in a Δ row under each backbone (Table 1: the proposed method)."""
    table = table.assign(split=table["split"].fillna("").astype(str) if "split" in table else "")
    blocks = list(dict.fromkeys(zip(table["dataset"], table["fingerprint"], table["scale"])))
    compared = {int(n) for m in metrics if f"{m}:n" in table for n in table[f"{m}:n"].dropna()}
    marks_n = len(compared) > 1  # every comparison on the same n: said once in the notes instead
    lines = [r"\begin{tabular}{l" + ("r" * len(metrics)) * len(blocks) + "}",
             *_smoke_row(table, 1 + len(blocks) * len(metrics)), r"\toprule", *_head(table, blocks, metrics)]
    for backbone in dict.fromkeys(table["backbone"]):
        lines += [r"\midrule", *_backbone_lines(backbone, table[table["backbone"] == backbone], blocks, metrics,
                                                marks_n, delta)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    n_text = (f" on the n = {next(iter(compared))} seeds both share" if len(compared) == 1
              else " on the n seeds both share (subscript)" if compared else "")
    key = ["Bold: the best value of its column within a backbone; ± std over seeds; "
           f"*: p ≤ {SIGNIFICANCE}, two-sided paired t-test against the base row{n_text}."]
    if delta is not None and (table["balancer"] == delta).any():
        key.append(f"Δ Improv.: relative change of {R.label(delta)} over the base row on the same paired seeds.")
    if any(R.paper_row(b) is None for b in table["balancer"]):
        key.append("†: a row beyond the paper" + (f"; #: p ≤ {SIGNIFICANCE}, two-sided paired t-test against "
                                                  f"{R.label(delta)} of the same tuning" if delta else "") + ".")
    return "\n".join(lines) + "\n" + _notes(table, key)


def to_latex(table: pd.DataFrame, metrics: tuple[str, ...], layout: str = "paper", delta: str | None = None) -> str:
    """The table as a LaTeX tabular plus its provenance paragraph, in the ``paper`` or ``long`` layout."""
    if layout == "long":
        return long_latex(table, metrics)
    if layout != "paper":
        raise ValueError(f"layout={layout!r}: use paper or long")
    return paper_latex(table, metrics, delta)


def standalone(body: str, caption: str) -> str:
    """A complete document around a tabular from :func:`to_latex` (landscape; wide tables shrink to fit)."""
    return "\n".join([
        r"\documentclass{article}",
        r"\usepackage[landscape,margin=1.5cm]{geometry}",
        r"\usepackage{booktabs,graphicx}",
        r"\pagestyle{empty}",
        r"\begin{document}",
        r"\begin{table}[t]\centering",
        r"\caption{" + tex(re.sub(r"Table \d+: ", "", caption)) + "}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        body.split("\\par\\smallskip", 1)[0].rstrip() + "}",
        "\\par\\smallskip" + body.split("\\par\\smallskip", 1)[1] if "\\par\\smallskip" in body else "",
        r"\end{table}",
        r"\end{document}",
    ]) + "\n"


def compile_pdf(tex_path: Path) -> Path:
    """``pdflatex`` a standalone document next to it; the PDF's path. Needs a TeX installation
    (Debian: ``apt-get install texlive-latex-base texlive-latex-recommended``)."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise RuntimeError("pdflatex not found: install TeX (Debian: apt-get install texlive-latex-base "
                           "texlive-latex-recommended) or compile the .tex yourself")
    tex_path = Path(tex_path).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp}",
                               str(tex_path)], capture_output=True, text=True, timeout=300)
        pdf = Path(tmp) / (tex_path.stem + ".pdf")
        if proc.returncode != 0 or not pdf.is_file():
            raise RuntimeError(f"pdflatex failed on {tex_path}:\n{proc.stdout[-2000:]}")
        out = tex_path.with_suffix(".pdf")
        shutil.copyfile(pdf, out.with_name(out.name + ".tmp"))
        out.with_name(out.name + ".tmp").replace(out)
    return out


def write_standalone(path: Path, body: str, caption: str) -> Path:
    """Write the standalone document atomically."""
    atomic_write_text(path, standalone(body, caption))
    return path
