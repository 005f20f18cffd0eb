"""When a training run has diverged (docs/safety.md, "Divergence").

The rule looks at the epoch's mean of each logged loss term, after every training epoch:

* any term is NaN or infinite; or
* the mean BPR term exceeds ``BPR_LIMIT`` = 100 · ln 2 ≈ 69.3.

Why the BPR term: −ln σ(ŷ_ui − ŷ_uj) has a fixed scale whatever the backbone, balancer or ``train.l2``.
A scorer that cannot tell a positive from a negative gets ln 2 (every backbone starts near it), and
training only lowers it. A mean of 100 · ln 2 means the sampled negatives outscore the positives by about
69 on average: the scores have blown up, which only a far too large step does (e.g. Adam at lr 1 gives
~650 in its first epoch, at lr 1e6 ~1e14). The other terms (L2, balancer terms) have scales set by the
configuration, so only their finiteness is checked. The first epoch is no reference: at a diverging learning
rate it has already blown up.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from mbrec.errors import DivergedError

#: the epoch-mean BPR loss above which a run has diverged (100 x the loss of a random scorer)
BPR_LIMIT = 100 * math.log(2)


def check_divergence(desc: str, epoch: int, logs: Mapping[str, float], optimizer: torch.optim.Optimizer) -> None:
    """Raise :class:`DivergedError` if the epoch's mean loss terms ``logs`` break the rule above."""
    bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
    if bad:
        reason = f"non-finite {', '.join(bad)}"
    elif logs.get("loss/bpr", 0.0) > BPR_LIMIT:
        reason = f"mean BPR loss {logs['loss/bpr']:.3g} > {BPR_LIMIT:.1f} (100 x ln 2, a random scorer's)"
    else:
        return
    lrs = sorted({float(g["lr"]) for g in optimizer.param_groups if "lr" in g})
    lr = ", ".join(f"{v:g}" for v in lrs) or "?"
    teacher = " (teachers: balancer.teachers.optimizer.lr)" if desc.startswith("teacher") else ""
    raise DivergedError(f"{desc}: training diverged at epoch {epoch}: {reason}. "
                        f"Fix: lower optimizer.lr{teacher} (it was {lr})")
