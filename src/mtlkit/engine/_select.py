"""Model selection "best on validation" (``run.select = "best"``).

The seeds evaluate during training and report the best model: InvPT / TaskPrompter's code (and the imbalance
study, App. "evaluate after each training epoch and take the best model") keep the checkpoint with the best
multi-task performance Δm against the single-task models; DTME "best on validation every 1k iterations".
Here every periodic evaluation on the val split (``eval_every``) and the final model are candidates; the one
with the highest val Δm is the run's model (``model.safetensors``, ``metrics.json``'s test numbers). Our
choice: ties keep the earlier model; candidates from before a DTME / Recon expansion are dropped when the
model is expanded (their weights no longer fit the model).

The best weights are kept in memory and in ``best.safetensors`` (written before the resume state, so a
resumed run selects exactly as an uninterrupted one); the run state records ``{"iter", "delta_m",
"transforms"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtlkit.errors import MtlkitError

SELECT = ("last", "best")
BEST_FILE = "best.safetensors"


def check_select(select: str, baseline: Any, has_val: bool) -> str:
    """``select`` itself, or a one-line error naming what ``best`` needs."""
    if select not in SELECT:
        raise MtlkitError(f"select={select!r}: must be one of {', '.join(SELECT)}")
    if select == "best" and (baseline is None or not has_val):
        raise MtlkitError("select=best keeps the model with the best validation Δm: it needs a val split and "
                          "single-task baselines (train them with `mtlkit train --single-task`, or pass "
                          "--baseline FILE)")
    return select


def _val_delta_m(trainer: Any, val: dict[str, Any]) -> float:
    higher = {t: task.higher_is_better for t, task in trainer.tasks.items()}
    return float(trainer.baseline.delta_m(val["primary"], higher, "val"))


def consider(trainer: Any, val: dict[str, Any]) -> bool:
    """Record the current model as the best when its val Δm beats the best so far; True when it does."""
    rs = trainer.run_state
    score = _val_delta_m(trainer, val)
    n = len(trainer.model_spec.get("transforms", []))
    best = rs.get("best")
    if best is not None and best.get("transforms") == n and not score > best["delta_m"]:
        return False
    rs["best"] = {"iter": int(trainer.iteration), "delta_m": score, "transforms": n}
    trainer._best_state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    if trainer.rank == 0:
        from safetensors.torch import save_file

        from mtlkit.engine.checkpoint import _atomic

        state = {k: v.contiguous() for k, v in trainer._best_state.items()}
        _atomic(Path(trainer.out) / BEST_FILE, lambda p: save_file(state, str(p)))
    return True


def select_final(trainer: Any, val: dict[str, Any]) -> dict[str, Any]:
    """At the end: the final model is the last candidate; when an earlier one was better, load its weights and
    return its val result (the caller then evaluates the test split on it)."""
    consider(trainer, val)
    best = trainer.run_state["best"]
    if best["iter"] == trainer.iteration:
        return val
    state = getattr(trainer, "_best_state", None)
    if state is None:  # a resumed run: the weights are on disk
        from safetensors.torch import load_file

        path = Path(trainer.out) / BEST_FILE
        if not path.is_file():
            raise MtlkitError(f"{path} not found: the run state records a best model at iteration {best['iter']}")
        state = load_file(str(path))
    with torch.no_grad():
        trainer.model.load_state_dict(state)
    return trainer.evaluate("val")


__all__ = ["BEST_FILE", "SELECT", "check_select", "consider", "select_final"]
