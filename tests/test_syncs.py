"""The sync counter the contract test and `make bench` use (mbrec.training.syncs)."""

import torch


def test_sync_count_counts_reads_of_tensor_values_and_restores_torch():
    from mbrec.training.syncs import READS, SyncCount

    before = {name: getattr(torch.Tensor, name) for name in READS}
    t = torch.arange(3.0)
    with SyncCount("cpu") as syncs:
        t.sum().item(), float(t[0]), t.tolist(), bool(t[1] > 0), t + 1  # 4 reads, then arithmetic
    assert syncs.count == 4 and syncs.how.startswith("proxy")
    assert {name: getattr(torch.Tensor, name) for name in READS} == before
