"""The architectures under mtlkit's balancing methods, called as the engine's ``balanced_backward`` does
(one loss per task from ``task_losses``, features = the balancing cut)."""

from __future__ import annotations

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError
from mtlkit.models.arch import MTAN, InvPT, MTINet, TaskPrompter

from ._support import TASK_SETS, TimmCNN, make_batch, make_tasks, mtlkit_vit

BUILD = {
    "mtan": (lambda c: MTAN(TimmCNN("convnext_atto"), c, head_channels=16), 32),
    "mtinet": (lambda c: MTINet(TimmCNN("ghostnet_050"), c), 32),
    "invpt": (lambda c: InvPT(mtlkit_vit(), c, embed_dim=32, pred_channels=16, official_unused=False), 64),
    "taskprompter": (
        lambda c: TaskPrompter(mtlkit_vit(), c, embed_dim=32, final_embed_dim=32, chan_nheads=4, use_ctr=True),
        64,
    ),
}


def _backward(model, balancer, batch, tasks) -> dict:
    out, feats = model(batch["image"], return_features=True)
    losses = model.task_losses(out, batch, tasks)
    return balancer.backward(
        losses,
        shared=model.shared_parameters(),
        features=feats if balancer.needs_features else None,
        last_shared=model.last_shared_parameters(),
        model=model,
    )


@pytest.mark.parametrize(
    ("arch", "method"), [("mtan", "pcgrad"), ("mtinet", "avgnorm"), ("invpt", "pcgrad"), ("taskprompter", "avgnorm")]
)
def test_every_trained_parameter_gets_a_gradient_and_steps_help(arch: str, method: str) -> None:
    torch.manual_seed(0)
    build, size = BUILD[arch]
    channels = TASK_SETS["nyud"]
    model = build(channels)
    batch, tasks = make_batch(channels, size=size), make_tasks(channels)
    sum(model.task_losses(model(batch["image"]), batch, tasks).values()).backward()
    plain = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    balancer = balancing.get(method, list(channels))
    info = _backward(model, balancer, batch, tasks)
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert plain - got == set()  # shared modules after the encoder are trained too
    assert set(info["weights"]) == set(channels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(2):
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            values.append(float(sum(model.task_losses(model(batch["image"]), batch, tasks).values())))
        _backward(model, balancer, batch, tasks)
    assert values[-1] < values[0]


def test_mgda_ub_on_the_shared_cut_or_refused() -> None:
    """MGDA-UB needs one representation every task reads: MTI-Net's cut is one; the others say so."""
    torch.manual_seed(0)
    channels = TASK_SETS["nyud"]
    tasks = make_tasks(channels)
    for arch, (build, size) in BUILD.items():
        model = build(channels)
        batch = make_batch(channels, size=size)
        balancer = balancing.get("mgda_ub", list(channels))
        if arch == "mtinet":
            info = _backward(model, balancer, batch, tasks)
            assert abs(sum(info["weights"].values()) - 1.0) < 1e-3  # a convex combination
        else:
            with pytest.raises(MtlkitError):
                _backward(model, balancer, batch, tasks)
