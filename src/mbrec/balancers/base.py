"""The balancer registry. The interface itself (:class:`Balancer`, :class:`RunContext`) lives in
``mbrec.training.hooks``, below both the trainer and the balancers."""

from __future__ import annotations

from typing import Any, Mapping

from mbrec.registry import Registry
from mbrec.training.hooks import Balancer, RunContext

BALANCERS: Registry[Balancer] = Registry("balancer")
register = BALANCERS.register


def build_balancer(cfg: Mapping[str, Any]) -> Balancer:
    """Build the balancer named ``cfg['name']`` with the rest of ``cfg`` as keyword arguments."""
    return BALANCERS.build(cfg)


def paper_rows() -> list[str]:
    """The registered balancers in their report order (Table 1's rows)."""
    return sorted(BALANCERS, key=lambda name: (BALANCERS[name].row_order, name))


__all__ = ["BALANCERS", "Balancer", "RunContext", "build_balancer", "paper_rows", "register"]
