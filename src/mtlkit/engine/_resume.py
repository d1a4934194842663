"""What a Trainer saves to resume exactly, and how it is restored (the file format is :mod:`._state`).

Besides the model, optimizer, schedule, balancer, strategy and every RNG (the training loader's included),
the state holds the run's counters (skipped steps, validation history, training time), the config (a
different one is refused on resume) and, for a model expanded mid-run (DTME / Recon), the transforms: the
resumed trainer applies them to its freshly built model *before* loading the weights, registers the new
parameters with the optimizer as the callback did, and puts the optimizer's parameter groups in the saved
order (a selective run's group balancers and an expansion may have been added in any order).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mtlkit.engine._state import ResumeError, rng_state, set_rng_state


def new_run_state() -> dict[str, Any]:
    """The counters ``metrics.json`` reports over the whole run (they survive a resume)."""
    return {"skipped": 0, "consecutive_skipped": 0, "val_history": [], "train_time": 0.0, "timed_iters": 0,
            "finished": False}


def _expansions(trainer: Any) -> list[Any]:
    return [c for c in trainer.callbacks if getattr(c, "is_transform", False) and hasattr(c, "result")]


def trainer_state(trainer: Any) -> dict[str, Any]:
    """Everything :func:`restore` needs (tensors and plain values only: no pickle)."""
    return {
        "iteration": trainer.iteration,
        "model": trainer.model.state_dict(),
        "model_spec": copy.deepcopy(trainer.model_spec),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "balancer": trainer.balancer.state_dict(),
        "strategy": trainer.strategy.state_dict(),
        "rng": rng_state(getattr(trainer, "loader_generator", None)),
        "run": copy.deepcopy(getattr(trainer, "run_state", new_run_state())),
        "config": trainer.config.to_dict() if trainer.config is not None else None,
        "frozen": [n for n, p in trainer.model.named_parameters() if not p.requires_grad],
        "expansions": {c.name: {"report": c.result.report, "training": c.result.extra.get("training")}
                       for c in _expansions(trainer) if c.result is not None},
        **({"precision": trainer.precision.state_dict()} if getattr(trainer, "precision", None) is not None else {}),
        **({"distill": trainer.distill.state_dict()} if getattr(trainer, "distill", None) is not None else {}),
    }


def _apply_saved_transforms(trainer: Any, spec: dict[str, Any]) -> None:
    """Apply the transforms the saved model went through (and the current one has not), registering their
    new parameters with the optimizer as :class:`mtlkit.dtme.ExpansionCallback` does."""
    from mtlkit.models import apply_transforms

    done = len(trainer.model_spec.get("transforms", []))
    for t in spec.get("transforms", [])[done:]:
        before = {id(p) for p in trainer.model.parameters()}
        try:
            trainer.model = apply_transforms(trainer.model, [t]).to(trainer.device)
        except Exception as e:  # noqa: BLE001  (a spec that does not fit the model: one line, not a traceback)
            raise ResumeError(f"{trainer.out}: the saved {t.get('name')!r} transform does not apply to this model "
                              f"({type(e).__name__}: {e}); resume with the run's own config") from None
        new = [p for p in trainer.model.parameters() if id(p) not in before]
        trainer.add_param_group(new, t["name"], lr_scale=getattr(trainer, "lr_ts", 1.0))
        trainer.model_spec.setdefault("transforms", []).append(copy.deepcopy(t))


def _restore_expansions(trainer: Any, saved: dict[str, Any]) -> None:
    """The expansion callbacks' results (their ``metrics.json`` reports), so they do not expand again."""
    from mtlkit.dtme._expand import Expansion

    specs = {t["name"]: t["spec"] for t in trainer.model_spec.get("transforms", [])}
    for cb in _expansions(trainer):
        if cb.name not in saved or cb.name not in specs:
            continue
        analysis = None
        path = Path(trainer.out) / getattr(cb, "analysis_file", "")
        if cb.name == "dtme" and path.is_file():
            from mtlkit.dtme._result import TokenSpaceAnalysis

            analysis = TokenSpaceAnalysis.load(path)
        cb.result = Expansion(spec=specs[cb.name], new_parameters=[], report=saved[cb.name]["report"],
                              analysis=analysis, extra={"training": saved[cb.name].get("training", True)})


