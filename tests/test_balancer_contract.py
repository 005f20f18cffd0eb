"""The contract every registered balancer meets with every backbone (runs automatically for each new
one): it trains end to end, logs only finite values, round-trips its state, and never synchronises with
the device inside a training step — checked on CPU by proxy: every Python read of a tensor (item,
float, int, bool, tolist, numpy, cpu) is counted during a training epoch, and with 4x as many steps the
count per epoch must stay the same. And the proof that a new balancer is one file + one YAML all the
way: a toy balancer registered here passes the contract, and the Table 1 driver and the row order
pick it up without any other edit."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mbrec.backbones import BACKBONES
from mbrec.balancers import BALANCERS, ROWS, Balancer, Row, paper_rows, register
from mbrec.data.sampling import BPRSampler
from mbrec.services.tracking import Tracker
from mbrec.training.syncs import SyncCount
from mbrec.training.trainer import FitResult

from conftest import CONF_DIR, compose, slow_except


@register("toy", Row(label="+Toy", order=40))
class ToyBalancer(Balancer):
    """Scales the base loss; logs its weight. Lives in this test file only."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight, self.steps = float(weight), 0

    def loss(self, model, base, epoch):
        self.steps += 1
        return self.weight * sum(base.terms.values()), {"toy/weight": torch.tensor(self.weight)}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])


def _option(name: str) -> str:
    return f"balancer=schema_{name}" if name == "toy" else f"balancer={name}"  # toy has no YAML in conf/


# fast tier: every balancer on vbpr, none and ckd on every backbone; the other pairs in make test-full
@pytest.mark.parametrize("balancer, backbone", slow_except(
    [(bal, bb) for bal in sorted(BALANCERS) for bb in sorted(BACKBONES)],
    fast={(bal, bb) for bal in BALANCERS for bb in BACKBONES if bal in ("none", "ckd") or bb == "vbpr"}))
def test_balancer_trains_with_every_backbone(balancer: str, backbone: str, tmp_path: Path) -> None:
    from mbrec.experiment import Pipeline

    extra = ["balancer.gd_samples=16"] if balancer == "ckd" else []
    extra += ["balancer.teachers.train.max_epochs=1"] if balancer in ("ckd", "umt", "ensemble") else []
    extra += ["balancer.estimate_epochs=1"] if balancer == "gb" else []
    cfg = compose([f"backbone={backbone}", _option(balancer), "train.max_epochs=1", "mlflow.enabled=false", *extra],
                  tmp_path)
    pipe = Pipeline(cfg, tmp_path / "out")
    dataset = pipe.load_data()
    tracker = Tracker(False, "", "", "")
    model, optimizer, bal = pipe.build(dataset, tracker)
    assert isinstance(bal, BALANCERS[balancer])
    assert (bal.replacement_model() is None) == ROWS[balancer].trains_student  # the Table 1 driver relies on it
    trainer = pipe.trainer(dataset, "contract")
    if bal.replacement_model() is not None:  # a balancer that trains no student (the teacher ensemble)
        _check_replacement(bal, pipe, dataset, tracker, trainer, cfg)
        return
    reads = []
    for batch_size in (64, 16):  # the second epoch has >= 3x the steps
        sampler = BPRSampler(dataset.train, batch_size, pipe.device, seed=0)
        with SyncCount(pipe.device) as counter:
            trainer._train_epoch(model, optimizer, bal, [bal], sampler, frozenset(), 0, FitResult())
        reads.append((counter.count, sampler.steps_per_epoch))
    assert reads[1][1] >= 3 * reads[0][1] and reads[1][0] == reads[0][0], f"(reads, steps) per epoch: {reads}"
    fit = trainer.fit(model, optimizer, bal)
    values = [v for record in fit.history for k, v in record.items() if k != "epoch"]
    assert values and all(math.isfinite(v) for v in values)
    # its state survives a checkpoint round trip that loads tensors and plain containers only
    buffer = io.BytesIO()
    torch.save(bal.state_dict(), buffer)
    buffer.seek(0)
    again = BALANCERS.build(OmegaConf.to_container(cfg.balancer, resolve=True))
    again.prepare(pipe.context(dataset, tracker), model)  # as a resumed run does before loading its checkpoint
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert _equal(again.state_dict(), bal.state_dict())


def _check_replacement(bal, pipe, dataset, tracker, trainer, cfg) -> None:
    """The contract of a balancer whose ``replacement_model()`` replaces the student: there is no training
    step (so no sync or loss check); instead the replacement is a Backbone of the dataset's modalities
    whose full and m-only passes score every (user, item) finitely, the run evaluates it as a fit of 0
    epochs with finite validation metrics (overall and per modality), and a rebuilt balancer (a resumed
    run prepares again) gives the same model and state."""
    from mbrec.backbones import Backbone

    replacement = bal.replacement_model()
    assert isinstance(replacement, Backbone) and replacement.modalities == dataset.modalities
    for ablate in ({}, *({m for m in dataset.modalities if m != keep} for keep in dataset.modalities)):
        u, i = replacement(ablate=ablate)
        assert u.shape[0] == dataset.n_users and i.shape[0] == dataset.n_items and torch.isfinite(u @ i.T).all()
    fit = trainer.evaluate_only(replacement)
    assert fit.epoch_seconds == [] and fit.best_epoch == -1 and not fit.max_epochs_hit
    assert {f"recall@20/{m}" for m in dataset.modalities} <= set(fit.best_valid)
    assert all(math.isfinite(v) for v in fit.best_valid.values())
    again = BALANCERS.build(OmegaConf.to_container(cfg.balancer, resolve=True))
    again.prepare(pipe.context(dataset, tracker), replacement)
    assert _equal(again.replacement_model().state_dict(), replacement.state_dict())
    assert _equal(again.state_dict(), bal.state_dict())


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a.cpu(), b.cpu())
    return a == b


def test_toy_balancer_joins_the_paper_workflow(tmp_path: Path, monkeypatch) -> None:
    """Registered + one YAML: it is a Table 1 row (after the paper's four), and the driver tunes it."""
    from mbrec.sweep import table1

    assert paper_rows()[:4] == ["none", "gb", "ogm", "ckd"] and "toy" in paper_rows()
    assert ROWS["toy"].label == "+Toy" and ROWS["toy"].paper_row is None
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "balancer" / "toy.yaml").write_text("defaults:\n  - schema_toy\n  - _self_\nname: toy\nweight: 0.5\n")
    monkeypatch.setattr(table1, "conf_dir", lambda: conf)
    calls: list[list[str]] = []

    def fake_mbrec(args: list[str]) -> None:
        calls.append(args)
        if args[1].startswith("hparams_search="):
            sweep_dir = Path(next(a for a in args if a.startswith("hydra.sweep.dir=")).split("=", 1)[1])
            sweep_dir.mkdir(parents=True, exist_ok=True)  # the driver may have made it (budget points)
            (sweep_dir / "optimization_results.yaml").write_text("best_params:\n  optimizer.lr: 0.005\nbest_value: 0.3\n")

    monkeypatch.setattr(table1, "_mbrec", fake_mbrec)
    rows = [b for b in paper_rows() if ROWS[b].trains_student]  # every row with something to tune
    table1.main(["table1", "--smoke", "--seeds", "0", "--root", str(tmp_path / "runs"), "--balancers", ",".join(rows)])
    tuned_rows = [next(a for a in c if a.startswith("balancer=")) for c in calls[:-1]]
    assert tuned_rows == [f"balancer={b}" for b in rows] and "balancer=toy" in tuned_rows
    assert f"balancer={','.join(rows)}" in calls[-1]
