"""Model registry: ``--model NAME`` -> a MultiTaskModel for the given tasks and input size."""

from __future__ import annotations

from typing import Any

from mtlkit._registry import Registry
from mtlkit.errors import MtlkitError
from mtlkit.models.heads import HEADS, ClassificationHead
from mtlkit.models.multitask import MultiTaskModel
from mtlkit.models.vit import VIT_PRESETS, VisionTransformer, load_timm_checkpoint, vit_config

BACKBONES: Registry[Any] = Registry("model")
for _name in VIT_PRESETS:
    BACKBONES.register(_name, VisionTransformer)


def build_model(
    name: str,
    tasks: dict[str, Any],
    img_size: int | tuple[int, int] = 64,
    *,
    head: str = "linear",
    patch_size: int | None = None,
    pretrained: str | None = None,
    **overrides: Any,
) -> MultiTaskModel:
    """A ViT preset with one head per task (``tasks``: name -> :class:`mtlkit.tasks.Task`).

    ``pretrained``: path of a timm ViT checkpoint on disk (no downloads).
    """
    BACKBONES.get(name)
    head_cls = HEADS.get(head)
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    cfg = vit_config(name, size, patch_size, **overrides)
    if size[0] % cfg.patch_size or size[1] % cfg.patch_size:
        raise MtlkitError(
            f"image_size {size[0]}x{size[1]} is not divisible by the patch size {cfg.patch_size} of model "
            f"{name!r}; choose an image size that is a multiple of {cfg.patch_size} or set patch_size"
        )
    backbone = VisionTransformer(cfg)
    if pretrained:
        load_timm_checkpoint(backbone, pretrained)
    heads = {}
    for t, task in tasks.items():
        cls = ClassificationHead if getattr(task, "kind", "dense") == "classification" else head_cls
        heads[t] = cls(backbone.out_channels, task.channels)
    return MultiTaskModel(backbone, heads, size)
