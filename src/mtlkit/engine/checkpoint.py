"""Checkpoints: model weights as safetensors + ``model.json`` (how to rebuild), and a resume state
(safetensors + JSON, never a pickle: :mod:`._state`).

A checkpoint is written to a temporary file and renamed, and never from non-finite weights, so a crash or
a NaN can not leave a corrupt or poisoned checkpoint behind.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mtlkit.errors import MtlkitError


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


def save_model(model: torch.nn.Module, spec: dict[str, Any], run_dir: Path) -> Path:
    """``model.safetensors`` + ``model.json``; refuses non-finite weights (keeps the last good file)."""
    if not weights_finite(model):
        raise MtlkitError("model weights are not finite: checkpoint not written (the previous one is kept)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = run_dir / "model.safetensors"
    _atomic(path, lambda p: save_file(state, str(p)))
    _atomic(run_dir / "model.json", lambda p: p.write_text(json.dumps(spec, indent=2)))
    return path


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu", model: torch.nn.Module | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A run's model with its weights: rebuilt from ``model.json`` (built-in models, including transforms
    such as DTME), or ``model``, the user's own object (of the class the run trained; transforms recorded in
    the run are re-applied to it first)."""
    from mtlkit.models import apply_transforms

    run_dir = Path(run_dir)
    spec_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    for p in (spec_path, weights):
        if not p.is_file():
            raise MtlkitError(f"{p} not found: expected a run directory written by mtlkit's Trainer")
    spec = json.loads(spec_path.read_text())
    if model is None:
        if "build" not in spec:
            raise MtlkitError(
                f"{run_dir} holds a user model ({spec.get('class', '?')}): pass the model object, "
                "load_model(run_dir, model=MyModel(...))"
            )
        from mtlkit.models.arch._build import build_arch_model
        from mtlkit.tasks import make_task

        build = dict(spec["build"])
        tasks = {t: make_task(t, **params) for t, params in build.pop("tasks").items()}
        # random init, whatever checkpoint the run started from: its own weights are loaded next (a timm name
        # with a pretrained tag would otherwise ask for that checkpoint again)
        model = build_arch_model(tasks=tasks, pretrained=False, **build)  # build_model unless an --arch
    model = apply_transforms(model, spec.get("transforms", []))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise MtlkitError(f"{run_dir}: the weights do not fit {type(model).__name__} ({first})") from None
    return model.to(device), spec


def save_resume(state: dict[str, Any], run_dir: Path) -> None:
    """The resume state as ``resume.safetensors`` + ``resume.json`` (no pickle; see :mod:`._state`)."""
    from mtlkit.engine._state import save_resume as save

    save(state, run_dir)


def load_resume(run_dir: Path) -> dict[str, Any] | None:
    """The state :func:`save_resume` wrote (an old pickled ``resume.pt`` is refused, never loaded)."""
    from mtlkit.engine._state import load_resume as load

    return load(run_dir)


def finite_losses(values: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())
