"""The training loop: early stopping, best state restored, and a killed run resumes exactly."""

from __future__ import annotations

import torch

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
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


def test_early_stopping_and_best_state(tiny_dataset):
    s = TrainSettings(batch_size=16, max_epochs=200, eval_every=1, patience=2, topk=(5,), metric="recall@5")
    model, fit = _fit(tiny_dataset, s)
    assert fit.stopped_early and len(fit.history) < 200
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
