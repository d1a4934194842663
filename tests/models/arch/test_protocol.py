"""Every architecture with every compatible backbone: forward / backward for all tasks of synthetic NYUD and
PASCAL, the shared / task-specific split, a few training steps, the single-task twins."""

from __future__ import annotations

import pytest
import torch

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import ARCHS, MTAN, InvPT, MTINet, TaskPrompter

from ._support import (
    TASK_SETS,
    TimmCNN,
    check_cut,
    check_split,
    fit_steps,
    make_batch,
    make_tasks,
    mtlkit_vit,
    tiny_vit,
)

# (id, builder(tasks) -> model, input size); tiny widths, the published structure
BUILDERS = {
    "mtan-resnet18-os8": (lambda c: MTAN(TimmCNN("resnet18", output_stride=8), c, head_channels=16), 32),
    "mtan-convnext": (lambda c: MTAN(TimmCNN("convnext_atto"), c, head_channels=16), 32),
    "mtinet-hrnet18": (lambda c: MTINet(TimmCNN("hrnet_w18_small_v2", feature_location=""), c), 32),
    "mtinet-ghostnet": (lambda c: MTINet(TimmCNN("ghostnet_050"), c), 32),
    "invpt-timm-vit": (lambda c: InvPT(tiny_vit(), c, embed_dim=32, pred_channels=16), 64),
    "invpt-mtlkit-vit": (lambda c: InvPT(mtlkit_vit(), c, embed_dim=32, pred_channels=16), 64),
    "taskprompter-timm-vit": (
        lambda c: TaskPrompter(tiny_vit(), c, embed_dim=32, final_embed_dim=32, chan_nheads=4, use_ctr=True),
        64,
    ),
    "taskprompter-mtlkit-vit": (
        lambda c: TaskPrompter(mtlkit_vit(), c, embed_dim=32, final_embed_dim=32, chan_nheads=4),
        64,
    ),
}


# every backbone once, every architecture on both task sets (the heavier backbones on the smaller set)
CASES = [
    ("mtan-resnet18-os8", "nyud"),
    ("mtan-convnext", "pascal"),
    ("mtinet-hrnet18", "nyud"),
    ("mtinet-ghostnet", "pascal"),
    ("invpt-timm-vit", "pascal"),
    ("invpt-mtlkit-vit", "nyud"),
    ("taskprompter-timm-vit", "pascal"),
    ("taskprompter-mtlkit-vit", "nyud"),
]


@pytest.mark.parametrize(("arch", "dataset"), CASES)
def test_forward_backward_and_split(arch: str, dataset: str) -> None:
    torch.manual_seed(0)
    build, size = BUILDERS[arch]
    channels = TASK_SETS[dataset]
    model = build(channels)
    batch = make_batch(channels, size=size)
    tasks = make_tasks(channels)
    out = model(batch["image"])
    assert set(out) == set(channels)
    for t, c in channels.items():
        assert out[t].shape == (2, c, size, size)
        assert torch.isfinite(out[t]).all()
    check_split(model, batch, tasks)
    check_cut(model, batch, tasks)


@pytest.mark.parametrize("arch", ["mtan-convnext", "mtinet-ghostnet", "invpt-timm-vit", "taskprompter-timm-vit"])
def test_training_steps_lower_the_loss(arch: str) -> None:
    """Four Adam steps on the plain sum of ``task_losses`` (aux terms included) lower it on a fixed batch."""
    torch.manual_seed(0)
    build, size = BUILDERS[arch]
    channels = TASK_SETS["nyud"]
    model = build(channels)
    first, last = fit_steps(model, make_batch(channels, size=size), make_tasks(channels), steps=4, lr=5e-3)
    assert last < 0.95 * first


@pytest.mark.parametrize("arch", ["mtan-convnext", "mtinet-ghostnet", "invpt-mtlkit-vit", "taskprompter-mtlkit-vit"])
def test_task_subset_and_unknown_task(arch: str) -> None:
    build, size = BUILDERS[arch]
    channels = TASK_SETS["nyud"]
    model = build(channels)
    x = make_batch(channels, size=size)["image"]
    out = model(x, tasks=["depth"])
    assert set(out) == {"depth"}
    with pytest.raises(MtlkitError, match="unknown task"):
        model(x, tasks=["parts"])


TWINS = {
    "mtan": (lambda: MTAN.single_task(TimmCNN("convnext_atto"), "normals", 3, head_channels=16), MTAN, 32),
    "mtinet": (lambda: MTINet.single_task(TimmCNN("ghostnet_050"), "normals", 3), MTINet, 32),
    "invpt": (lambda: InvPT.single_task(tiny_vit(), "normals", 3, embed_dim=32, pred_channels=16), InvPT, 64),
    "taskprompter": (
        lambda: TaskPrompter.single_task(tiny_vit(), "normals", 3, embed_dim=32, final_embed_dim=32, chan_nheads=4),
        TaskPrompter,
        64,
    ),
}


@pytest.mark.parametrize("arch", list(TWINS))
def test_single_task_twin(arch: str) -> None:
    """The "architecture single-task" network: the same modules for one task, trainable alone."""
    build, cls, size = TWINS[arch]
    twin = build()
    assert type(twin) is cls and twin.tasks == ["normals"]
    channels = {"normals": 3}
    batch = make_batch(channels, size=size)
    tasks = make_tasks(channels)
    losses = twin.task_losses(twin(batch["image"]), batch, tasks)
    assert set(losses) == {"normals"}
    losses["normals"].backward()
    assert all(p.grad is not None for p in twin.task_parameters("normals"))


def test_registry_names() -> None:
    assert ARCHS.names() == ["invpt", "mtan", "mtinet", "taskprompter"]
    assert ARCHS.get("MTI-Net".replace("-", "").lower()) is MTINet


def test_shared_representation_cut() -> None:
    """forward == forward_heads(forward_features) where the architecture has a shared representation."""
    channels = TASK_SETS["nyud"]
    for arch in ["mtan-convnext", "mtinet-ghostnet", "invpt-mtlkit-vit"]:
        build, size = BUILDERS[arch]
        torch.manual_seed(0)
        model = build(channels).eval()
        x = make_batch(channels, size=size)["image"]
        with torch.no_grad():
            out = model(x)
            again = model.forward_heads(model.forward_features(x))
        assert model.has_shared_representation
        for t in channels:
            torch.testing.assert_close(out[t], again[t])


@pytest.mark.parametrize("arch", ["mtan-convnext", "mtinet-ghostnet", "invpt-mtlkit-vit", "taskprompter-mtlkit-vit"])
def test_deepcopy_and_pickle_after_a_training_forward(arch: str) -> None:
    """The engine may copy the model (EMA, best snapshot) after a step: the batch's aux / cut tensors stay."""
    import copy
    import io

    build, size = BUILDERS[arch]
    channels = TASK_SETS["nyud"]
    model = build(channels)
    batch = make_batch(channels, size=size)
    sum(model.task_losses(model(batch["image"]), batch, make_tasks(channels)).values()).backward()
    twin = copy.deepcopy(model)
    assert twin.aux == {} and twin.cut is None
    torch.save(model, io.BytesIO())
    model.eval()
    twin.eval()
    with torch.no_grad():
        a, b = model(batch["image"]), twin(batch["image"])
    for t in channels:
        torch.testing.assert_close(a[t], b[t])