def _order_groups(trainer: Any, saved_groups: list[dict[str, Any]]) -> None:
    """Put the optimizer's (and the schedule's) parameter groups in the saved order, matched by name."""
    opt, sched = trainer.optimizer, trainer.scheduler
    saved = [g.get("name") for g in saved_groups]
    current = [g.get("name") for g in opt.param_groups]
    if saved == current or len(set(saved)) != len(saved) or sorted(map(str, saved)) != sorted(map(str, current)):
        return
    order = [current.index(n) for n in saved]
    opt.param_groups[:] = [opt.param_groups[i] for i in order]
    sched.base_lrs = [sched.base_lrs[i] for i in order]
    sched.lr_lambdas = [sched.lr_lambdas[i] for i in order]


def restore(trainer: Any, state: dict[str, Any]) -> None:
    """Load ``state`` (from :func:`trainer_state`) into ``trainer``; mismatches are one-line errors."""
    out = trainer.out
    _apply_saved_transforms(trainer, state["model_spec"])
    trainer.model_spec = copy.deepcopy(state["model_spec"])
    frozen = set(state.get("frozen", []))
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    try:
        trainer.model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ResumeError(f"{out}: the saved weights do not fit the model ({first}); resume with the run's own "
                          "config") from None
    trainer.balancer.load_state_dict(state["balancer"])
    trainer.strategy.load_state_dict(state["strategy"])
    prepare = getattr(trainer.strategy, "prepare", None)  # parameters the strategy adds (group balancers)
    if callable(prepare):
        prepare(trainer._context())
    _restore_expansions(trainer, state.get("expansions", {}))
    _order_groups(trainer, state["optimizer"]["param_groups"])
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise ResumeError(f"{out}: the saved optimizer state does not fit ({e}); resume with the run's own "
                          "config") from None
    trainer.scheduler.load_state_dict(state["scheduler"])
    if getattr(trainer, "precision", None) is not None:
        trainer.precision.load_state_dict(state.get("precision") or {})
    if getattr(trainer, "distill", None) is not None:
        trainer.distill.load_state_dict(state.get("distill"))
    set_rng_state(state["rng"], getattr(trainer, "loader_generator", None))
    trainer.iteration = int(state["iteration"])
    trainer.run_state = {**new_run_state(), **state.get("run", {})}
    trainer.callbacks = [c for c in trainer.callbacks if getattr(c, "result", None) is not None
                         or not getattr(c, "done_before", lambda it: False)(trainer.iteration)]


def finished_metrics(run_dir: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    """``metrics.json`` of a run that already finished (resuming it changes nothing), else None."""
    path = Path(run_dir) / "metrics.json"
    if state.get("run", {}).get("finished") and path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None  # a damaged metrics.json: the final evaluation writes it again
    return None


def truncate_logs(run_dir: Path, iteration: int) -> None:
    """Drop log records past the checkpoint (a crash after it logged iterations that will run again), so a
    resumed run's logs hold every iteration once: ``log.jsonl`` / ``log.csv`` keep ``iter < iteration``,
    ``eval.jsonl`` keeps ``iter <= iteration`` (the evaluation at the checkpoint ran before it was saved)."""
    run_dir = Path(run_dir)
    for name, keep in (("log.jsonl", lambda i: i < iteration), ("eval.jsonl", lambda i: i <= iteration)):
        p = run_dir / name
        if not p.is_file():
            continue
        lines = []
        for line in p.read_text().splitlines():
            try:
                if keep(int(json.loads(line)["iter"])):
                    lines.append(line)
            except (ValueError, KeyError, TypeError):
                break  # a torn last line
        p.write_text("".join(x + "\n" for x in lines))
    p = run_dir / "log.csv"
    if p.is_file():
        rows = p.read_text().splitlines()
        if rows:
            head, body = rows[0], rows[1:]
            col = head.split(",").index("iter") if "iter" in head.split(",") else None
            kept = [r for r in body if col is not None and _csv_iter(r, col) is not None
                    and _csv_iter(r, col) < iteration]  # type: ignore[operator]
            p.write_text("".join(x + "\n" for x in [head, *kept]))


def _csv_iter(row: str, col: int) -> float | None:
    try:
        return float(row.split(",")[col])
    except (IndexError, ValueError):
        return None


__all__ = ["finished_metrics", "new_run_state", "restore", "trainer_state", "truncate_logs"]
