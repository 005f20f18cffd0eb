"""CKD as a balancer: the objective (eq. 19) assembled from its parts, the Table 3 switches, frozen
teachers and the teacher cache."""

from __future__ import annotations

import pytest
import torch

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.balancers import ckd_losses as eq
from mbrec.balancers.teachers import Teacher
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

from conftest import run_pipeline

CKD = {"name": "ckd", "lambda_kd": 0.5, "lambda_g": 2.0, "tau": 0.5, "gd_samples": 16}
#: the equations as the paper prints them (batch λ_m of eqs. 15-18, exact logs in eq. 12); the defaults
#: are the authors' code (``official`` for both)
PRINTED = {"reweight": "paper", "gd_form": "logsigmoid"}


def _setup(ds, **over):
    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, ds)
    with torch.no_grad():  # make the modality terms large enough that float32 rounding is negligible
        for p in model.preference.values():
            p.mul_(30)
    ckd = build_balancer({**CKD, **over})
    g = torch.Generator().manual_seed(1)
    ckd.teachers = {m: Teacher(m, torch.randn(ds.n_users, 12, generator=g), torch.randn(ds.n_items, 12, generator=g), {})
                    for m in ds.modalities}
    ckd.active_users = torch.arange(ds.n_users)
    ckd.n_items = ds.n_items
    ckd.generator = torch.Generator().manual_seed(5)
    batch = BPRSampler(ds.train, 8, torch.device("cpu"), seed=0).sample()
    return model, ckd, batch, base_pass(model, batch, 1e-3)


def _margin(model, users, i, j, keep):
    u, it = model(ablate=model.keep_only(keep))
    return (u[users] * (it[i] - it[j])).sum(1)


def test_eq19_objective_from_its_parts(tiny_dataset):
    model, ckd, batch, base = _setup(tiny_dataset, **PRINTED)
    total, logs = ckd.loss(model, base, 0)
    ckd.generator.manual_seed(5)  # replay the generic samples
    gen = ckd.generic_samples(torch.device("cpu"))
    t, v = "text", "visual"
    full = base.margin.detach()
    uni = {m: _margin(model, batch.users, batch.pos, batch.neg, m) for m in (t, v)}
    sd = {m: eq.specific_distillation(ckd.teachers[m].margin(batch.users, batch.pos, batch.neg), uni[m]).mean() for m in (t, v)}
    gd = {m: eq.generic_distillation(ckd.teachers[m].margin(*gen), _margin(model, *gen, m), 0.5).mean() for m in (t, v)}
    # ITE of text = full − (text ablated = visual-only pass); ρ over the teacher's margins
    rho = {m: max(float((full - uni[o]).detach().mean() / ckd.teachers[m].margin(batch.users, batch.pos, batch.neg).sum()), 1e-8)
           for m, o in ((t, v), (v, t))}
    lam = {m: 2 * (1 - rho[m] / (rho[t] + rho[v])) for m in (t, v)}  # eq. 18 at the authors' scale: Σλ = M = 2
    expected = sum(base.terms.values()) + 0.5 * sum(lam[m] * (2.0 * gd[m] + sd[m]) for m in (t, v))
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert logs["ckd/lambda/text"] == pytest.approx(lam[t], rel=1e-4, abs=1e-6)
    assert logs["ckd/rho/visual"] == pytest.approx(rho[v], rel=1e-3, abs=1e-9)
    assert logs["loss/sd/text"] == pytest.approx(float(sd[t].detach()), rel=1e-5)
    assert logs["loss/gd/visual"] == pytest.approx(float(gd[v].detach()), rel=1e-5)


