"""No host-device synchronisation inside a training step, checked on CPU by proxy: every Python read of a
tensor (item, float, int, bool, tolist, numpy, cpu) is counted during one training epoch of every
backbone x balancer; with 4x as many steps the count per epoch must stay the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mbrec.backbones import BACKBONES
from mbrec.balancers import BALANCERS
from mbrec.data.sampling import BPRSampler
from mbrec.tracking import Tracker

from conftest import compose

READS = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu")


class SyncCounter:
    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(self_, *args, _original=original, **kwargs):
                self.count += 1
                return _original(self_, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _epoch_reads(backbone: str, balancer: str, batch_size: int, tmp_path: Path, monkeypatch) -> tuple[int, int]:
    from mbrec.experiment import Pipeline

    extra = {"ckd": ["balancer.gd_samples=16", "balancer.teachers.train.max_epochs=1"],
             "gb": ["balancer.estimate_epochs=1"]}.get(balancer, [])
    cfg = compose([f"backbone={backbone}", f"balancer={balancer}", f"train.batch_size={batch_size}",
                   "mlflow.enabled=false", *extra], tmp_path)
    pipe = Pipeline(cfg, tmp_path / "out")
    dataset = pipe.load_data()
    tracker = Tracker(False, "", "", "")
    model, optimizer, bal = pipe.build(dataset, tracker)  # teachers / estimates: before training
    trainer = pipe.make_trainer(dataset, tracker, "syncs")
    sampler = BPRSampler(dataset.train, batch_size, pipe.device, seed=0)
    model.train()
    with monkeypatch.context() as m:
        counter = SyncCounter(m)
        trainer._train_epoch(model, optimizer, bal, sampler, frozenset(), 0, trainer_result())
    return counter.count, sampler.steps_per_epoch


def trainer_result():
    from mbrec.training.trainer import FitResult

    return FitResult()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("balancer", sorted(n for n, c in BALANCERS.items() if c.__module__.startswith("mbrec.")))
def test_reads_per_epoch_do_not_grow_with_steps(backbone: str, balancer: str, tmp_path: Path, monkeypatch) -> None:
    few, steps_few = _epoch_reads(backbone, balancer, 64, tmp_path / "a", monkeypatch)
    many, steps_many = _epoch_reads(backbone, balancer, 16, tmp_path / "b", monkeypatch)
    assert steps_many >= 3 * steps_few
    assert many == few, f"{backbone}+{balancer}: {few} reads in {steps_few} steps, {many} in {steps_many}"
