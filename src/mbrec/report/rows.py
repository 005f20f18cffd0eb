"""What a report row is called and where it goes, from the balancer registry.

A balancer registers its :class:`mbrec.balancers.Row`: ``label`` (the row label, default its registered
name), ``order`` (smaller first) and ``paper_row`` (its row name in the paper's tables, or None). The only rows that are
not balancers belong to the paper's method and live in :mod:`mbrec.report.ckd_rows`.
"""

from __future__ import annotations

from typing import NamedTuple

from mbrec.defaults import BASE_ROW
from mbrec.report.ckd_rows import variant_row

#: the row every other row is compared with (Tables 1 and 2)
BASE = BASE_ROW
#: how the paper writes the backbones' names (the base row of each backbone carries it)
BACKBONE_NAMES = {"vbpr": "VBPR", "deepstyle": "DeepStyle", "mmgcn": "MMGCN", "grcn": "GRCN", "egogcn": "EgoGCN",
                  "mgcn": "MGCN"}


class Row(NamedTuple):
    label: str
    order: int
    paper_row: str | None


def row_info(name: str) -> Row:
    """Label, order and paper row of a row key: a registered balancer, a CKD-specific row, or (a run
    of a balancer that is no longer registered) its name, placed last."""
    from mbrec.balancers import ROWS

    row = ROWS.get(name)
    if row is not None:
        return Row(row.label, row.order, row.paper_row)
    extra = variant_row(name)
    if extra is not None:
        return Row(*extra)
    return Row(name, 1000, None)


def label(name: str) -> str:
    """The row label of a balancer (``gb`` -> ``+GB``)."""
    return row_info(name).label


def order_key(name: str) -> tuple[int, str]:
    """Sort key: the row's ``order``, then the name."""
    return row_info(name).order, name


def paper_row(name: str) -> str | None:
    """The row's name in the paper's tables, or None when the paper has no such row."""
    return row_info(name).paper_row
