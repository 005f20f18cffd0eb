"""Item–item kNN graphs at real scale: built in row chunks (never the dense items x items matrix) and
kept in the checksummed on-disk cache, keyed by (data fingerprint, modality, k, normalisation)."""

from __future__ import annotations

import pytest
import torch

from mbrec.backbones import graph


@pytest.fixture
def disk(tmp_path, monkeypatch):
    """A fresh on-disk graph cache and an empty in-process memo (as a new process has)."""
    monkeypatch.setattr(graph, "_MEMO", {})
    graph.use_disk_cache(tmp_path)
    yield tmp_path / "graphs"
    graph.use_disk_cache(None)


def _forget(monkeypatch) -> None:
    monkeypatch.setattr(graph, "_MEMO", {})


def test_second_build_loads_from_the_cache(disk, tiny_dataset, monkeypatch):
    first = graph.dataset_knn_graph(tiny_dataset, "text", 5, "sym")
    files = list(disk.glob("knn-*.pt"))
    assert len(files) == 1
    _forget(monkeypatch)  # a second process: nothing in memory

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt instead of loaded")

    monkeypatch.setattr(graph, "knn_graph", no_build)
    again = graph.dataset_knn_graph(tiny_dataset, "text", 5, "sym")
    assert torch.equal(again.indices(), first.indices()) and torch.equal(again.values(), first.values())
    # another modality, k or normalisation is another entry
    monkeypatch.undo()
    graph.use_disk_cache(disk.parent)
    _forget(monkeypatch)
    graph.dataset_knn_graph(tiny_dataset, "text", 4, "sym")
    graph.dataset_knn_graph(tiny_dataset, "text", 5, "row")
    graph.dataset_knn_graph(tiny_dataset, "visual", 5, "sym")
    assert len(list(disk.glob("knn-*.pt"))) == 4


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_damaged_cache_file_is_rebuilt(disk, tiny_dataset, monkeypatch, caplog, damage):
    first = graph.dataset_knn_graph(tiny_dataset, "visual", 5, "sym")
    [path] = disk.glob("knn-*.pt")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # a well-formed file of another graph under this name
        from mbrec import cachefile

        cachefile.save({"key": {"format": 0}, "indices": first.indices(), "values": first.values(), "shape": [1, 1]}, path)
        data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    _forget(monkeypatch)
    with caplog.at_level("WARNING"):
        again = graph.dataset_knn_graph(tiny_dataset, "visual", 5, "sym")
    assert "unusable" in caplog.text and path.name in caplog.text
    assert torch.equal(again.indices(), first.indices()) and torch.allclose(again.values(), first.values())
    _forget(monkeypatch)
    monkeypatch.setattr(graph, "knn_graph", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt twice")))
    graph.dataset_knn_graph(tiny_dataset, "visual", 5, "sym")  # the rewritten file is good


def test_knn_graph_is_built_in_chunks_never_dense(monkeypatch):
    """No similarity block has more rows than the chunk; the default chunk keeps a block under
    CHUNK_ENTRIES; the chunked graph equals the one-block graph."""
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    shapes = []
    original = torch.Tensor.topk

    def recording(self, *args, **kwargs):
        shapes.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", recording)
    chunked = graph.knn_graph(x, 4, chunk=8)
    assert shapes and all(s[0] <= 8 for s in shapes)
    monkeypatch.setattr(graph, "CHUNK_ENTRIES", 500)
    shapes.clear()
    graph.knn_graph(x, 4)
    assert all(s[0] * s[1] <= 500 for s in shapes) and len(shapes) == 5
    monkeypatch.undo()
    whole = graph.knn_graph(x, 4, chunk=50)
    assert torch.equal(chunked.indices(), whole.indices()) and torch.allclose(chunked.values(), whole.values())
