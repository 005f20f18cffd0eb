"""The training loop: early stopping, best state restored, and a killed run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.errors import ConfigError
from mbrec.training.trainer import Trainer, TrainSettings


def _fit(ds, settings, checkpoint=None, seed=0):
    torch.manual_seed(seed)
    model = build_backbone({"name": "vbpr", "embedding_dim": 8}, ds)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(ds, settings, torch.device("cpu"), seed, checkpoint=checkpoint)
    return model, trainer.fit(model, opt, build_balancer({"name": "none"}))


def test_resume_after_a_kill_gives_the_same_run(tiny_dataset, tmp_path):
    s8 = TrainSettings(batch_size=16, max_epochs=8, eval_every=2, patience=100, topk=(5,), metric="recall@5")
    _, straight = _fit(tiny_dataset, s8)
    ckpt = tmp_path / "run.pt"
    s4 = TrainSettings(**{**s8.__dict__, "max_epochs": 4})
    _fit(tiny_dataset, s4, checkpoint=ckpt)  # "killed" after epoch 4: the checkpoint stays
    assert ckpt.is_file()
    model, resumed = _fit(tiny_dataset, s8, checkpoint=ckpt, seed=99)  # a different init is overwritten
    assert [h["epoch"] for h in resumed.history] == list(range(8))
    assert resumed.max_epochs_hit
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.best_value == straight.best_value
    for a, b in zip(resumed.history, straight.history):
        assert a["loss/bpr"] == b["loss/bpr"]


def test_corrupt_checkpoint_is_reported_and_ignored(tiny_dataset, tmp_path, caplog):
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"not a checkpoint")
    s = TrainSettings(batch_size=16, max_epochs=2, eval_every=1, patience=5, topk=(5,), metric="recall@5")
    _, fit = _fit(tiny_dataset, s, checkpoint=ckpt)
    assert "ignoring unusable checkpoint" in caplog.text
    assert len(fit.history) == 2
    assert fit.max_epochs_hit and not fit.stopped_early  # ended by the bound, not by early stopping


def test_early_stopping_and_best_state(tiny_dataset):
    s = TrainSettings(batch_size=16, max_epochs=200, eval_every=1, patience=2, topk=(5,), metric="recall@5")
    model, fit = _fit(tiny_dataset, s)
    assert fit.stopped_early and len(fit.history) < 200 and not fit.max_epochs_hit
    evals = [h["val/recall@5"] for h in fit.history]
    assert fit.best_value == max(evals) and evals.index(max(evals)) == fit.best_epoch
    # patience 2: stop at the 3rd evaluation after the best without improvement
    assert len(evals) - 1 - fit.best_epoch == 3
    # the restored model reproduces the best validation value
    from mbrec.training.evaluation import Evaluator

    again = Evaluator(tiny_dataset, (5,), torch.device("cpu")).evaluate(model, "valid")
    assert again["recall@5"] == fit.best_value


def test_unknown_metric_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="train.metric"):
        TrainSettings.from_config({"metric": "recall@50", "topk": [10, 20]})


def test_metric_mode_min_keeps_the_lowest_value(tiny_dataset):
    """``metric_mode: min`` keeps the epoch with the lowest validation metric (and stops on no decrease):
    the same fit as ``max`` (same seed, same losses), a different choice of best epoch."""
    base = dict(batch_size=16, max_epochs=6, eval_every=1, patience=100, topk=(5,), metric="recall@5")
    _, up = _fit(tiny_dataset, TrainSettings(**base))
    _, down = _fit(tiny_dataset, TrainSettings(**base, metric_mode="min"))
    values = [h["val/recall@5"] for h in up.history]
    assert [h["loss/bpr"] for h in down.history] == [h["loss/bpr"] for h in up.history]
    assert up.best_value == max(values) and down.best_value == min(values)
    assert down.best_epoch == values.index(min(values)) and up.best_epoch == values.index(max(values))


def test_callbacks_see_every_metric_and_validation_and_resume_their_state(tiny_dataset, tmp_path):
    """One callback list: after_backward per step, metrics per epoch and validation, on_validation after
    each validation (in order), and the callback's state restored from the checkpoint."""
    from mbrec.training.hooks import Callback

    class Recorder(Callback):
        name = "recorder"

        def __init__(self) -> None:
            self.backwards, self.metrics, self.validations, self.restored = 0, [], [], None

        def after_backward(self, model, epoch):
            self.backwards += 1

        def on_metrics(self, metrics, step):
            self.metrics.append((step, sorted(metrics)))

        def on_validation(self, value, epochs_trained):
            self.validations.append(epochs_trained)

        def state_dict(self):
            return {"validations": list(self.validations)}

        def load_state_dict(self, state):
            self.restored = state

    s = TrainSettings(batch_size=16, max_epochs=4, eval_every=2, patience=100, topk=(5,), metric="recall@5")
    rec = Recorder()
    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 8}, tiny_dataset)
    trainer = Trainer(tiny_dataset, s, torch.device("cpu"), 0, checkpoint=tmp_path / "c.pt")
    trainer.fit(model, torch.optim.Adam(model.parameters(), lr=1e-2), None, callbacks=[rec])
    from mbrec.data.sampling import BPRSampler

    steps = BPRSampler(tiny_dataset.train, 16, torch.device("cpu")).steps_per_epoch
    assert rec.backwards == 4 * steps and rec.validations == [2, 4]
    assert [step for step, _ in rec.metrics] == [0, 1, 1, 2, 3, 3]
    assert "loss/total" in rec.metrics[0][1] and "val/recall@5" in rec.metrics[2][1]
    again = Recorder()
    Trainer(tiny_dataset, TrainSettings(**{**s.__dict__, "max_epochs": 6}), torch.device("cpu"), 0,
            checkpoint=tmp_path / "c.pt").fit(model, torch.optim.Adam(model.parameters(), lr=1e-2), None, callbacks=[again])
    assert again.restored == {"validations": [2, 4]} and again.validations == [6]


