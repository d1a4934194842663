"""Shared fixtures: a tiny random multi-task dataset registered as ``tiny-random`` for engine tests."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from mtlkit.data import DATASETS, MultiTaskDataset

os.environ.setdefault("MTLKIT_CACHE", os.path.join(os.path.dirname(__file__), "..", ".mtlkit-cache", "tests"))
torch.set_num_threads(2)


# ---------------------------------------------------------------------------- no network in the suite
def _is_local(address: object) -> bool:
    """Unix sockets and loopback addresses (torch.distributed's local rendezvous) stay allowed."""
    if not isinstance(address, tuple):
        return True
    host = str(address[0])
    return host in ("localhost", "::1", "") or host.startswith("127.")


def _guarded(original):
    def connect(self, address, *args, **kwargs):
        if not _is_local(address):
            raise RuntimeError(f"a test tried to open a network connection to {address!r}; tests run offline")
        return original(self, address, *args, **kwargs)

    return connect


socket.socket.connect = _guarded(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)  # type: ignore[method-assign]


class TinyRandom(MultiTaskDataset):
    """Learnable random data: labels are simple functions of the image, so a few steps lower the loss."""

    name = "tiny-random"

    def __init__(self, split: str, tasks=None, image_size: int = 16, n: int = 16, **_: object) -> None:
        all_tasks = ("semseg", "depth", "normals", "edge")
        bad = [t for t in tasks or [] if t not in all_tasks]
        if bad:
            from mtlkit.errors import MtlkitError

            raise MtlkitError(f"task(s) {bad} not in dataset tiny-random; its tasks: {', '.join(all_tasks)}")
        self.task_names = tuple(tasks) if tasks else all_tasks
        g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
        s = image_size
        self.images = torch.randn(n, 3, s, s, generator=g)
        self.n = n

    def task_params(self):
        return {"semseg": {"num_classes": 3}}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x = self.images[i]
        out = {"image": x}
        out["semseg"] = (x[0] > 0).long() + (x[1] > 0.5).long()
        out["depth"] = (x[1:2].abs() + 0.5)
        out["normals"] = torch.nn.functional.normalize(x.clone(), dim=0)
        out["edge"] = (x[2:3] > 1.0).float()
        return {k: v for k, v in out.items() if k == "image" or k in self.task_names}


def _build(split: str, *, root=None, tasks=None, image_size: int = 16, **options):
    return TinyRandom(split, tasks=tasks, image_size=image_size, **options)


if "tiny-random" not in DATASETS:
    DATASETS.register("tiny-random", _build)


@pytest.fixture
def tiny_config(tmp_path):
    from mtlkit.engine import TrainConfig

    return TrainConfig(dataset="tiny-random", image_size=16, model="micro", iters=6, batch_size=4,
                       eval_every=3, eval_batch_size=8, out=str(tmp_path / "run"), progress=False,
                       baseline_cache=str(tmp_path / "baselines"))
