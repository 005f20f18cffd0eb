"""``python -m mbrec.report {table1,table2,table3,figures} [--runs R] --tracking-uri URI --out DIR [--paper]``.

Tables are built from the finished MLflow runs that ``--runs`` selects (an MLflow filter string, or a
preset name = the runs tagged ``mbrec_experiment=<name>``; default: the table's own preset, and Table 2
reads the Table 1 runs) and written as ``<table>.{md,tex,csv}``. ``figures`` writes, for every matching
CKD run, Figure 1 (``pilot-<run>.png``) and the λ_m / ρ^m traces (``traces-<run>.png``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mbrec.errors import StoreError
from mbrec.report.paper import add_paper_columns
from mbrec.report.tables import (METRICS, cell_table, load_runs, preset_filters, table2_runs, table3_runs, to_latex,
                                 to_markdown)
from mbrec.utils import atomic_write_text

DEFAULT_RUNS = {"table1": "table1", "table2": "table1", "table3": "table3", "figures": "pilot"}


def _filter(runs: str) -> str | list[str]:
    """An MLflow filter string as given, or a preset name -> the filters of its runs."""
    return runs if " " in runs or "=" in runs else preset_filters(runs)


def build_table(what: str, runs, paper: bool = False):
    """The table DataFrame and its metric columns for ``what`` in table1/table2/table3."""
    metrics: tuple[str, ...] = METRICS
    base_row = "none"
    if what == "table2":
        runs, metrics = table2_runs(runs)
    elif what == "table3":
        runs, metrics, base_row = table3_runs(runs), ("test/recall_at_20",), "ckd"  # ablations vs full CKD
    table = cell_table(runs, metrics, base_row)
    if paper:
        table = add_paper_columns(table, int(what[-1]), metrics)
    return table, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mbrec.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["table1", "table2", "table3", "figures"])
    parser.add_argument("--runs", help="MLflow filter string or preset tag (default: see above)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (as python -m mbrec)")
    parser.add_argument("--out", default="reports")
    parser.add_argument("--paper", action="store_true", help="print the paper's value beside ours (real datasets)")
    args = parser.parse_args(argv)
    filt = _filter(args.runs or DEFAULT_RUNS[args.what])
    try:
        runs = load_runs(args.tracking_uri, filt)
    except StoreError as err:  # a broken store: one line, the file and the fix
        raise SystemExit(str(err)) from None
    if runs.empty:
        raise SystemExit(f"no finished runs in {args.tracking_uri} match: {filt}")
    out = Path(args.out)
    if args.what == "figures":
        from mbrec.report.figures import ckd_traces, pilot_figure
        from mbrec.tracking import client_for

        client = client_for(args.tracking_uri)
        ckd = runs[runs["balancer"] == "ckd"]
        if ckd.empty:
            raise SystemExit(f"figures need CKD runs (teachers + traces); none match: {filt}")
        for run_id in ckd["run_id"]:
            print(pilot_figure(client, run_id, out / f"pilot-{run_id[:8]}.png"))
            print(ckd_traces(client, run_id, out / f"traces-{run_id[:8]}.png"))
        return
    table, metrics = build_table(args.what, runs, args.paper)
    md = to_markdown(table, metrics)
    atomic_write_text(out / f"{args.what}.md", md)
    atomic_write_text(out / f"{args.what}.tex", to_latex(table, metrics))
    atomic_write_text(out / f"{args.what}.csv", table.to_csv(index=False))
    print(md)


if __name__ == "__main__":
    main()
