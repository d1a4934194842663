"""Model registry: ``--model NAME`` (an mtlkit preset or any timm model name) -> a MultiTaskModel."""

from __future__ import annotations

from typing import Any

from mtlkit._registry import Registry
from mtlkit.errors import MtlkitError
from mtlkit.models.backbones import VIT_PRESETS, Preset, create_backbone, resolve
from mtlkit.models.heads import HEADS, ClassificationHead
from mtlkit.models.multitask import MultiTaskModel

#: mtlkit's named presets (timm configurations); ``build_model`` also takes any timm model name
BACKBONES: Registry[Preset] = Registry("model")
for _name, _preset in VIT_PRESETS.items():
    BACKBONES.register(_name, _preset)


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def _check_patch(name: str, size: tuple[int, int], patch: int) -> None:
    if size[0] % patch or size[1] % patch:
        raise MtlkitError(
            f"image_size {size[0]}x{size[1]} is not divisible by the patch size {patch} of model {name!r}; "
            f"choose an image size that is a multiple of {patch} or set patch_size"
        )


def build_backbone(
    name: str,
    img_size: int | tuple[int, int] = 64,
    *,
    patch_size: int | None = None,
    pretrained: str | bool | None = None,
    **overrides: Any,
):
    """The backbone alone (see :mod:`mtlkit.models.backbones`)."""
    size = _size(img_size)
    if patch_size is not None:
        overrides["patch_size"] = patch_size
    if name in VIT_PRESETS:
        _check_patch(name, size, int(overrides.get("patch_size", VIT_PRESETS[name].patch_size)))
    backbone = create_backbone(name, size, pretrained=pretrained, **overrides)
    if getattr(backbone, "family", None) == "vit":
        _check_patch(name, size, int(backbone.vit.patch_embed.patch_size[0]))
    return backbone


def build_model(
    name: str,
    tasks: dict[str, Any],
    img_size: int | tuple[int, int] = 64,
    *,
    head: str = "linear",
    patch_size: int | None = None,
    pretrained: str | bool | None = None,
    **overrides: Any,
) -> MultiTaskModel:
    """A backbone with one head per task (``tasks``: name -> :class:`mtlkit.tasks.Task`).

    ``name``: a preset (``micro``, ``tiny``, ``small``, ``base``, ``large``) or a timm model name (a name with a
    pretrained tag, e.g. ``vit_base_patch16_224.augreg_in21k``, needs ``pretrained``). ``pretrained``: path of
    a timm checkpoint on disk (never a download), or False for a deliberate random init of a tagged name (a
    run's model rebuilt before its own weights are loaded). ``overrides``: ``timm.create_model`` arguments (``depth``,
    ``embed_dim``, ``out_indices`` = the feature blocks / stages, ...).
    """
    head_cls = HEADS.get(head)
    size = _size(img_size)
    backbone = build_backbone(name, size, patch_size=patch_size, pretrained=pretrained, **overrides)
    heads = {}
    for t, task in tasks.items():
        cls = head_cls if getattr(task, "dense", True) else ClassificationHead  # per-sample tasks: pooled head
        heads[t] = cls(backbone.out_channels, task.channels)
    return MultiTaskModel(backbone, heads, size)


def check_model(
    name: str,
    img_size: int | tuple[int, int] = 64,
    *,
    head: str = "linear",
    patch_size: int | None = None,
    pretrained: str | None = None,
) -> None:
    """Every check of :func:`build_model` without building on a real device (the backbone is built on the meta
    device: no memory, no init, no checkpoint read), so a bad name or size fails before training."""
    import torch

    from mtlkit.models.backbones._timm import check_pretrained_path

    HEADS.get(head)
    resolve(name, pretrained)
    if pretrained:
        check_pretrained_path(pretrained)
    with torch.device("meta"):
        build_backbone(name, img_size, patch_size=patch_size, pretrained=False)
