"""The paper's printed values (package data ``report/paper/table*.tsv``), looked up by our row names."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent / "paper"
BACKBONE_NAMES = {"vbpr": "VBPR", "deepstyle": "DeepStyle", "mmgcn": "MMGCN", "grcn": "GRCN",
                  "egogcn": "EgoGCN", "mgcn": "MGCN"}
ROW_NAMES = {"none": "base", "gb": "GB", "ogm": "OGM", "ckd": "CKD", "uni-teacher": "uni-teacher",
             "ckd w/o Gen.": "w/o. Gen.", "ckd w/o re-weight": "w/o. re-weight",
             "ckd repl. KL": "repl. KL-divergence Loss", "ckd repl. MSE": "repl. MSE Loss"}
#: our metric column -> the paper table's column
#: (the paper's NDCG is the LATTICE code's variant: compared with our ndcg_lattice, not the standard NDCG)
METRIC_NAMES = {"test/recall_at_20": "recall@20", "test/ndcg_lattice_at_20": "ndcg@20", "test/precision_at_20": "precision@20",
                "test/recall_at_20/text": "textual_recall@20", "test/recall_at_20/visual": "visual_recall@20"}


@lru_cache(maxsize=None)
def _table(number: int) -> pd.DataFrame:
    return pd.read_csv(PAPER_DIR / f"table{number}.tsv", sep="\t")


def paper_value(number: int, dataset: str, backbone: str, row: str, metric: str) -> float | None:
    """The paper's value for one cell of table ``number``, or None when the paper has none."""
    table = _table(number)
    row_col = "balancer" if "balancer" in table.columns else "variant"
    column = METRIC_NAMES.get(metric)
    if column not in table.columns:
        return None
    hit = table[(table["dataset"] == dataset) & (table["backbone"] == BACKBONE_NAMES.get(backbone, backbone))
                & (table[row_col] == ROW_NAMES.get(row, row))]
    return None if hit.empty or pd.isna(hit[column].iloc[0]) else float(hit[column].iloc[0])


def add_paper_columns(table: pd.DataFrame, number: int, metrics: tuple[str, ...]) -> pd.DataFrame:
    """``<metric>:paper`` beside each metric (NaN where the paper has no such cell, e.g. synthetic data)."""
    table = table.copy()
    for m in metrics:
        table[f"{m}:paper"] = [paper_value(number, r.dataset, r.backbone, r.balancer, m) for r in table.itertuples()]
    return table
