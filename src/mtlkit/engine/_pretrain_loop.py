"""The optimisation loop every ``mtlkit pretrain`` objective shares (MAE in :mod:`.pretrain`, SimSiam in
:mod:`._simsiam`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mtlkit.errors import MtlkitError


def run_steps(cfg: Any, opt: torch.optim.Optimizer, lr_of: Callable[[int, dict[str, Any]], float],
              loss_at: Callable[[int], torch.Tensor], progress: bool) -> tuple[list[dict[str, float]], float]:
    """The loop every objective shares: per step set each group's lr (``lr_of(step, group)``), one backward and
    optimizer step of ``loss_at(step)``, refuse a non-finite loss; the mean loss every ``cfg.log_every`` steps
    -> (loss curve, seconds)."""
    curve: list[dict[str, float]] = []
    window: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_of(step, g)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if not math.isfinite(window[-1]):
            raise MtlkitError(f"pretrain loss is not finite at step {step}; lower --lr")
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            curve.append({"step": step + 1, "loss": float(np.mean(window)),
                          "seconds": round(time.perf_counter() - t0, 1)})
            window = []
            if progress:
                print(f"pretrain step {step + 1}/{cfg.steps}  loss {curve[-1]['loss']:.4f}  "
                      f"{curve[-1]['seconds']:.0f}s", flush=True)
    return curve, time.perf_counter() - t0


__all__ = ["run_steps"]
