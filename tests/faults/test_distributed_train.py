"""Training on 2 processes (gloo, CPU) equals 1 process on the global batch when the processes hold different
numbers of valid pixels: each process's loss is weighted by its share of the global count
(``StepContext.global_mean``), so the averaged gradient and the logged losses are the global exact means.
Without the weighting (the mean of per-process means) the step differs: the test can fail."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtlkit import balancing, strategies
from mtlkit.engine import _distributed as D
from mtlkit.tasks import make_task


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Conv2d(3, 4, 1)
        self.seg = torch.nn.Conv2d(4, 3, 1)
        self.dep = torch.nn.Conv2d(4, 1, 1)

    def shared_parameters(self):
        return list(self.body.parameters())

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"semseg": self.seg(h), "depth": self.dep(h)}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 6, 6, generator=g)
    seg = torch.randint(0, 3, (4, 6, 6), generator=g)
    seg[0::2, :, 1:] = 255  # samples 0, 2 (process 0 of 2) label one column only
    depth = torch.rand(4, 6, 6, generator=g) + 0.5
    depth[1::2, :5] = 0  # samples 1, 3 (process 1 of 2) have one valid row
    return {"image": x, "semseg": seg, "depth": depth}


def _step(batch, rank: int | None, weighted: bool, method: str = "equal", global_jacobian: bool = False) -> dict:
    tasks = {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth")}
    model = _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    params = list(model.parameters())
    ctx = strategies.StepContext(
        model=model, tasks=tasks, balancer=balancing.get(method, list(tasks)), optimizer=opt,
        sync_grads=lambda: D.average_gradients(params), reduce_losses=D.average_values,
        global_mean=D.global_mean_scales if (weighted and rank is not None) else None,
        reduce_jacobian=D.average_tensor if (global_jacobian and rank is not None) else None)
    if rank is not None:
        batch = {k: v[rank::2] for k, v in batch.items()}
    info = strategies.get("joint").step(batch, ctx)
    return {"params": [p.detach().reshape(-1).tolist() for p in params], "losses": info["losses"]}


def _worker(rank: int, init: str, out: str, weighted: bool, method: str = "equal", global_jac: bool = False) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        res = _step(_batch(), rank, weighted, method, global_jac)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_process_step_equals_one_process_on_the_global_batch(tmp_path):
    one = _step(_batch(), None, weighted=True)
    results = {}
    for weighted in (True, False):
        out = str(tmp_path / f"two-{weighted}.json")
        os.environ.pop("WORLD_SIZE", None)
        mp.spawn(_worker, args=(f"file://{tmp_path / f'rdv-{weighted}'}", out, weighted), nprocs=2, join=True)
        results[weighted] = json.loads(open(out).read())
    two = results[True]
    for t in ("semseg", "depth"):
        assert two["losses"][t] == pytest.approx(one["losses"][t], rel=1e-6)
    for a, b in zip(two["params"], one["params"], strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    # the mean of per-process means is not the global mean here (unequal valid pixels): the test can fail
    plain = results[False]
    assert plain["losses"]["depth"] != pytest.approx(one["losses"]["depth"], rel=1e-3)
    assert any(a != pytest.approx(b, rel=1e-4, abs=1e-6)
               for pa, pb in zip(plain["params"], one["params"], strict=True) for a, b in zip(pa, pb, strict=True))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_global_jacobian_makes_an_aggregator_step_equal_one_process(tmp_path):
    """MGDA (min-norm point of the task gradients, nonlinear in J): with ``global_jacobian`` 2 processes
    aggregate the global Jacobian and step as 1 process; averaging per-process aggregates does not."""
    one = _step(_batch(), None, weighted=True, method="mgda")
    results = {}
    for global_jac in (True, False):
        out = str(tmp_path / f"mgda-{global_jac}.json")
        os.environ.pop("WORLD_SIZE", None)
        mp.spawn(_worker, args=(f"file://{tmp_path / f'rdv-m{global_jac}'}", out, True, "mgda", global_jac),
                 nprocs=2, join=True)
        results[global_jac] = json.loads(open(out).read())
    for a, b in zip(results[True]["params"], one["params"], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert any(a != pytest.approx(b, rel=1e-4, abs=1e-6) for pa, pb in
               zip(results[False]["params"], one["params"], strict=True) for a, b in zip(pa, pb, strict=True))


def test_loss_counts_of_the_built_in_tasks():
    b = _batch()
    assert make_task("semseg").loss_count(b["semseg"]) == 2 * 6 + 2 * 36
    assert make_task("depth").loss_count(b["depth"]) == 2 * 36 + 2 * 6
    normals = torch.zeros(2, 3, 4, 4)
    normals[0, 2] = 1.0  # one image labelled
    assert make_task("normals").loss_count(normals) == 3 * 16
    assert make_task("regression").loss_count(torch.tensor([1.0, float("nan"), 2.0])) == 2
    assert make_task("classification", num_classes=3).loss_count(torch.tensor([0, -100, 2])) == 2
    assert D.global_mean_scales({"depth": 5.0}) == {"depth": 1.0}  # one process: identity
