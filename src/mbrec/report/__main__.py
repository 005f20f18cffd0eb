"""``python -m mbrec.report {table1,table2,table3,figures} [--runs R] [--tracking-uri URI] [--out DIR]
[--paper] [--layout paper|long] [--pdf] [--dpi N]``.

Tables are built from the finished MLflow runs that ``--runs`` selects (an MLflow filter string, or a
preset name = the runs tagged ``mbrec_experiment=<name>``; default: the table's own preset, and Table 2
reads the Table 1 runs) and written as ``<table>.md`` (title, table, provenance), ``<table>.tex`` (the
paper's layout, or ``--layout long``), ``<table>.csv`` (every number); ``--pdf`` also writes and compiles
``<table>-standalone.tex``. Runs that differ in more than the seed are never averaged together (see
docs/reports.md). ``figures`` writes, per row of CKD runs (seeds pooled), Figure 1 (``pilot-*.png``) and
the λ_m / ρ^m traces (``traces-*.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbrec.defaults import BASE_ROW, REPORT_PRESET, tracking_uri
from mbrec.errors import StoreError, place_problem
from mbrec.report.ckd_rows import PROPOSED, table2_runs, table3_runs
from mbrec.report.latex import compile_pdf, to_latex, write_standalone
from mbrec.report.paper import add_paper_columns
from mbrec.report.rows import BACKBONE_NAMES
from mbrec.report.tables import (
    METRICS,
    cell_table,
    load_runs,
    markdown_document,
    preset_filters,
    row_groups,
    scaled,
    title,
)
from mbrec.utils import atomic_write_text, stable_hash


def _filter(runs: str) -> str | list[str]:
    """An MLflow filter string as given, or a preset name -> the filters of its runs."""
    return runs if " " in runs or "=" in runs else preset_filters(runs)


def build_table(what: str, runs, paper: bool = False):
    """The table DataFrame and its metric columns for ``what`` in table1/table2/table3."""
    metrics: tuple[str, ...] = METRICS
    base_row = BASE_ROW
    if what == "table2":
        runs, metrics = table2_runs(runs)
    elif what == "table3":
        runs, metrics, base_row = table3_runs(runs), ("test/recall_at_20",), PROPOSED  # ablations vs full CKD
    table = cell_table(runs, metrics, base_row, peer=PROPOSED if what in ("table1", "table2") else None)
    if paper:
        table = add_paper_columns(table, int(what[-1]), metrics)
    return table, metrics


def write_figures(tracking_uri: str, runs, out: Path, dpi: int) -> list[Path]:
    """Figure 1 and the CKD traces for every row of CKD runs (its seeds pooled)."""
    from mbrec.report.figures import ckd_traces, pilot_figure
    from mbrec.services.tracking import client_for

    client = client_for(tracking_uri)
    groups = [g for g in row_groups(runs[runs["balancer"] == PROPOSED])]
    names = [f"{g.block[0]}-{g.backbone}" + (f"-{g.block[2]}" if scaled(g.block[2]) else "") for g in groups]
    written = []
    for g, name in zip(groups, names):
        if names.count(name) > 1:  # several rows of one cell (other data, settings): tell them apart
            name += "-" + stable_hash({"block": list(g.block), "config": list(g.config)})[:8]
        head = f"{g.block[0]} / {BACKBONE_NAMES.get(g.backbone, g.backbone)}" + \
            (f" [{g.block[2]} scale]" if scaled(g.block[2]) else "") + (f" ({g.split_label})" if g.split else "")
        ids = list(g.runs["run_id"])
        written.append(pilot_figure(client, ids, out / f"pilot-{name}.png", head, dpi=dpi))
        written.append(ckd_traces(client, ids, out / f"traces-{name}.png", head, dpi=dpi))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mbrec.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["table1", "table2", "table3", "figures"])
    parser.add_argument("--runs", help="MLflow filter string or preset tag (default: see above)")
    parser.add_argument("--tracking-uri", default=tracking_uri(),
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///$MBREC_HOME/mlflow.db (as python -m mbrec)")
    parser.add_argument("--out", default="reports")
    parser.add_argument("--paper", action="store_true", help="print the paper's value beside ours (real datasets)")
    parser.add_argument("--layout", choices=["paper", "long"], default="paper",
                        help="LaTeX layout: the paper's (datasets as column groups; default) or one line per row")
    parser.add_argument("--pdf", action="store_true", help="also write <table>-standalone.tex and run pdflatex on it")
    parser.add_argument("--dpi", type=int, default=200, help="figure resolution (default 200)")
    args = parser.parse_args(argv)
    try:
        report(args)
    except OSError as err:  # a read-only or full --out: one line naming the place
        line = place_problem(err, elsewhere="--out")
        if line is None:
            raise
        raise SystemExit(line) from None


def report(args: argparse.Namespace) -> None:
    """Write the report ``args.what`` of the runs ``args.runs`` into ``args.out`` (see :func:`main`)."""
    filt = _filter(args.runs or REPORT_PRESET[args.what])
    try:
        runs = load_runs(args.tracking_uri, filt)
    except StoreError as err:  # a broken store: one line, the file and the fix
        raise SystemExit(str(err)) from None
    if runs.empty:
        raise SystemExit(f"no finished runs in {args.tracking_uri} match: {filt}")
    out = Path(args.out)
    if args.what == "figures":
        if not (runs["balancer"] == PROPOSED).any():
            raise SystemExit(f"figures need CKD runs (teachers + traces); none match: {filt}")
        written = write_figures(args.tracking_uri, runs, out, args.dpi)
        if not written:  # `make report` must fail on an empty report
            raise SystemExit(f"no figure written: no row of CKD runs in {args.tracking_uri} matches {filt}")
        for path in written:
            print(path)
        return
    table, metrics = build_table(args.what, runs, args.paper)
    if table.empty:  # e.g. table3 over runs without CKD: nothing to report is an error, not an empty table
        raise SystemExit(f"no {args.what} rows in the finished runs in {args.tracking_uri} that match {filt}")
    md = markdown_document(args.what, table, metrics)
    tex = to_latex(table, metrics, args.layout, delta=PROPOSED if args.what == "table1" else None)
    atomic_write_text(out / f"{args.what}.md", md)
    atomic_write_text(out / f"{args.what}.tex", tex)
    atomic_write_text(out / f"{args.what}.csv", table.to_csv(index=False))
    if args.pdf:
        doc = write_standalone(out / f"{args.what}-standalone.tex", tex, title(args.what, table))
        try:
            print(f"PDF: {compile_pdf(doc)}")
        except RuntimeError as err:  # no pdflatex, or it failed: one line (the .tex files are written)
            raise SystemExit(f"{err} ({doc})") from None
    print(md)


if __name__ == "__main__":
    main()
