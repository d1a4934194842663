"""DTME-MTL expansion: calibrate → select layers → attach TM / TE (the ``dtme`` model transform), and the
trainer callback that does it once during training (DESIGN.md §6.4-6.9, the paper's Alg. 1).

In a custom training loop::

    result = expand(model, tasks, train_loader, DTMEConfig())
    optimizer.add_param_group({"params": result.new_parameters})

In ``mtlkit train --dtme`` the :class:`DTMECallback` does this at the configured iteration, adds the new
parameters to the optimizer and the LR schedule (as task-specific parameters: LR × ``lr_ts``), records
the transform in ``model.json`` (so checkpoints rebuild into the expanded model), writes the analysis to
``token_space.json`` in the run directory and reports the expansion in ``metrics.json`` under ``"dtme"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlkit.dtme._calibrate import Batch, analyze_token_space, model_device, to_device
from mtlkit.dtme._config import DTMEConfig
from mtlkit.dtme._expanded import ExpandedBackbone, expanded_backbone
from mtlkit.dtme._measure import count_parameters, inference_report, inference_seconds, overhead_pct
from mtlkit.dtme._result import ANALYSIS_FILE, TokenSpaceAnalysis
from mtlkit.dtme._select import select_layers
from mtlkit.models import TRANSFORMS


@TRANSFORMS.register("dtme")
def apply_dtme(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Attach TM / TE as described by ``spec`` (``tasks``, ``tm_layers``, ``te_layers``, ``tokens``,
    ``modulator``); deterministic, so a saved state dict loads into the result."""
    backbone = expanded_backbone(model, spec.get("tasks"))
    tm, te = spec.get("tm_layers", []), spec.get("te_layers", [])
    backbone.add_token_modules(tm, te, int(spec.get("tokens", 6)), spec.get("modulator", "affine"))
    return model


@dataclass
class Expansion:
    """What an expansion did: the transform spec, the analysis and the report for ``metrics.json``."""

    spec: dict[str, Any]
    new_parameters: list[nn.Parameter]
    report: dict[str, Any]
    analysis: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _broadcast(obj: Any) -> Any:
    """Rank 0's value on every process (so all ranks expand the same layers); identity when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def transform_model(
    model: nn.Module, name: str, spec: dict[str, Any], timing_images: torch.Tensor | None
) -> tuple[list[nn.Parameter], dict[str, Any]]:
    """Apply transform ``name`` in place; returns the new parameters and the cost report."""
    before_ids = {id(p) for p in model.parameters()}
    n_before = count_parameters(model)
    t_before = inference_seconds(model, timing_images) if timing_images is not None else None
    TRANSFORMS.get(name)(model, spec)
    new = [p for p in model.parameters() if id(p) not in before_ids]
    n_after = count_parameters(model)
    report: dict[str, Any] = {
        "params_before": n_before,
        "params_after": n_after,
        "params_added": n_after - n_before,
        "param_overhead_pct": overhead_pct(n_before, n_after),
    }
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ExpandedBackbone):
        report["fork_layer"] = backbone.fork_layer
    if t_before is not None:
        report.update(inference_report(t_before, inference_seconds(model, timing_images), len(spec["tasks"])))
    return new, report


def expand(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Iterable[Batch],
    config: DTMEConfig | None = None,
    *,
    seed: int = 0,
) -> Expansion:
    """Calibrate ``model`` on ``batches``, choose the layers and attach TM / TE in place (one call of Alg. 1)."""
    cfg = config or DTMEConfig()
    analysis = analyze_token_space(model, tasks, batches, num_batches=cfg.calib_batches, r=cfg.r)
    tm, te = select_layers(
        analysis.range_rates(),
        analysis.null_rates(),
        rho=cfg.rho,
        selection=cfg.selection,
        apply=cfg.mode,
        seed=cfg.seed if cfg.seed is not None else seed,
    )
    tm, te = _broadcast((tm, te))
    spec = {"tasks": list(tasks), "tm_layers": tm, "te_layers": te, "tokens": cfg.tokens, "modulator": cfg.modulator}
    images = None
    if cfg.measure_inference:
        images = to_device(next(iter(batches)), model_device(model))["image"]
    new, cost = transform_model(model, "dtme", spec, images)
    analysis.expansion = {"tm_layers": tm, "te_layers": te, "selection": cfg.selection, "mode": cfg.mode}
    report = {"tm_layers": tm, "te_layers": te, **cost, "token_space": analysis.summary(), "options": cfg.to_dict()}
    return Expansion(spec=spec, new_parameters=new, report=report, analysis=analysis)


class _FreshLoader:
    """Re-iterable view of ``trainer.train_loader``: every pass starts a new, identically seeded loader, so
    the covariance and the conflict pass see the same calibration batches."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def __iter__(self):
        return iter(self.trainer.train_loader)

    def __len__(self) -> int:
        return len(self.trainer.train_loader)