def test_default_objective_is_the_authors_code_from_its_parts(tiny_dataset):
    """Default (reweight=official, gd_form=official): per-triple weights c^m = clamp(δ^m / Δs^m, 1e-8, 10),
    r^t = 2c^v / (c^t + c^v) on each triple's hinge, the GD term (log(σ + 1e-8)) times the batch mean of r^m."""
    model, ckd, batch, base = _setup(tiny_dataset)
    assert (ckd.reweight, ckd.gd_form) == ("official", "official")
    total, logs = ckd.loss(model, base, 0)
    ckd.generator.manual_seed(5)
    gen = ckd.generic_samples(torch.device("cpu"))
    t, v = "text", "visual"
    full = base.margin.detach()
    uni = {m: _margin(model, batch.users, batch.pos, batch.neg, m) for m in (t, v)}
    c = {m: torch.clamp((full - uni[o]).detach() / uni[m].detach(), 1e-8, 10.0) for m, o in ((t, v), (v, t))}
    r = {t: 2 * c[v] / (c[t] + c[v]), v: 2 * c[t] / (c[t] + c[v])}
    sd = {m: eq.specific_distillation(ckd.teachers[m].margin(batch.users, batch.pos, batch.neg), uni[m]) for m in (t, v)}
    pt = {m: torch.sigmoid(ckd.teachers[m].margin(*gen) / 0.5) for m in (t, v)}
    ps = {m: torch.sigmoid(_margin(model, *gen, m) / 0.5) for m in (t, v)}
    gd = {m: -(pt[m] * torch.log(ps[m] + 1e-8) + (1 - pt[m]) * torch.log(1 - ps[m] + 1e-8)).mean() for m in (t, v)}
    expected = sum(base.terms.values()) + 0.5 * sum((r[m] * sd[m]).mean() + 2.0 * gd[m] * r[m].mean() for m in (t, v))
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert logs["ckd/lambda/text"] == pytest.approx(float(r[t].mean()), rel=1e-4)
    assert logs["ckd/rho/visual"] == pytest.approx(float(c[v].mean()), rel=1e-4)  # Figure 1's ρ panel


def test_constructor_defaults_are_the_yaml_defaults():
    """conf/balancer/<name>.yaml and the class's constructor state the same defaults (one source)."""
    import inspect

    import yaml

    from mbrec.balancers import BALANCERS
    from mbrec.config import conf_dir

    for name, cls in BALANCERS.items():
        path = conf_dir() / "balancer" / f"{name}.yaml"
        if not path.is_file():
            continue
        given = yaml.safe_load(path.read_text())
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name in given and not isinstance(given[p.name], dict):
                assert given[p.name] == p.default, f"{path.name}: {p.name}={given[p.name]!r}, constructor {p.default!r}"


def _total(ds, **over):
    model, ckd, _, base = _setup(ds, **over)
    total, logs = ckd.loss(model, base, 0)
    return float(total.detach()), {k: float(v) for k, v in logs.items()}, float(sum(base.terms.values()).detach())


def test_without_generic_distillation_drops_exactly_the_gd_term(tiny_dataset):
    total, logs, base = _total(tiny_dataset, lambda_g=0.0, **PRINTED)
    expected = base + 0.5 * sum(logs[f"ckd/lambda/{m}"] * logs[f"loss/sd/{m}"] for m in ("text", "visual"))
    assert total == pytest.approx(expected, rel=1e-5)


def test_without_reweight_all_lambdas_are_one(tiny_dataset):
    total, logs, base = _total(tiny_dataset, reweight="none")
    assert logs["ckd/lambda/text"] == logs["ckd/lambda/visual"] == 1.0
    assert "ckd/rho/text" not in logs
    expected = base + 0.5 * sum(2.0 * logs[f"loss/gd/{m}"] + logs[f"loss/sd/{m}"] for m in ("text", "visual"))
    assert total == pytest.approx(expected, rel=1e-5)


def test_specific_loss_switch_changes_only_the_specific_term(tiny_dataset):
    _, hinge, _ = _total(tiny_dataset)
    for kind in ("kl", "mse"):
        _, other, _ = _total(tiny_dataset, specific_loss=kind)
        assert other["loss/gd/text"] == pytest.approx(hinge["loss/gd/text"])
        assert other["ckd/lambda/text"] == pytest.approx(hinge["ckd/lambda/text"])
        assert other["loss/sd/text"] != pytest.approx(hinge["loss/sd/text"])


def test_official_reweight_weights_sum_to_two(tiny_dataset):
    _, logs, _ = _total(tiny_dataset, reweight="official")
    assert logs["ckd/lambda/text"] + logs["ckd/lambda/visual"] == pytest.approx(2.0, rel=1e-5)


