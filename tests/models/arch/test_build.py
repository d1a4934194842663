"""``build_arch_model``: the --arch builder (backbone kind, ResNet stages, options, shared = build_model)."""

from __future__ import annotations

import pytest
import torch

from mtlkit.errors import MtlkitError
from mtlkit.models import MultiTaskModel
from mtlkit.models.arch import MTAN, InvPT, build_arch_model
from mtlkit.models.arch._build import arch_spec, split_options

from ._support import NYUD, make_tasks


def test_shared_is_the_plain_model_and_records_nothing() -> None:
    with torch.device("meta"):
        model = build_arch_model("micro", make_tasks(NYUD), 32)
    assert type(model) is MultiTaskModel
    assert arch_spec("shared", {}) == {}
    assert arch_spec("mtan", {"head_channels": 8}) == {"arch": "mtan", "arch_options": {"head_channels": 8}}


def test_resnet_gets_its_four_stages_for_mtan() -> None:
    """The ResNet family's dense setting keeps layer4 only; MTAN attends over layer1-4 (survey code)."""
    with torch.device("meta"):
        model = build_arch_model("resnet18", make_tasks(NYUD), 64, arch="mtan", arch_options={"head_channels": 8})
    assert isinstance(model, MTAN) and model.num_stages == 4
    assert model.backbone.out_channels == [64, 128, 256, 512]
    assert set(model.heads) == set(NYUD)


def test_options_reach_the_constructor_and_the_backbone() -> None:
    opts = {"embed_dim": 16, "pred_channels": 8, "backbone": {"depth": 4}}
    with torch.device("meta"):
        model = build_arch_model("micro", make_tasks(NYUD), 32, arch="invpt", arch_options=opts)
    assert isinstance(model, InvPT) and model.dims == [24, 12, 6]
    assert len(model.backbone.blocks) == 4


@pytest.mark.parametrize(
    ("name", "arch", "opts", "match"),
    [
        ("micro", "mtan", {}, "needs a CNN backbone"),
        ("convnext_atto", "invpt", {}, "needs a ViT backbone"),
        ("micro", "unet", {}, "unknown architecture 'unet'"),
        ("micro", "invpt", {"heads": 2}, r"has no option\(s\) \['heads'\]"),
        ("micro", "shared", {"embed_dim": 2}, "needs an architecture"),
    ],
)
def test_refusals(name: str, arch: str, opts: dict, match: str) -> None:
    with pytest.raises(MtlkitError, match=match), torch.device("meta"):
        build_arch_model(name, make_tasks(NYUD), 32, arch=arch, arch_options=opts)


def test_per_sample_tasks_are_refused() -> None:
    from mtlkit.tasks import make_task

    with pytest.raises(MtlkitError, match="per-sample"):
        build_arch_model("micro", {"cls": make_task("classification", num_classes=3)}, 32, arch="invpt")
    assert split_options("mtinet", {"backbone": {"out_indices": [1, 2, 3, 4]}}) == ({}, {"out_indices": [1, 2, 3, 4]})
