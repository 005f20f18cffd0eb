"""The balancer registry, and how each balancer appears in the paper workflow (:class:`Row`). The
training interface itself (:class:`Balancer`, :class:`RunContext`) lives in ``mbrec.training.hooks``,
below both the trainer and the balancers; what only the Table 1 driver and the reports need stays here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mbrec.registry import Registry
from mbrec.training.hooks import Balancer, RunContext

BALANCERS: Registry[Balancer] = Registry("balancer")


@dataclass(frozen=True)
class Row:
    """A balancer's row in the paper's tables and its tuning study.

    ``label``: the row label in reports (default: the balancer's name); ``order``: its position (smaller
    first); ``paper_row``: its name in the paper's tables (None: the paper has no such row);
    ``search_space``: the balancer's own hyper-parameters its Table 1 study searches (besides the
    optimizer's and the backbone's): key -> values; ``study_settings(base_best)``: dotted overrides its
    study runs with, given the base row's tuned point (CKD: its teachers train at that point);
    ``trains_student``: False for a row whose balancer replaces the student (``replacement_model``, the
    teacher ensemble): the optimizer's and backbone's grids change nothing in it, so its study searches
    its own ``search_space`` only (none when that is empty)."""

    label: str = ""
    order: int = 100
    paper_row: str | None = None
    search_space: Mapping[str, list] = field(default_factory=dict)
    study_settings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    trains_student: bool = True

    def settings_for(self, base_best: Mapping[str, Any]) -> dict[str, Any]:
        return self.study_settings(base_best) if self.study_settings else {}


#: name -> its row (every registered balancer has one)
ROWS: dict[str, Row] = {}


def register(name: str, row: Row | None = None) -> Callable[[type[Balancer]], type[Balancer]]:
    """Class decorator: make the class selectable as ``balancer=<name>``, with its report/study ``row``."""
    add = BALANCERS.register(name)

    def deco(cls: type[Balancer]) -> type[Balancer]:
        add(cls)
        given = row or Row()
        ROWS[name] = dataclasses.replace(given, label=given.label or name, search_space=dict(given.search_space))
        return cls

    return deco


def build_balancer(cfg: Mapping[str, Any]) -> Balancer:
    """Build the balancer named ``cfg['name']`` with the rest of ``cfg`` as keyword arguments."""
    return BALANCERS.build(cfg)


def paper_rows() -> list[str]:
    """The registered balancers in their report order (every row Table 1 can have)."""
    return sorted(BALANCERS, key=lambda name: (ROWS[name].order, name))


def in_paper(name: str) -> bool:
    """Whether the balancer is one of the paper's rows (``Row.paper_row``), not one beyond the paper."""
    return name in ROWS and ROWS[name].paper_row is not None


__all__ = ["BALANCERS", "ROWS", "Balancer", "Row", "RunContext", "build_balancer", "in_paper", "paper_rows", "register"]