def test_passes_per_step_follow_the_modalities():
    """CKD: the full pass, one uni-modal pass per modality and, past two modalities, one "m ablated" pass
    each for the weights; GB and OGM: one pass per head."""
    ckd = build_balancer({"name": "ckd"})
    assert ckd.passes_per_step(("a", "b")) == 3 and ckd.passes_per_step(("a", "b", "c")) == 7
    assert build_balancer({"name": "ckd", "reweight": "none"}).passes_per_step(("a", "b", "c")) == 4
    assert build_balancer({"name": "gb"}).passes_per_step(("a", "b", "c")) == 4
    assert build_balancer({"name": "none"}).passes_per_step(("a", "b", "c")) == 1


def test_a_backbone_can_supply_its_own_base_objective(tiny_dataset):
    """``Backbone.objective`` replaces BPR + L2 (a model trained without negatives); None keeps them."""
    from mbrec.backbones.vbpr import VBPR
    from mbrec.data.sampling import Batch
    from mbrec.training.objective import base_pass

    class NoNegatives(VBPR):
        def objective(self, p, l2):
            return {"align": (p.user - p.pos).pow(2).sum(1).mean()}

    torch.manual_seed(0)
    model = NoNegatives(tiny_dataset, embedding_dim=4)
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    own = base_pass(model, batch, l2=0.1)
    assert set(own.terms) == {"align"}
    assert torch.allclose(own.terms["align"], (own.user - own.pos).pow(2).sum(1).mean())
    assert set(base_pass(VBPR(tiny_dataset, embedding_dim=4), batch, l2=0.1).terms) == {"bpr", "l2"}


def test_lr_decay_follows_mmrecs_schedule_and_resumes_exactly(tiny_dataset, tmp_path):
    """train.lr_decay: epoch e trains at lr · decay^(e / lr_decay_epochs) (logged as ``lr``); a killed run
    resumes on the same schedule and gives the same run; decay 1 leaves the lr alone and logs nothing."""
    s6 = TrainSettings(batch_size=16, max_epochs=6, eval_every=2, patience=100, topk=(5,), metric="recall@5",
                       lr_decay=0.5, lr_decay_epochs=2)
    _, straight = _fit(tiny_dataset, s6)
    assert [h["lr"] for h in straight.history] == [1e-2 * 0.5 ** (e / 2) for e in range(6)]
    ckpt = tmp_path / "run.pt"
    _fit(tiny_dataset, TrainSettings(**{**s6.__dict__, "max_epochs": 2}), checkpoint=ckpt)
    _, resumed = _fit(tiny_dataset, s6, checkpoint=ckpt, seed=99)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in straight.history]
    assert [h["loss/bpr"] for h in resumed.history] == [h["loss/bpr"] for h in straight.history]
    _, constant = _fit(tiny_dataset, TrainSettings(**{**s6.__dict__, "lr_decay": 1.0}))
    assert "lr" not in constant.history[0]
    assert constant.history[-1]["loss/bpr"] != straight.history[-1]["loss/bpr"]


def test_lr_decay_settings_are_checked():
    for bad in ({"lr_decay": 0}, {"lr_decay": -0.5}, {"lr_decay": float("nan")}, {"lr_decay_epochs": 0}):
        with pytest.raises(ConfigError, match="train.lr_decay"):
            TrainSettings.from_config(bad)
