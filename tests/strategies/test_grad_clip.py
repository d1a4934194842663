"""Gradient clipping at the optimizer step: the model's global gradient norm is capped (unscaled under fp16),
as InvPT / TaskPrompter's ``clip_grad_norm_(model.parameters(), 10)``."""

from __future__ import annotations

import pytest
import torch

from mtlkit import balancing, make_task, strategies
from mtlkit.engine._precision import Precision


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Conv2d(3, 4, 1)
        self.dep = torch.nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return {"depth": self.dep(torch.relu(self.body(x)))}


def _update_norm(clip: float | None, precision: Precision | None = None) -> tuple[float, float]:
    model = _Model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tasks = {"depth": make_task("depth")}
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(2, 3, 4, 4, generator=g), "depth": 100.0 * torch.rand(2, 4, 4, generator=g) + 1}
    ctx = strategies.StepContext(model=model, tasks=tasks, balancer=balancing.get("equal", ["depth"]),
                                 optimizer=opt, grad_clip=clip, precision=precision)
    info = strategies.get("joint").step(batch, ctx)
    assert info["steps"] == 1
    delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before, strict=True)])
    return float(delta.norm()), float(info["losses"]["depth"])


def test_clip_caps_the_update_norm_and_leaves_small_gradients_alone():
    free, _ = _update_norm(None)
    assert free > 1.0  # SGD lr 1: the update is the gradient
    assert _update_norm(0.5)[0] == pytest.approx(0.5, rel=1e-5)
    assert _update_norm(10 * free)[0] == pytest.approx(free, rel=1e-6)


def test_clip_under_fp16_acts_on_unscaled_gradients():
    clipped, _ = _update_norm(0.5, Precision("fp16", "cpu", init_scale=2.0**12))
    assert clipped == pytest.approx(0.5, rel=1e-3)
