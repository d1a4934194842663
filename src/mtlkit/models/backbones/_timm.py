"""Building backbones with timm: names, local checkpoints (never a download), checkpoint reports.

timm (and torchvision, which it imports) load only when a model is built: ``import mtlkit`` and the commands
that build nothing never import them.

``--pretrained PATH`` goes through timm's own mechanism: ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay={"file": PATH})`` reads ``.safetensors`` / ``.pth`` / ``.bin`` (EMA / ``state_dict`` /
``model`` entries too), runs the model's checkpoint filter (ViT position embeddings resampled bicubically to the
training grid, patch embeddings to another patch size, Swin's relative position tables, ...) and drops the
classifier. timm loads non-strictly there, so mtlkit reads timm's own report of missing keys and refuses a
checkpoint that leaves backbone weights uninitialised.
"""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.models.backbones._presets import FAMILIES, VIT_PRESETS, Family, family_of_module, vit_out_indices

_REMOTE_PREFIXES = ("hf-hub:", "hf_hub:", "timm/", "local-dir:")


def split_name(name: str) -> tuple[str, str]:
    """``"vit_base_patch16_224.augreg_in21k"`` -> (architecture, pretrained tag)."""
    arch, _, tag = name.partition(".")
    return arch, tag


def _timm():
    import timm

    return timm


def timm_family(arch: str) -> Family | None:
    from timm.models import model_entrypoint

    return family_of_module(model_entrypoint(arch).__module__)


def resolve(name: str, pretrained: str | bool | None = None) -> tuple[str, dict[str, Any]]:
    """A ``--model`` name -> (timm architecture, create_model overrides); fails before any training when the
    name is unknown or would need the network (a pretrained tag with no ``--pretrained`` file).

    ``pretrained=False`` asks for the random init on purpose (e.g. to load a run's own weights afterwards)."""
    if pretrained is True:
        raise MtlkitError("pretrained=True would download weights; mtlkit never downloads: pass the checkpoint path")
    if name in VIT_PRESETS:
        p = VIT_PRESETS[name.lower()]
        return p.arch, dict(p.kwargs)
    presets = ", ".join(VIT_PRESETS)
    if name.startswith(_REMOTE_PREFIXES):
        raise MtlkitError(
            f"model {name!r} names a download; mtlkit never downloads: pass the timm architecture name with "
            "--pretrained PATH of the checkpoint file"
        )
    timm = _timm()
    if not timm.is_model(name):
        raise UnknownNameError(
            f"unknown model {name!r}; valid models: {presets} or a timm model name (`mtlkit models`, "
            "timm.list_models())"
        )
    arch, tag = split_name(name)
    if tag and pretrained is None:
        raise MtlkitError(
            f"model {name!r} names pretrained weights that would be downloaded; mtlkit never downloads: pass the "
            f"checkpoint file with --pretrained PATH (or use {arch!r} for random init)"
        )
    return arch, {}


def check_pretrained_path(path: str) -> Path:
    if str(path) == "default":  # the checkpoint shipped in the package (mtlkit.checkpoints, issue #18)
        from mtlkit.checkpoints import default_checkpoint

        return default_checkpoint()
    p = Path(path)
    if not p.is_file():
        raise MtlkitError(f"checkpoint not found: {p} (--pretrained takes a .safetensors, .pth or .bin file)")
    if p.suffix not in (".safetensors", ".pth", ".bin", ".pt", ".ckpt"):
        raise MtlkitError(f"checkpoint {p}: unknown format {p.suffix!r}; use a .safetensors, .pth or .bin file")
    return p


def _is_vit(arch: str) -> bool:
    fam = timm_family(arch)
    return fam is not None and fam.name == "vit"


def _create_kwargs(arch: str, img_size: tuple[int, int], overrides: dict[str, Any]) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    kw: dict[str, Any] = {}
    fam = timm_family(arch)
    if fam is not None:
        kw.update(fam.kwargs)
    cfg = get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size:
        kw["img_size"] = img_size
    kw.update(overrides)
    return kw


class _MissingKeys(logging.Handler):
    """Collects the missing keys timm reports while loading pretrained weights (it loads non-strictly)."""

    pattern = re.compile(r"Missing keys \((.*)\) discovered")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = self.pattern.search(record.getMessage())
        if m:
            self.keys += [k.strip() for k in m.group(1).split(",") if k.strip()]


