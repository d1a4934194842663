"""Every tested backbone family: dense features as the seeds take them, every head on it, the shared /
task-specific split, the last shared layer and the shared representation, so every balancing method and
strategy trains it."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import balancing, make_task, strategies
from mtlkit.models import HEADS, MultiTaskModel, build_backbone

from .families import FAMILY_CONFIGS, image

FAMILIES = list(FAMILY_CONFIGS)


def backbone(family: str):
    name, kw, size = FAMILY_CONFIGS[family]
    torch.manual_seed(0)
    return build_backbone(name, size, **kw), size


#: family -> (channels, stride of each map, class name of the last shared block)
EXPECTED = {
    "vit": ([32] * 4, [8] * 4, "Block"),
    "resnet": ([512], [8], "BasicBlock"),  # dilated: layer4 at output stride 8
    "hrnet": ([16, 32, 64, 128], [4, 8, 16, 32], "HighResolutionModule"),
    "convnext": ([16, 32, 64, 128], [4, 8, 16, 32], "ConvNeXtBlock"),
    "swin": ([16, 32, 64, 128], [4, 8, 16, 32], "SwinTransformerBlock"),
    "samvit": ([32] * 4, [16] * 4, "Block"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_features_of_each_family(family: str) -> None:
    bb, size = backbone(family)
    bb.eval()
    feats = bb(image(size))
    channels, strides, last = EXPECTED[family]
    assert bb.out_channels == channels
    shapes = [(2, c, size // s, size // s) for c, s in zip(channels, strides, strict=True)]
    assert [tuple(f.shape) for f in feats] == shapes
    last_params = {id(p) for p in bb.last_layer_parameters()}
    blocks = [m for m in bb.modules() if type(m).__name__ == last]
    assert last_params and last_params == {id(p) for p in blocks[-1].parameters()} | (
        {id(p) for p in bb.norm.parameters()} if family == "vit" else set()
    )


def test_dilated_resnet_matches_vandenhende_et_al() -> None:
    bb, _ = backbone("resnet")
    m = bb.model
    # layer3 / layer4 keep the resolution (no stride) and dilate by 2 / 4 (ResnetDilated, dilate_scale=8)
    convs3 = [c for c in m.layer3.modules() if isinstance(c, torch.nn.Conv2d)]
    convs4 = [c for c in m.layer4.modules() if isinstance(c, torch.nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs3 + convs4)
    assert m.layer3[0].conv2.dilation == (2, 2) and m.layer4[0].conv1.dilation == (2, 2)
    assert m.layer4[0].conv2.dilation == (4, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_head_on_every_family_trains_every_parameter(family: str) -> None:
    bb, size = backbone(family)
    heads = {kind: HEADS.get(kind)(bb.out_channels, 3) for kind in ("linear", "conv", "aspp", "hrnet")}
    model = MultiTaskModel(bb, heads, (size, size))
    out = model(image(size))
    assert {k: tuple(v.shape) for k, v in out.items()} == dict.fromkeys(heads, (2, 3, size, size))
    sum(v.square().mean() for v in out.values()).backward()
    # (a gradient may be exactly zero at init: timm zero-inits ResNet's last BN of each block)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def _tasks() -> dict:
    return {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth")}


def _batch(size: int, it: int) -> dict:
    g = torch.Generator().manual_seed(it)
    return {"image": torch.randn(2, 3, size, size, generator=g),
            "semseg": torch.randint(0, 3, (2, size, size), generator=g),
            "depth": torch.rand(2, 1, size, size, generator=g) + 0.1}


#: how a method touches the model: the last shared layer (AvgNorm, as GradNorm) and the shared representation
#: (MGDA-UB, as GradDrop); all shared parameters are the partition checked above (and the selective strategy)
METHODS = ["avgnorm", "mgda_ub"]


@pytest.mark.parametrize("family", FAMILIES)
def test_balancing_methods_and_strategies_on_every_family(family: str) -> None:
    name, kw, size = FAMILY_CONFIGS[family]
    from mtlkit.models import build_model

    tasks = _tasks()
    torch.manual_seed(0)
    model = build_model(name, tasks, size, **kw)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in tasks]
    assert shared | set().union(*per_task) == {id(p) for p in model.parameters()}
    assert not shared & set().union(*per_task) and not per_task[0] & per_task[1]
    assert {id(p) for p in model.last_shared_parameters()} <= shared
    # the selective strategy only needs the shared / task split above: one CNN family shows it end to end
    for i, method in enumerate(METHODS + (["selective"] if family == "resnet" else [])):
        strategy = strategies.get("selective") if method == "selective" else strategies.Joint()
        bal = balancing.get("equal" if method == "selective" else method, tasks=list(tasks))
        opt = torch.optim.Adam(list(model.parameters()) + bal.parameters(), lr=1e-3)
        before = [p.detach().clone() for p in model.parameters()]
        ctx = strategies.StepContext(model=model, tasks=tasks, balancer=bal, optimizer=opt, iteration=i,
                                     needs_features=bal.needs_features)
        info = strategy.step(_batch(size, i), ctx)
        assert all(math.isfinite(w) for w in info["weights"].values()), method
        moved = [not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)]
        assert any(moved), method
