"""``--arch``: build a run's model from (architecture, backbone name, tasks), and what the engine refuses.

``arch="shared"`` (the default) is mtlkit's shared encoder with one head per task (:func:`build_model`,
unchanged). ``mtan`` / ``mtinet`` build their CNN backbone from the model registry (any timm CNN with
stages; the ResNet family, whose dense setting keeps only ``layer4``, gets all four stages
``out_indices=(1, 2, 3, 4)`` as the survey code's ResNet MTAN); ``invpt`` / ``taskprompter`` a timm ViT
(its four feature blocks). ``arch_options`` go to the architecture's constructor (``--arch-opt k=v``), and
``arch_options["backbone"]`` (``--arch-opt backbone.out_indices=[1,2,3,4]``) to the backbone's.

Refusals (:func:`check_arch_support`, called by the engine's model check before training), one line each:

- methods on a single shared feature (``on="features"``: ``mgda_ub``, ``graddrop``) need a balancing cut
  every task reads: only MTI-Net has one; MTAN's and InvPT's cuts are per task, TaskPrompter has none;
- DTME / Recon expand a ViT encoder: InvPT takes both; TaskPrompter takes DTME (it runs the ViT blocks
  itself with its prompts and applies the modulators / task tokens there) but not Recon's per-task block
  copies; MTAN / MTI-Net have CNN encoders.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import ARCHS
from mtlkit.models.arch._base import ArchModel

#: architectures with a CNN encoder (the rest take a ViT)
CNN_ARCHS = ("mtan", "mtinet")


def arch_names() -> list[str]:
    return ["shared", *ARCHS.names()]


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def split_options(arch: str, options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor options, backbone options) of ``arch``; unknown option names fail in one line."""
    if arch not in arch_names():
        raise MtlkitError(f"unknown architecture {arch!r}; valid: {', '.join(arch_names())}")
    opts = dict(options or {})
    if arch == "shared":
        if opts:
            raise MtlkitError(f"--arch-opt {sorted(opts)} needs an architecture (--arch {'|'.join(ARCHS.names())})")
        return {}, {}
    backbone = opts.pop("backbone", None) or {}
    if not isinstance(backbone, dict):
        raise MtlkitError(f"--arch-opt backbone=...: give backbone options as backbone.KEY=VALUE, got {backbone!r}")
    params = inspect.signature(ARCHS.get(arch).__init__).parameters
    valid = sorted(k for k in params if k not in ("self", "backbone", "tasks"))
    bad = sorted(set(opts) - set(valid))
    if bad:
        raise MtlkitError(f"architecture {arch!r} has no option(s) {bad}; valid: {valid} (and backbone.KEY)")
    return opts, dict(backbone)


def build_arch_model(
    name: str,
    tasks: Mapping[str, Any],
    img_size: int | tuple[int, int] = 64,
    *,
    arch: str = "shared",
    arch_options: Mapping[str, Any] | None = None,
    head: str = "linear",
    patch_size: int | None = None,
    pretrained: str | bool | None = None,
    **overrides: Any,
) -> nn.Module:
    """The run's model: ``build_model(...)`` for ``shared``, else ``ARCHS[arch](backbone, {task: channels},
    **arch_options)`` on the backbone ``name`` (``head`` applies to ``shared`` only: each architecture has
    the official heads)."""
    from mtlkit.models._registry import build_backbone, build_model

    opts, bopts = split_options(arch, arch_options)
    if arch == "shared":
        return build_model(name, dict(tasks), img_size, head=head, patch_size=patch_size, pretrained=pretrained,
                           **overrides)
    sparse = [t for t, task in tasks.items() if not getattr(task, "dense", True)]
    if sparse:
        raise MtlkitError(f"--arch {arch} predicts dense maps; task(s) {sparse} are per-sample: use --arch shared")
    size = _size(img_size)
    kw = {**overrides, **bopts}
    backbone = build_backbone(name, size, patch_size=patch_size, pretrained=pretrained, **kw)
    vit = hasattr(backbone, "embed") and hasattr(backbone, "blocks")
    if arch in CNN_ARCHS and vit:
        raise MtlkitError(f"--arch {arch} needs a CNN backbone with stages (e.g. resnet18, hrnet_w18_small_v2); "
                          f"{name!r} is a ViT")
    if arch not in CNN_ARCHS and not vit:
        raise MtlkitError(f"--arch {arch} needs a ViT backbone (a preset such as micro / tiny or a timm ViT); "
                          f"{name!r} is not one")
    need = int(opts.get("num_stages", opts.get("num_scales", 4)))
    if arch in CNN_ARCHS and "out_indices" not in kw and len(backbone.out_channels) < need:
        # the ResNet family's dense setting keeps layer4 only: the architectures attend over the stages
        backbone = build_backbone(name, size, patch_size=patch_size, pretrained=pretrained,
                                  out_indices=(1, 2, 3, 4), **kw)
    if arch == "taskprompter":
        opts.setdefault("img_size", size)
    channels = {t: int(task.channels) for t, task in tasks.items()}
    return ARCHS.get(arch)(backbone, channels, **opts)


def arch_spec(arch: str, arch_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """What ``model.json`` records to rebuild the model (nothing for ``shared``: old specs stay valid)."""
    return {} if arch == "shared" else {"arch": arch, "arch_options": dict(arch_options or {})}


def check_arch_support(model: nn.Module, method: str, on_features: bool, transforms: list[str]) -> None:
    """Refuse, in one line, what an architecture cannot serve (see the module docstring)."""
    if not isinstance(model, ArchModel):
        return
    arch = model.arch
    if on_features and not model.shared_cut:
        why = "has no shared representation" if not model.has_shared_representation else "splits per task"
        raise MtlkitError(
            f"method {method!r} works on one feature every task reads; --arch {arch}'s balancing cut {why} "
            "(only mtinet has one): use --method-opt on=params or another method"
        )
    for name in transforms:
        if arch == "taskprompter" and name == "recon":
            raise MtlkitError(
                "recon is not supported on --arch taskprompter: it runs the ViT blocks itself with its task "
                "prompts and cannot run per-task block copies; use --arch invpt (--dtme works on both)"
            )
        if arch in CNN_ARCHS:
            raise MtlkitError(f"{name} expands a ViT encoder; --arch {arch} has a CNN encoder: use --arch invpt")
