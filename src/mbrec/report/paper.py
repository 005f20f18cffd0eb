"""The paper's printed values (package data ``report/paper/table*.tsv``), looked up by our row keys.

A row's name in the paper comes from the balancer registry (``Balancer.paper_row``) or, for CKD's own
rows (uni-teacher, the Table 3 variants), from :mod:`mbrec.report.ckd_rows`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from mbrec.report.rows import BACKBONE_NAMES, paper_row

PAPER_DIR = Path(__file__).resolve().parent / "paper"
#: our metric column -> the paper table's column
#: (the paper's NDCG is the LATTICE code's variant: compared with our ndcg_lattice, not the standard NDCG)
METRIC_NAMES = {"test/recall_at_20": "recall@20", "test/ndcg_lattice_at_20": "ndcg@20", "test/precision_at_20": "precision@20",
                "test/recall_at_20/text": "textual_recall@20", "test/recall_at_20/visual": "visual_recall@20"}


@cache
def _table(number: int) -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / f"table{number}.tsv", sep="\t")


def paper_value(number: int, dataset: str, backbone: str, row: str, metric: str) -> float | None:
    """The paper's value for one cell of table ``number``, or None when the paper has none."""
    table = _table(number)
    row_col = "balancer" if "balancer" in table.columns else "variant"
    column, name = METRIC_NAMES.get(metric), paper_row(row)
    if column not in table.columns or name is None:
        return None
    hit = table[(table["dataset"] == dataset) & (table["backbone"] == BACKBONE_NAMES.get(backbone, backbone))
                & (table[row_col] == name)]
    return None if hit.empty or pd.isna(hit[column].iloc[0]) else float(hit[column].iloc[0])


def add_paper_columns(table: pd.DataFrame, number: int, metrics: tuple[str, ...]) -> pd.DataFrame:
    """``<metric>:paper`` beside each metric (NaN where the paper has no such cell, e.g. synthetic data)."""
    table = table.copy()
    for m in metrics:
        table[f"{m}:paper"] = [paper_value(number, r.dataset, r.backbone, r.balancer, m) for r in table.itertuples()]
    return table
