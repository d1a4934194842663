"""The non-finite step guard: an optimizer step happens only from finite gradients.

A finite loss can still give a non-finite update (a balancer's solver dividing by a zero norm, an overflow in
a task's gradient); checking the loss alone lets that update poison the weights. The guard therefore checks
the gradients the optimizer is about to use (after the balancer and after the cross-process average, so every
process takes the same decision) and skips the step when any is NaN / inf: no weight and no optimizer state
changes. After a step it checks the weights; a finite gradient that still makes a weight non-finite (an
absurd learning rate) aborts the run, since the step can not be undone without a copy of every weight.
"""

from __future__ import annotations

from typing import Any

import torch

from mtlkit.errors import MtlkitError


class NonFiniteError(MtlkitError):
    """Training can not go on: weights became non-finite, or too many consecutive steps were skipped."""


def _finite(tensors: list[torch.Tensor]) -> bool:
    """All entries finite: one fused 2-norm per device (fast; one sync), and only when that is not finite the
    exact max-abs check (a 2-norm of large finite values can overflow; the max-abs can not)."""
    if not tensors:
        return True
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    for group in by_device.values():
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(group))).all()):
            continue
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(group, ord=float("inf")))).all()):
            return False
    return True


def optimized_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite."""
    return _finite([p.grad for p in optimized_parameters(optimizer) if p.grad is not None])


def guarded_step(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.step()`` when the gradients are finite (True); otherwise drop them and return False.

    Raises :class:`NonFiniteError` when a step from finite gradients made a weight non-finite.
    """
    if not finite_gradients(optimizer):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    if not _finite([p.detach() for p in optimized_parameters(optimizer)]):
        raise NonFiniteError("an optimizer step from finite gradients made the weights non-finite (learning rate "
                             "far too large?); lower --lr (the run directory keeps the last finite checkpoint)")
    return True


def check_skipped(counters: dict[str, Any], info: dict[str, Any], iteration: int, limit: int,
                  logger: Any = None) -> None:
    """Count consecutive batches without any optimizer step; abort after ``limit`` (0 = never).

    ``counters["consecutive_skipped"]`` is kept in the run state, so the count survives a resume.
    """
    if int(info.get("skipped", 0)) and not int(info.get("steps", 0)):
        counters["consecutive_skipped"] = counters.get("consecutive_skipped", 0) + 1
    else:
        counters["consecutive_skipped"] = 0
    if limit and counters["consecutive_skipped"] >= limit:
        if logger is not None:
            logger.close()
        raise NonFiniteError(
            f"training aborted at iteration {iteration}: {limit} consecutive steps skipped for non-finite losses or "
            "gradients; lower --lr, check the data (`mtlkit data check`), or raise run.max_consecutive_skipped"
        )
