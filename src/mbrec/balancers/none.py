"""``balancer=none``: plain multimodal training (L = L_BPR + L2 [+ the backbone's auxiliary loss])."""

from mbrec.balancers.base import Balancer, register


@register("none")
class NoBalancer(Balancer):
    label, paper_row, row_order = "base", "base", 0
