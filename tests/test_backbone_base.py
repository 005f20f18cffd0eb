"""The Backbone base class: forward → encode, features, mean-ablated inputs, and the minimal model of
docs/backbones.md#adding-a-backbone (run from the page, so the example stays true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mbrec.backbones import BACKBONES
from mbrec.backbones.base import Backbone, check_choice, embedding_table, rows

DOC = Path(__file__).resolve().parents[1] / "docs/backbones.md"


def _doc_example() -> str:
    section = DOC.read_text().split("## Adding a backbone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class Tiny(Backbone):
    """Unregistered: one preference table and one projection per modality, late fusion."""

    uses_features = True

    def __init__(self, dataset, d: int = 4, trainable: bool = False) -> None:
        super().__init__(dataset)
        self.user_id = embedding_table(self.n_users, d)
        if trainable:
            self.train_features()
        self.preference = torch.nn.ParameterDict({m: embedding_table(self.n_users, d) for m in self.modalities})
        self.projection = torch.nn.ModuleDict({m: torch.nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        self.seen: list = []

    def encode(self, users, items, ablate):
        self.seen.append(ablate)
        u = torch.cat([self.user_input(self.preference[m], users, m in ablate) for m in self.modalities], 1)
        i = torch.cat([self.item_input(m, ablate, items, self.projection[m]) for m in self.modalities], 1)
        return u, i


def test_forward_checks_the_ablation_and_passes_a_frozenset(tiny_dataset):
    model = Tiny(tiny_dataset)
    m = tiny_dataset.modalities[0]
    model(ablate=[m])
    assert model.seen == [frozenset({m})]
    with pytest.raises(ValueError, match="cannot ablate"):
        model(ablate=["smell"])


def test_ablated_inputs_are_the_means(tiny_dataset):
    torch.manual_seed(0)
    model = Tiny(tiny_dataset)
    users, items = torch.tensor([2, 0, 2]), torch.tensor([5, 1])
    for m in tiny_dataset.modalities:
        ablate = frozenset({m})
        feat = torch.tensor(tiny_dataset.features[m], dtype=torch.float32)
        torch.testing.assert_close(model.modality_input(m, ablate), feat.mean(0, keepdim=True))
        torch.testing.assert_close(model.modality_input(m, frozenset(), items), feat[items])
        ablated = model.item_input(m, ablate, items, model.projection[m])
        assert ablated.shape == (2, 4) and torch.equal(ablated[0], ablated[1])
        torch.testing.assert_close(ablated[0], model.projection[m](feat.mean(0)))
        theta = model.preference[m]
        u = model.user_input(theta, users, True)
        assert u.shape == (3, 4)
        torch.testing.assert_close(u, theta.mean(0, keepdim=True).expand(3, -1))
        assert torch.equal(model.user_input(theta, users, False), rows(theta, users))
        assert model.user_input(theta, None, True).shape == theta.shape


def test_features_are_constant_buffers_or_trainable_parameters(tiny_dataset):
    constant = Tiny(tiny_dataset)
    assert not any(k.startswith(("feat", "features")) for k in constant.state_dict())
    assert constant.feature_dims == {m: f.shape[1] for m, f in tiny_dataset.features.items()}
    trainable = Tiny(tiny_dataset, trainable=True)
    names = [n for n, _ in trainable.named_parameters()]
    assert names[:1 + len(tiny_dataset.modalities)] == ["user_id", *(f"features.{m}" for m in tiny_dataset.modalities)]
    assert not any(n.startswith("feat_") for n, _ in trainable.named_buffers())
    m = tiny_dataset.modalities[0]
    trainable.feature_mean(m).sum().backward()  # the ablated input follows the trained table
    assert trainable.features[m].grad is not None


def test_a_model_without_features_has_none(tiny_dataset):
    plain = Backbone(tiny_dataset)
    assert plain.feature_dims == {} and not list(plain.buffers())
    with pytest.raises(NotImplementedError):
        plain()


def test_check_choice():
    check_choice("fusion", "soft", ("soft", "hard"))
    with pytest.raises(ValueError, match=r"backbone.fusion='medium': use one of \['soft', 'hard'\]"):
        check_choice("fusion", "medium", (x for x in ("soft", "hard")))


def test_the_documented_minimal_model_works(tiny_dataset):
    namespace: dict = {}
    try:
        exec(compile(_doc_example(), str(DOC), "exec"), namespace)
        model = BACKBONES["mymodel"](tiny_dataset, embedding_dim=8)
        assert model.name == "mymodel"
        for ablate in [(), *[(m,) for m in tiny_dataset.modalities]]:
            u, i = model(ablate=ablate)
            assert u.shape == (tiny_dataset.n_users, 8 * (1 + len(tiny_dataset.modalities))) and u.shape[1] == i.shape[1]
        users, items = torch.tensor([3, 0]), torch.tensor([7, 7, 1])
        u_sub, i_sub = model(users, items)
        u_all, i_all = model()
        torch.testing.assert_close(u_sub, u_all[users])
        torch.testing.assert_close(i_sub, i_all[items])
        assert set(model.modality_parameters()) == set(tiny_dataset.modalities)
    finally:
        BACKBONES.pop("mymodel", None)


@pytest.mark.parametrize("x_grad", [False, True])
def test_project_has_autograds_values_and_gradients(x_grad):
    """``project`` (x @ w with the weight's gradient computed as (gradᵀ x)ᵀ) equals plain autograd."""
    from mbrec.backbones.base import project

    g = torch.Generator().manual_seed(0)
    x = torch.randn(13, 6, generator=g, requires_grad=x_grad)
    w = torch.randn(6, 3, generator=g, requires_grad=True)
    up = torch.randn(13, 3, generator=g)
    out = project(x, w)
    torch.testing.assert_close(out, x @ w)
    got = torch.autograd.grad(out, [x, w] if x_grad else [w], up)
    want = torch.autograd.grad(x @ w, [x, w] if x_grad else [w], up)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = project(x, w)
    assert out.dtype == torch.bfloat16
    (gw,) = torch.autograd.grad(out.float().sum(), [w])
    assert gw.dtype == w.dtype and gw.shape == w.shape