class ExpansionCallback:
    """A model transform for the Trainer: runs :meth:`run` once, at the start of iteration ``at`` (before
    that iteration's step), then adds the new parameters to the optimizer (task-specific: LR × ``lr_ts``)
    and records the transform in the run's ``model.json``.

    Built without the run's length (``DTMECallback({"rho": 0.25})`` in user code), the expansion point is
    resolved when the Trainer binds it to its ``iters``.
    """

    name = ""
    analysis_file = ""
    #: the Trainer checks that its model can take this transform before training
    is_transform = True

    def __init__(self, config: Any, iters: int | None = None) -> None:
        self.config = config
        self.iters = iters
        self.at = config.resolved_iteration(iters)
        self.result: Expansion | None = None

    def bind(self, iters: int) -> ExpansionCallback:
        """Resolve the expansion point for a run of ``iters`` iterations (errors when it is past the end)."""
        self.iters = iters
        self.at = self.config.resolved_iteration(iters)
        return self

    def done_before(self, iteration: int) -> bool:
        """True when a run resumed at ``iteration`` is past the expansion point."""
        return iteration > self.at

    def run(self, trainer: Any) -> Expansion:
        raise NotImplementedError

    def on_iteration_start(self, trainer: Any, iteration: int) -> None:
        if self.result is not None or iteration != self.at:
            return
        result = self.run(trainer)
        trainer.add_param_group(result.new_parameters, self.name, lr_scale=getattr(trainer, "lr_ts", 1.0))
        trainer.model_spec.setdefault("transforms", []).append({"name": self.name, "spec": result.spec})
        result.report["iteration"] = iteration
        self.result = result
        if getattr(trainer, "rank", 0) == 0 and result.analysis is not None:
            out = Path(trainer.out)
            out.mkdir(parents=True, exist_ok=True)
            result.analysis.save(out / self.analysis_file)

    def report(self, trainer: Any) -> dict[str, Any]:
        """``{"dtme": {...}}`` for ``metrics.json`` (an empty section when training ended before expansion)."""
        if self.result is None:
            return {self.name: {"expanded": False, "iteration": self.at}}
        return {self.name: {"expanded": True, **self.result.report}}


class DTMECallback(ExpansionCallback):
    """Expands the trainer's model with DTME at ``config.iteration`` (see module docstring)."""

    name = "dtme"
    analysis_file = ANALYSIS_FILE

    def __init__(self, config: DTMEConfig | dict[str, Any] | None = None, iters: int | None = None) -> None:
        cfg = config if isinstance(config, DTMEConfig) else DTMEConfig.from_dict(config)
        super().__init__(cfg, iters)

    def run(self, trainer: Any) -> Expansion:
        seed = getattr(trainer, "seed", 0)
        result = expand(trainer.model, trainer.tasks, _FreshLoader(trainer), self.config, seed=seed)
        if self.config.freeze:
            for p in trainer.model.backbone.base.parameters():
                p.requires_grad_(False)
            result.report["frozen_params"] = count_parameters(trainer.model.backbone.base)
        return result


def load_analysis(run_dir: str | Path) -> TokenSpaceAnalysis:
    """The token-space analysis saved with a run."""
    return TokenSpaceAnalysis.load(Path(run_dir) / ANALYSIS_FILE)
