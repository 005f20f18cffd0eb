"""``balancer=none``: plain multimodal training (L = L_BPR + L2 [+ the backbone's auxiliary loss])."""

from mbrec.balancers.base import Balancer, Row, register


@register("none", Row(label="base", order=0, paper_row="base"))
class NoBalancer(Balancer):
    """No balancing."""
