"""Model transforms: named, JSON-described changes to a built model (DTME expansion, Recon copies, ...).

A run saves ``{"build": build_model kwargs, "transforms": [{"name": ..., "spec": {...}}, ...]}`` so a
checkpoint of a transformed model is rebuilt by building the model and re-applying each transform in order
(deterministically from its spec) before loading the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from mtlkit._registry import Registry

#: name -> ``apply(model, spec) -> model`` (may modify in place and return it)
TRANSFORMS: Registry[Callable[[nn.Module, dict[str, Any]], nn.Module]] = Registry("model transform")


def apply_transforms(model: nn.Module, transforms: list[dict[str, Any]]) -> nn.Module:
    for t in transforms:
        model = TRANSFORMS.get(t["name"])(model, t["spec"])
    return model
