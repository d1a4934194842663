"""The generic ``regression`` task: ``num_targets`` values per sample, MSE or L1; MAE, RMSE, R²."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkit.errors import MtlkitError
from mtlkit.metrics import GenericRegressionMeter
from mtlkit.tasks._base import TASKS, Task, check_primary, zero_loss

_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def masked_regression_loss(pred: torch.Tensor, target: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """MSE / L1 over the finite targets (NaN marks a missing label); 0 with a gradient when none is."""
    if pred.numel() != target.numel():
        raise MtlkitError(f"{pred.numel()} predictions for {target.numel()} regression targets; the head needs "
                          "one output per target")
    pred = pred.reshape(target.shape)
    valid = torch.isfinite(target)
    if not valid.any():
        return zero_loss(pred)
    return _LOSSES[loss](pred[valid], target[valid].to(pred.dtype))


@TASKS.register("regression")
def regression_task(
    num_targets: int = 1, *, name: str = "regression", loss: str = "mse", primary: str = "mae"
) -> Task:
    """Regression of ``num_targets`` values per sample with ``loss="mse"`` or ``"l1"``; MAE, RMSE, R²
    (:class:`~mtlkit.metrics.GenericRegressionMeter`). Primary ``mae`` whatever the loss (QM9's multi-task
    papers, e.g. Nash-MTL, train with MSE and report MAE) unless ``primary`` names another."""
    if loss not in _LOSSES:
        raise MtlkitError(f"task {name!r}: loss must be one of {', '.join(_LOSSES)}, got {loss!r}")
    if not isinstance(num_targets, int) or num_targets < 1:
        raise MtlkitError(f"task {name!r}: num_targets must be a positive int, got {num_targets!r}")
    higher = check_primary(name, primary, GenericRegressionMeter.directions)
    return Task(
        name,
        num_targets,
        lambda p, t: masked_regression_loss(p, t, loss),
        lambda: GenericRegressionMeter(num_targets),
        primary,
        higher,
        kind="regression",
        display="regression",
        params={"num_targets": num_targets, "name": name, "loss": loss, "primary": primary},
        factory="regression",
        count_fn=lambda t: torch.isfinite(t).sum(),
    )
