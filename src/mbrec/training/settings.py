"""The ``train`` config group as the trainer sees it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mbrec.errors import ConfigError, one_of
from mbrec.training.metrics import METRIC_NAMES

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
#: the largest ranking cut-off a config may ask for before the data is read (then: at most the items)
MAX_TOPK = 100_000
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
    lr_decay: float = 1.0        # epoch e trains at lr * lr_decay^(e / lr_decay_epochs) (MMRec's schedule); 1: constant
    lr_decay_epochs: int = 50    # the epochs over which the lr is multiplied by lr_decay once

    @classmethod
    def from_config(cls, cfg: Any) -> TrainSettings:
        """The settings of a ``train`` config, every value checked (one ConfigError naming the key)."""
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        topk = known.get("topk", cls.topk)
        if isinstance(topk, (str, bytes)) or not hasattr(topk, "__iter__"):
            raise ConfigError(f"train.topk={topk!r}: use a list of cut-offs, e.g. train.topk=[10,20]")
        known["topk"] = tuple(_int_at_least(f"train.topk[{i}]", k, 1, MAX_TOPK) for i, k in enumerate(topk))
        if not known["topk"]:
            raise ConfigError("train.topk=[]: give at least one cut-off, e.g. train.topk=[10,20]")
        for key, low in (("batch_size", 1), ("max_epochs", 1), ("eval_every", 1), ("patience", 0),
                         ("eval_batch_size", 1), ("lr_decay_epochs", 1)):
            if key in known:
                known[key] = _int_at_least(f"train.{key}", known[key], low)
        if "lr_decay" in known:
            _check_number("train.lr_decay", known["lr_decay"], lambda v: v > 0,
                          "a number > 0 (1: a constant learning rate; MMRec's schedules use 0.96)")
        if "l2" in known:
            _check_number("train.l2", known["l2"], lambda v: v >= 0, "a finite number >= 0 (e.g. 1e-5)")
        s = cls(**known)
        one_of("train.precision", s.precision, PRECISIONS)
        one_of("train.metric_mode", s.metric_mode, METRIC_MODES)
        computed = {f"{m}@{k}" for m in METRIC_NAMES for k in s.topk}
        if s.metric.split("/")[0] not in computed:
            raise ConfigError(f"train.metric={s.metric!r} is not computed; use e.g. 'recall@{max(s.topk)}' "
                              "(K must be in train.topk)")
        return s

    def lr_factor(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (0-based) over the optimizer's initial one."""
        return float(self.lr_decay) ** (epoch / self.lr_decay_epochs)

    def better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` under :attr:`metric_mode`."""
        return value > best if self.metric_mode == "max" else value < best

    @property
    def worst(self) -> float:
        """The value every validation improves on (-inf for max, +inf for min)."""
        return float("-inf") if self.metric_mode == "max" else float("inf")


def _check_number(key: str, value: Any, ok: Callable[[float], bool], use: str) -> None:
    """A ConfigError naming ``key`` unless ``value`` is a finite real number (not a bool) that ``ok`` accepts."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{key}={value!r}: use {use}")


def _int_at_least(key: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], else a ConfigError naming ``key``."""
    ok = not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, float) and value.is_integer())
    if not ok or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" + (f" and <= {high:,}" if high is not None else "")
        raise ConfigError(f"{key}={value!r}: use {bound}")
    return int(value)


def check_topk(settings: TrainSettings, n_items: int) -> None:
    """Say so when a cut-off of ``train.topk`` is at least the dataset's items (checked once the data is
    read): the ranking stops at the items (nothing is allocated beyond them), so its recall is trivially 1.
    Absurd cut-offs are refused before the data (:data:`MAX_TOPK`)."""
    if max(settings.topk) >= n_items:
        log.warning("train.topk=%s: cut-offs >= the dataset's %d items rank every item (their recall is 1)",
                    list(settings.topk), n_items)