@contextmanager
def _timm_load_report():
    log = logging.getLogger("timm.models._builder")
    handler, level = _MissingKeys(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _depth(arch: str, kw: dict[str, Any]) -> int:
    """Number of blocks of a ViT-like timm model (built on the meta device)."""
    import torch

    plain = {k: v for k, v in kw.items() if k not in ("features_only", "out_indices")}
    with torch.device("meta"):
        return len(_timm().create_model(arch, **plain).blocks)


def create_backbone(
    name: str,
    img_size: tuple[int, int],
    *,
    pretrained: str | bool | None = None,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """``--model`` name (preset or timm name) -> :class:`ViTBackbone` or :class:`FeatureBackbone`.

    ``pretrained``: a checkpoint path, or False for a deliberate random init of a name with a pretrained tag."""
    from mtlkit.models.backbones._features import FeatureBackbone
    from mtlkit.models.backbones._vit import ViTBackbone

    arch, preset_kw = resolve(name, pretrained)
    timm = _timm()
    kw = _create_kwargs(arch, img_size, {**preset_kw, **overrides})
    vit = _is_vit(arch)
    fam = timm_family(arch)
    if not vit:
        idx = out_indices if out_indices is not None else (fam.out_indices if fam else None)
        if idx is None and fam is not None and fam.name == "samvit":
            idx = vit_out_indices(_depth(arch, kw))  # the blocks a plain ViT of that depth would give
        kw.update(features_only=True, out_indices=4 if idx is None else tuple(idx))
    else:
        kw["num_classes"] = 0
    load: dict[str, Any] = {}
    if pretrained:
        path = check_pretrained_path(pretrained)
        # source=None: a registry entry with source 'hf-hub' must not win over the local file
        load = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), source=None))
    try:
        with _timm_load_report() as report:
            model = timm.create_model(name if pretrained and name not in VIT_PRESETS else arch, **load, **kw)
    except (TypeError, AssertionError, ValueError) as e:
        raise MtlkitError(f"cannot build model {name!r} at image size {img_size} with {kw}: {e}") from e
    except RuntimeError as e:
        if pretrained:
            raise MtlkitError(
                f"checkpoint {pretrained} does not fit model {name!r}: {str(e).splitlines()[-1].strip()}; "
                f"`mtlkit models --check {name} {pretrained}` lists the keys"
            ) from e
        raise
    if pretrained:
        from timm.models import get_pretrained_cfg

        # (features_only models drop 'classifier' from their config: read the registry's)
        cfg = get_pretrained_cfg(name if name not in VIT_PRESETS else arch)
        classifier = (cfg.classifier if cfg is not None else None) or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        missing = [k for k in report.keys if not any(k.startswith(c + ".") for c in classifier)]
        if missing:
            raise MtlkitError(
                f"checkpoint {pretrained} lacks {len(missing)} weights of model {name!r} (e.g. {missing[0]}); "
                f"`mtlkit models --check {name} {pretrained}` lists them"
            )
    if vit:
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise MtlkitError(f"model {name!r} is not a timm VisionTransformer")
        return ViTBackbone(model, out_indices)
    return FeatureBackbone(model, fam.name if fam else arch, img_size)


def checkpoint_report(name: str, path: str, img_size: tuple[int, int] = (224, 224)) -> dict[str, list[str]]:
    """Load checkpoint ``path`` into model ``name`` (timm's reader and checkpoint filter, non-strict) and return
    ``{"missing": [...], "unexpected": [...]}`` state-dict keys (the classifier's keys count as unexpected)."""
    from timm.models import load_state_dict

    arch, preset_kw = resolve(name, pretrained=path)
    p = check_pretrained_path(path)
    kw = _create_kwargs(arch, img_size, preset_kw)
    kw = {k: v for k, v in kw.items() if k not in ("feature_location", "out_indices")}  # features_only arguments
    kw["num_classes"] = 0
    model = _timm().create_model(arch, **kw)
    state = load_state_dict(str(p))
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    state = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(state, strict=False)
    return {
        "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys),
        "mismatched": mismatched,
    }


def count_parameters_meta(name: str, img_size: tuple[int, int] = (224, 224)) -> int:
    """Parameters of the backbone of ``name``, built on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"):
        bb = create_backbone(name, img_size)
    return sum(p.numel() for p in bb.parameters())


__all__ = ["FAMILIES", "checkpoint_report", "count_parameters_meta", "create_backbone", "resolve", "split_name"]
