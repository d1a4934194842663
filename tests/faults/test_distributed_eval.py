"""Evaluation on 2 processes (gloo, CPU) equals evaluation on 1 when the split size (5) is not divisible by
the world size: the shard sampler does not pad, so no sample is counted twice."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from mtlkit.engine._sampler import ShardSampler
from mtlkit.engine.evaluate import evaluate


def _setup():
    from tests.conftest import TinyRandom

    torch.manual_seed(0)
    ds = TinyRandom("val", tasks=["semseg", "depth"], image_size=8, n=5)
    model = _Model()
    return ds, ds.make_tasks(), model


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seg = torch.nn.Conv2d(3, 3, 1)
        self.dep = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return {"semseg": self.seg(x), "depth": self.dep(x)}


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ds, tasks, model = _setup()
        loader = DataLoader(ds, batch_size=2, sampler=ShardSampler(len(ds), rank, world))
        result = evaluate(model, loader, tasks)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_shards_cover_every_sample_once():
    shards = [list(ShardSampler(5, r, 2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3, 4] and len(ShardSampler(5, 1, 2)) == 2


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_process_evaluation_equals_one(tmp_path):
    ds, tasks, model = _setup()
    one = evaluate(model, DataLoader(ds, batch_size=2), tasks)
    out = str(tmp_path / "two.json")
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    two = json.loads(open(out).read())
    for t in tasks:
        for k, v in one["tasks"][t].items():
            assert two["tasks"][t][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (t, k)
