"""MultiTaskModel: output shapes, the shared / task-specific parameter split, and that training works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlkit import balancing
from mtlkit.models import MultiTaskModel, build_backbone, build_model
from mtlkit.models.heads import LinearHead
from mtlkit.tasks import make_task

SIZE = 32


def four_tasks() -> dict:
    return {
        "semseg": make_task("semseg", num_classes=5),
        "depth": make_task("depth"),
        "normals": make_task("normals"),
        "edge": make_task("edge"),
    }


def ids(params) -> list[int]:
    return [id(p) for p in params]


@pytest.mark.parametrize("head", ["linear", "conv"])
def test_output_shapes_for_every_head_kind(head: str) -> None:
    torch.manual_seed(0)
    tasks = four_tasks()
    model = build_model("micro", tasks, img_size=SIZE, head=head)
    out = model(torch.randn(2, 3, SIZE, SIZE))
    assert {t: tuple(v.shape) for t, v in out.items()} == {
        t: (2, task.channels, SIZE, SIZE) for t, task in tasks.items()
    }
    sub, feats = model(torch.randn(2, 3, SIZE, SIZE), tasks=["depth"], return_features=True)
    assert list(sub) == ["depth"]
    assert len(feats) == 4 and feats[0].shape == (2, 128, 4, 4)  # micro: D 128, patch 8
    rect = build_model("micro", tasks, img_size=(32, 48), head=head)
    assert rect(torch.randn(1, 3, 32, 48))["semseg"].shape == (1, 5, 32, 48)


def test_classification_task_gets_a_classification_head() -> None:
    from mtlkit.models import ClassificationHead
    from mtlkit.tasks import Task

    digit = Task("left", 10, lambda p, t: p.sum(), lambda: None, "accuracy", True, kind="classification")
    model = build_model("micro", {"left": digit, "depth": make_task("depth")}, img_size=SIZE)
    assert isinstance(model.heads["left"], ClassificationHead)
    assert model(torch.randn(3, 3, SIZE, SIZE))["left"].shape == (3, 10)


def test_shared_and_task_parameters_partition_all_parameters() -> None:
    model = build_model("micro", four_tasks(), img_size=SIZE, head="conv")
    shared = ids(model.shared_parameters())
    per_task = {t: ids(model.task_parameters(t)) for t in model.tasks}
    everything = ids(model.parameters())
    groups = [shared, *per_task.values()]
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat))  # no overlap (and no duplicates within a group)
    assert set(flat) == set(everything)  # union = all
    assert set(shared) == set(ids(model.backbone.parameters()))
    for t in model.tasks:
        assert set(per_task[t]) == set(ids(model.heads[t].parameters()))
    last = ids(model.last_shared_parameters())
    assert set(last) == set(ids(model.backbone.blocks[-1].parameters())) | set(ids(model.backbone.norm.parameters()))


class TokenBackbone(nn.Module):
    """A backbone owning a per-task token (as DTME's task tokens): those are task-specific parameters."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.base = build_backbone("micro", SIZE, depth=2)
        self.out_channels = self.base.out_channels
        d = self.base.embed_dim
        self.task_tokens = nn.ParameterDict({t: nn.Parameter(torch.zeros(1, 1, d)) for t in tasks})

    def task_specific_parameters(self, task: str) -> list[nn.Parameter]:
        return [self.task_tokens[task]]

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        base = self.base(x)
        return {t: [f + tok.view(1, -1, 1, 1) for f in base] for t, tok in self.task_tokens.items()}


def test_backbone_task_specific_parameters_move_from_shared_to_task() -> None:
    names = ["depth", "edge"]
    backbone = TokenBackbone(names)
    heads = {t: LinearHead(backbone.out_channels, 1) for t in names}
    model = MultiTaskModel(backbone, heads, (SIZE, SIZE))
    shared = set(ids(model.shared_parameters()))
    for t in names:
        tok = id(backbone.task_tokens[t])
        assert tok not in shared
        assert tok in ids(model.task_parameters(t))
        assert tok not in ids(model.task_parameters(next(n for n in names if n != t)))
    flat = ids(model.shared_parameters()) + [i for t in names for i in ids(model.task_parameters(t))]
    assert len(flat) == len(set(flat)) and set(flat) == set(ids(model.parameters()))
    # forward_heads takes the per-task feature dict of a forked backbone
    out = model(torch.randn(1, 3, SIZE, SIZE))
    assert {t: v.shape for t, v in out.items()} == {t: (1, 1, SIZE, SIZE) for t in names}
    x = torch.randn(1, 3, SIZE, SIZE)
    before = model(x)
    with torch.no_grad():
        backbone.task_tokens["edge"].fill_(1.0)
    after = model(x)
    assert torch.equal(before["depth"], after["depth"]) and not torch.allclose(before["edge"], after["edge"])


def test_a_few_adam_steps_lower_the_total_loss() -> None:
    torch.manual_seed(0)
    tasks = four_tasks()
    model = build_model("micro", tasks, img_size=SIZE)
    g = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, SIZE, SIZE, generator=g),
        "semseg": torch.randint(0, 5, (2, SIZE, SIZE), generator=g),
        "depth": torch.rand(2, 1, SIZE, SIZE, generator=g) * 5,
        "normals": torch.nn.functional.normalize(torch.randn(2, 3, SIZE, SIZE, generator=g), dim=1),
        "edge": (torch.rand(2, 1, SIZE, SIZE, generator=g) > 0.9).float(),
    }
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    balancer = balancing.get("equal")

    def total() -> float:
        with torch.no_grad():
            out = model(batch["image"])
            return sum(float(tasks[t].loss(out[t], batch[t])) for t in tasks)

    before = total()
    for _ in range(5):
        opt.zero_grad()
        out = model(batch["image"])
        info = balancer.backward({t: tasks[t].loss(out[t], batch[t]) for t in tasks}, shared=model.shared_parameters())
        opt.step()
    assert info["weights"] == dict.fromkeys(tasks, 1.0)
    after = total()
    assert after < 0.9 * before, (before, after)


def test_frozen_backbone_parameters_are_not_shared() -> None:
    model = build_model("micro", four_tasks(), img_size=SIZE)
    for p in model.backbone.blocks[0].parameters():
        p.requires_grad_(False)
    frozen = set(ids(model.backbone.blocks[0].parameters()))
    shared = set(ids(model.shared_parameters()))
    assert not shared & frozen
    assert shared | frozen == set(ids(model.backbone.parameters()))
    assert set(ids(model.last_shared_parameters())) <= shared
