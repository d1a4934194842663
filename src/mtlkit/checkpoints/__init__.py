"""Checkpoints shipped inside the package (``--pretrained default``).

``micro_mae.safetensors``: the ``micro`` ViT preset pretrained by ``mtlkit pretrain`` (masked autoencoding on
synthetic scenes, :mod:`mtlkit.engine.pretrain`); ``micro_mae.json`` is its provenance (config, seed, data,
sha256, the command that reproduces it, seconds, loss curve). See docs/pretrain.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError

_HERE = Path(__file__).resolve().parent
#: model preset -> file name of its shipped checkpoint
SHIPPED = {"micro": "micro_mae.safetensors"}


def default_checkpoint(model: str = "micro") -> Path:
    """Path of the shipped pretrained checkpoint of ``model`` (``--pretrained default``)."""
    if model not in SHIPPED:
        raise MtlkitError(f"no shipped checkpoint for model {model!r}; shipped: {', '.join(SHIPPED)} "
                          "(train one with `mtlkit pretrain --model NAME`)")
    path = _HERE / SHIPPED[model]
    if not path.is_file():
        raise MtlkitError(f"shipped checkpoint {path} is missing; reinstall mtlkit or run the command in "
                          f"{path.with_suffix('.json').name}")
    return path


def provenance(model: str = "micro") -> dict[str, Any]:
    """The provenance JSON of the shipped checkpoint of ``model``."""
    return json.loads(default_checkpoint(model).with_suffix(".json").read_text())


__all__ = ["SHIPPED", "default_checkpoint", "provenance"]
