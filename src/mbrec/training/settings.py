"""The ``train`` config group as the trainer sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mbrec.errors import ConfigError, one_of
from mbrec.training.metrics import METRIC_NAMES

PRECISIONS = ("fp32", "bf16")
METRIC_MODES = ("max", "min")


@dataclass
class TrainSettings:
    # The ``train`` config keys: defaults and descriptions (``python -m mbrec --help`` shows these comments).
    batch_size: int = 1024       # users per step (distinct, uniform), one positive and one negative each
    max_epochs: int = 1000       # upper bound; early stopping usually ends a run first
    eval_every: int = 5          # epochs between validations (CKD code: 5)
    patience: int = 10           # validations without improvement before stopping (CKD code: 10)
    topk: tuple[int, ...] = (10, 20)  # the K of every ranking metric (recall, ndcg, precision @K)
    metric: str = "recall@20"    # early stopping and sweep objective; any <metric>@<K> with K in topk
    metric_mode: str = "max"     # max | min: whether a higher or a lower metric is better
    l2: float = 1e-5             # coefficient of ½(‖U_b‖²+‖I_b‖²+‖J_b‖²)/B on the batch's representations
    eval_batch_size: int = 1024  # users per ranking batch (fastest on a 2-core CPU; raise it on a GPU)
    resume: bool = True          # checkpoint after each validation; re-running the same config resumes
    compile: bool = False        # torch.compile the training passes (CPU: needs a C++ compiler; pays on GPU)
    precision: str = "fp32"      # fp32 | bf16: autocast of the training forward passes (numbers change)
    tf32: bool = True            # CUDA only: TF32 matmuls (false: exact fp32)

    @classmethod
    def from_config(cls, cfg: Any) -> TrainSettings:
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        known["topk"] = tuple(int(k) for k in known.get("topk", cls.topk))
        s = cls(**known)
        one_of("train.precision", s.precision, PRECISIONS)
        one_of("train.metric_mode", s.metric_mode, METRIC_MODES)
        computed = {f"{m}@{k}" for m in METRIC_NAMES for k in s.topk}
        if s.metric.split("/")[0] not in computed:
            raise ConfigError(f"train.metric={s.metric!r} is not computed; use e.g. 'recall@{max(s.topk)}' "
                              "(K must be in train.topk)")
        return s

    def better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` under :attr:`metric_mode`."""
        return value > best if self.metric_mode == "max" else value < best

    @property
    def worst(self) -> float:
        """The value every validation improves on (-inf for max, +inf for min)."""
        return float("-inf") if self.metric_mode == "max" else float("inf")
