"""Cross-process reduction of the torchmetrics meters, simulated: two "processes" (threads) whose all-gather
exchanges the tensors each contributes, as torch.distributed's would, must both compute the whole split's
metrics; mtlkit's summed ``state()`` is empty for these meters (torchmetrics gathers the states itself)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import pytest
import torch

from mtlkit.engine._distributed import reduce_tensors
from mtlkit.metrics import BinaryMeter, ClassificationMeter, GenericRegressionMeter, MultilabelMeter, TorchMetricsMeter


class FakeWorld:
    """An all-gather among ``size`` threads: each call blocks until every rank has contributed its tensor."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.slots: list[torch.Tensor | None] = [None] * size
        self.barrier = threading.Barrier(size, timeout=30)
        self.calls = [0] * size

    def gather_fn(self, rank: int) -> Callable[..., list[torch.Tensor]]:
        def gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
            self.calls[rank] += 1
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            out = [t.clone() for t in self.slots]  # type: ignore[union-attr]
            self.barrier.wait()
            return out

        return gather


def data(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "classification":
        return torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)
    if kind == "binary":
        return torch.randn(n, generator=g), torch.randint(0, 2, (n,), generator=g)
    if kind == "multilabel":
        return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n, 3), generator=g)
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)


METERS: dict[str, Callable[[], TorchMetricsMeter]] = {
    "classification": lambda: ClassificationMeter(4),
    "binary": BinaryMeter,
    "multilabel": lambda: MultilabelMeter(3),
    "regression": lambda: GenericRegressionMeter(2),
}


@pytest.mark.parametrize("kind", list(METERS))
def test_two_process_reduction_equals_one_process(kind: str) -> None:
    pred, target = data(kind, 70, seed=len(kind))
    whole = METERS[kind]()
    whole.update(pred, target)
    expected = whole.compute()

    shards = [(pred[:23], target[:23]), (pred[23:], target[23:])]  # uneven shards, as a last batch makes them
    world = FakeWorld(2)
    meters = [METERS[kind]() for _ in shards]
    results: list[dict[str, float] | None] = [None, None]
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            m = meters[rank]
            m.set_sync(world.gather_fn(rank), distributed_available=lambda: True)
            for i in range(0, len(shards[rank][0]), 16):
                m.update(shards[rank][0][i : i + 16], shards[rank][1][i : i + 16])
            reduce_tensors(m.state())  # what engine.evaluate does first: nothing to sum for these meters
            results[rank] = m.compute()
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)
            world.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert meters[0].state() == []
    assert world.calls[0] == world.calls[1] > 0  # the same collectives, in the same order, on both ranks
    assert results[0] == pytest.approx(expected)
    assert results[1] == pytest.approx(expected)
    # the sync is undone after compute(): the rank's own data alone again
    alone = METERS[kind]()
    alone.update(*shards[0])
    meters[0].set_sync(distributed_available=lambda: False)
    assert meters[0].compute() == pytest.approx(alone.compute())


@pytest.mark.parametrize("kind", list(METERS))
def test_merge_equals_one_meter(kind: str) -> None:
    pred, target = data(kind, 50, seed=7)
    whole, a, b = METERS[kind](), METERS[kind](), METERS[kind]()
    whole.update(pred, target)
    a.update(pred[:19], target[:19])
    b.update(pred[19:], target[19:])
    merged = copy.deepcopy(a)
    merged.merge(b)
    assert merged.compute() == pytest.approx(whole.compute())
    assert a.compute() != pytest.approx(whole.compute())  # merging changed something
    with pytest.raises(TypeError):
        a.merge(GenericRegressionMeter() if kind != "regression" else BinaryMeter())


def test_reset_forgets_everything() -> None:
    m = ClassificationMeter(3)
    m.update(torch.randn(5, 3), torch.randint(0, 3, (5,)))
    m.reset()
    m.update(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert m.compute()["accuracy"] == 1.0