def test_no_gradient_flows_into_the_weights_or_teachers(tiny_dataset):
    model, ckd, _, base = _setup(tiny_dataset)
    total, _ = ckd.loss(model, base, 0)
    total.backward()
    assert all(not t.user.requires_grad and t.item.requires_grad is False for t in ckd.teachers.values())
    assert model.user_id.grad is not None


def test_bad_switches_are_rejected():
    with pytest.raises(ValueError, match="reweight"):
        build_balancer({"name": "ckd", "reweight": "both"})
    with pytest.raises(ValueError, match="rho_denominator"):
        build_balancer({"name": "ckd", "rho_denominator": "x"})


# ---- end to end: teachers trained, cached, reused, frozen ---------------------------------------


@pytest.mark.slow
def test_ckd_end_to_end_with_teacher_cache(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    fast = ["balancer.gd_samples=32", "balancer.teachers.train.max_epochs=2"]
    value, res = run_pipeline(["balancer=ckd", *fast], tmp_path)
    teachers = res["balancer"]["teachers"]
    assert set(teachers) == {"text", "visual"}
    assert all(not t["cached"] for t in teachers.values())
    assert all(0 <= t["test"]["recall@20"] <= 1 for t in teachers.values())
    assert "loss/sd/text" in res["history"][0] and "ckd/lambda/visual" in res["history"][0]

    # a second run (another λ_kd: not part of the teachers' key) reuses both teachers and says so
    caplog.clear()
    _, res2 = run_pipeline(["balancer=ckd", *fast, "balancer.lambda_kd=0.1"], tmp_path)
    assert all(t["cached"] for t in res2["balancer"]["teachers"].values())
    assert "reusing cached" in caplog.text
    assert res2["balancer"]["teachers"]["text"]["test"] == teachers["text"]["test"]

    # a keyed field (the training L2) changes -> miss; retrain=true -> retrained
    _, res3 = run_pipeline(["balancer=ckd", *fast, "train.l2=1e-3"], tmp_path)
    assert not any(t["cached"] for t in res3["balancer"]["teachers"].values())
    _, res4 = run_pipeline(["balancer=ckd", *fast, "balancer.teachers.retrain=true"], tmp_path)
    assert not any(t["cached"] for t in res4["balancer"]["teachers"].values())

    # a corrupt entry is reported and rebuilt
    path = res4["balancer"]["teachers"]["visual"]["cache_path"]
    with open(path, "wb") as f:
        f.write(b"garbage")
    caplog.clear()
    _, res5 = run_pipeline(["balancer=ckd", *fast], tmp_path)
    assert "corrupt or incompatible" in caplog.text
    assert res5["balancer"]["teachers"]["visual"]["cached"] is False
    assert res5["balancer"]["teachers"]["text"]["cached"] is True


def test_teachers_stay_frozen_during_student_training(tmp_path, tiny_dataset):
    """Teacher representations are identical before and after the student trains, and the cached
    teacher state still reproduces them."""
    from mbrec.balancers.teachers import load_or_train
    from mbrec.experiment import Pipeline

    from conftest import compose

    cfg = compose(["balancer=ckd", "balancer.gd_samples=16", "mlflow.enabled=false"], tmp_path)
    pipe = Pipeline(cfg, tmp_path / "out")
    from mbrec.services.tracking import Tracker

    tracker = Tracker(False, "", "", "")
    ctx = pipe.context(tiny_dataset, tracker)
    student = build_backbone(pipe.resolved["backbone"], tiny_dataset)
    ckd = build_balancer(pipe.resolved["balancer"])
    ckd.prepare(ctx, student)
    before = {m: (t.user.clone(), t.item.clone()) for m, t in ckd.teachers.items()}
    trainer = pipe.trainer(tiny_dataset, "student")
    trainer.fit(student, torch.optim.Adam(student.parameters(), lr=1e-2), ckd)
    for m, t in ckd.teachers.items():
        assert torch.equal(t.user, before[m][0]) and torch.equal(t.item, before[m][1])
        again = load_or_train(ctx, m, {})
        assert again.info["cached"] and torch.equal(again.user, t.user)
