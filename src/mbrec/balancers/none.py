"""``balancer=none``: plain multimodal training (L = L_BPR + L2 [+ the backbone's auxiliary loss])."""

from mbrec.balancers.base import Balancer, register


@register("none")
class NoBalancer(Balancer):
    label = "base"
    paper_row = "base"
    row_order = 0
