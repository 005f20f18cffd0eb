"""Balancers: one file per method, registered by name with ``@register("<name>")``.

Every module in this package is imported here, so a new balancer is one file plus one
``conf/balancer/<name>.yaml``.
"""

import importlib
import pkgutil

from mbrec.balancers.base import (
    BALANCERS,
    ROWS,
    Balancer,
    Row,
    RunContext,
    build_balancer,
    in_paper,
    paper_rows,
    register,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["BALANCERS", "ROWS", "Balancer", "Row", "RunContext", "build_balancer", "in_paper", "paper_rows", "register"]
