"""``python -m mbrec.report [MLflow filter] --tracking-uri URI --out DIR``: Table 1 as Markdown, LaTeX, CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from mbrec.report.tables import cell_table, load_runs, to_latex, to_markdown
from mbrec.utils import atomic_write_text


def main(argv: list[str] | None = None) -> None:
    """Build the table from the matching MLflow runs and write table1.{md,tex,csv} under --out."""
    parser = argparse.ArgumentParser(prog="python -m mbrec.report")
    parser.add_argument("filter", nargs="?", default="tags.mbrec_experiment = 'table1'",
                        help="MLflow filter string, or a preset name (table1)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    filt = args.filter if " " in args.filter else f"tags.mbrec_experiment = '{args.filter}'"
    runs = load_runs(args.tracking_uri, filt)
    if runs.empty:
        raise SystemExit(f"no finished runs in {args.tracking_uri} match: {filt}")
    table = cell_table(runs)
    out = Path(args.out)
    md = to_markdown(table)
    atomic_write_text(out / "table1.md", md)
    atomic_write_text(out / "table1.tex", to_latex(table))
    atomic_write_text(out / "table1.csv", table.to_csv(index=False))
    print(md)


if __name__ == "__main__":
    main()
