"""DeepStyle: the category subtraction, the per-item fallback, the paper's shared-user form."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from mbrec.backbones import build_backbone

from conftest import run_pipeline


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread: these tensors are tiny, and two threads spin-wait badly on a shared CPU."""
    torch.set_num_threads(1)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_backbone({"name": "deepstyle", "embedding_dim": 4, **cfg}, ds)


def _feat(ds, m):
    return torch.from_numpy(ds.features[m].copy())


def test_item_repr_is_id_then_style_minus_category_in_visual_only(tiny_dataset):
    m = _model(tiny_dataset)
    _, i = m()
    cats = torch.from_numpy(tiny_dataset.item_categories.copy())
    blocks = dict(zip(["id", *tiny_dataset.modalities], i.split(4, dim=1)))
    torch.testing.assert_close(blocks["id"], m.item_id)
    torch.testing.assert_close(blocks["text"], m.style["text"](_feat(tiny_dataset, "text")))
    # the synthetic categories are 0..C-1 already, so the dense index is the category itself
    visual = m.style["visual"](_feat(tiny_dataset, "visual")) - m.category["visual"][cats]
    torch.testing.assert_close(blocks["visual"], visual)
    assert set(m.category) == {"visual"}


def test_items_of_one_category_share_the_category_vector_and_get_its_gradient(tiny_dataset):
    m = _model(tiny_dataset)
    cats = tiny_dataset.item_categories
    assert m.category["visual"].shape[0] == len(set(cats.tolist()))
    items = torch.nonzero(torch.from_numpy(cats == cats[0])).flatten()[:2]
    assert items.numel() == 2
    _, i = m(items=items)
    i[:, -4:].sum().backward()  # the visual block (modalities are text, visual)
    grad = m.category["visual"].grad
    torch.testing.assert_close(grad[cats[0]], torch.full((4,), -2.0))  # −l_c once per item
    assert grad.abs().sum() == grad[cats[0]].abs().sum()


def test_without_categories_falls_back_to_per_item_vectors_and_says_so(tiny_dataset, caplog):
    ds = dataclasses.replace(tiny_dataset, item_categories=None)
    with caplog.at_level(logging.WARNING, logger="mbrec.backbones.deepstyle"):
        m = _model(ds)
    assert "no item_categories" in caplog.text
    assert m.category["visual"].shape[0] == ds.n_items


def test_text_branch_can_have_its_own_category_table(tiny_dataset):
    m = _model(tiny_dataset, category_modalities=["visual", "text"])
    assert set(m.modality_parameters()["text"]) >= {m.category["text"]}
    assert m.category["text"] is not m.category["visual"]


def test_ablation_keeps_the_category_vectors(tiny_dataset):
    m = _model(tiny_dataset)
    _, i = m(ablate={"visual"})
    cats = torch.from_numpy(tiny_dataset.item_categories.copy())
    mean = _feat(tiny_dataset, "visual").mean(0, keepdim=True)
    torch.testing.assert_close(i[:, -4:], m.style["visual"](mean) - m.category["visual"][cats])


def test_shared_user_form_is_the_paper_score(tiny_dataset):
    m = _model(tiny_dataset, user_preference="shared")
    u, i = m()
    cats = torch.from_numpy(tiny_dataset.item_categories.copy())
    style = sum(m.style[k](_feat(tiny_dataset, k)) for k in tiny_dataset.modalities) - m.category["visual"][cats]
    torch.testing.assert_close(u @ i.T, m.user_id @ (m.item_id + style).T)
    assert len(m.preference) == 0


@pytest.mark.parametrize("cfg", [{"user_preference": "both"}, {"categories": "leaf"}])
def test_bad_switches_are_rejected(tiny_dataset, cfg):
    with pytest.raises(ValueError, match=f"backbone.{next(iter(cfg))}"):
        _model(tiny_dataset, **cfg)


def test_end_to_end(tmp_path):
    value, res = run_pipeline(["backbone=deepstyle", "mlflow.enabled=false"], tmp_path)
    assert res["config"]["backbone"]["name"] == "deepstyle"
    assert 0.0 <= value <= 1.0 and 0.0 <= res["test"]["recall@20/visual"] <= 1.0
