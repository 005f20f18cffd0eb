"""SMORE: the max-pool fusion graph (the reference's −inf fill) and its ablated forms (the tie graph J/n
in place of the ablated modality's), the spectral fusion on CPU and CUDA (under bf16 autocast there), the dropout
draw shared by a step's passes."""

from __future__ import annotations

import pytest
import torch

from mbrec.backbones import build_backbone
from mbrec.backbones.smore import max_union
from mbrec.data.dataset import Dataset


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_backbone({"name": "smore", "embedding_dim": 8, "image_knn_k": 3, "text_knn_k": 5, **cfg}, ds)


def test_max_union_is_the_reference_max_pool():
    a = torch.tensor([[0.5, -0.2, 0.0], [0.0, 0.3, 0.1], [0.0, 0.0, 1.0]])
    b = torch.tensor([[0.4, 0.0, 0.7], [0.0, 0.6, -0.5], [0.0, 0.0, 0.0]])
    fused = max_union([a.to_sparse(), b.to_sparse()]).to_dense()
    inf = torch.tensor(float("-inf"))
    expected = torch.maximum(torch.where(a != 0, a, inf), torch.where(b != 0, b, inf))
    torch.testing.assert_close(fused, torch.where(torch.isinf(expected), torch.zeros(()), expected))
    floor = max_union([a.to_sparse()], floor=0.25).to_dense()  # max(J/4, a) = J/4 + that
    torch.testing.assert_close(floor + 0.25, torch.maximum(torch.where(a != 0, a, inf), torch.tensor(0.25)))


def test_ablated_fusion_graph_is_the_max_with_the_tie_graph(tiny_dataset):
    model = _model(tiny_dataset).eval()
    n = tiny_dataset.n_items
    x = torch.randn(n, 8)
    text = model.item_graph_text.to_dense()
    kept_text = model.fusion_graph_text.to_dense() + 1.0 / n
    inf = torch.tensor(float("-inf"))
    torch.testing.assert_close(kept_text, torch.maximum(torch.where(text != 0, text, inf), torch.tensor(1.0 / n)))
    view = model._item_view("fusion_graph_text", x, ablated=False, uniform=True)[model.n_users:]
    torch.testing.assert_close(view, kept_text @ x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_spectral_fusion_runs_on_the_device_and_under_autocast(tiny_dataset, device):
    model = _model(tiny_dataset).to(device).train()
    # bf16 autocast where sparse products support it (CUDA); the FFT itself always runs in float32
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        u, i = model()
    assert torch.isfinite(u.float()).all() and torch.isfinite(i.float()).all()
    model.eval()
    with torch.no_grad():
        u, i = model(ablate={"visual"})
    assert u.device.type == device and torch.isfinite(u).all()


def test_dropout_draw_shared_by_the_passes_of_a_step(tiny_dataset):
    model = _model(tiny_dataset, dropout=0.5).train()
    assert not torch.allclose(model()[0], model()[0])
    with model.step_cache():
        torch.testing.assert_close(model()[0], model()[0])


def test_a_modality_without_a_knn_size_is_refused(tiny_dataset):
    ds = Dataset("x", tiny_dataset.train, tiny_dataset.valid, tiny_dataset.test,
                 {"audio": tiny_dataset.features["text"], "text": tiny_dataset.features["text"]})
    with pytest.raises(ValueError, match="audio"):
        _model(ds)
