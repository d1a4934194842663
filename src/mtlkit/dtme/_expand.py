"""DTME-MTL expansion: calibrate → select layers → attach TM / TE (the ``dtme`` model transform), and the
trainer callback that does it once during training (DESIGN.md §6.4-6.9, the paper's Alg. 1).

In a custom training loop::

    result = expand(model, tasks, train_loader, DTMEConfig().for_dataset("nyud"))
    optimizer.add_param_group({"params": result.new_parameters})
    print(result.summary)

In ``mtlkit train --dtme`` the :class:`DTMECallback` does this at the configured iteration, adds the new
parameters to the optimizer and the LR schedule (as task-specific parameters: LR × ``lr_ts``), records
the transform in ``model.json`` (so checkpoints rebuild into the expanded model), prints the per-layer
table (:func:`~mtlkit.dtme.expansion_table`), writes the analysis to ``token_space.json`` in the run
directory and reports the expansion in ``metrics.json`` under ``"dtme"`` (keys: docs/dtme.md); with
``final_analysis`` it analyses the expanded model again at the end (``token_space_end.json``).
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
from mtlkit.dtme._expanded import DTME_SPEC_VERSION, ExpandedBackbone, expanded_backbone
from mtlkit.dtme._measure import count_parameters, inference_report, measure_inference, overhead_pct
from mtlkit.dtme._result import ANALYSIS_FILE, END_ANALYSIS_FILE, TokenSpaceAnalysis, conflict_change, expansion_table
from mtlkit.dtme._select import expanded_layers, select_layers
from mtlkit.errors import MtlkitError
from mtlkit.models import TRANSFORMS


@TRANSFORMS.register("dtme")
def apply_dtme(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Attach TM / TE as described by ``spec`` (``tasks``, ``tm_layers``, ``te_layers``, ``tokens``,
    ``modulator``, ``version``); deterministic, so a saved state dict loads into the result.

    ``version`` (:data:`DTME_SPEC_VERSION`) is needed with TE layers: specs written before version 2 put
    the task tokens of layer l before block l, one block earlier than now, and are refused.
    """
    tm, te = spec.get("tm_layers", []), spec.get("te_layers", [])
    if te and int(spec.get("version", 1)) < DTME_SPEC_VERSION:
        raise MtlkitError(
            f"this dtme spec (version {spec.get('version', 1)}) places the task tokens of layer l before block l; "
            f"since version {DTME_SPEC_VERSION} they extend the output of block l. Expand the model again, or add "
            f'"version": {DTME_SPEC_VERSION} to a hand-written spec'
        )
    backbone = expanded_backbone(model, spec.get("tasks"))
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
    #: human-readable table of what was measured and chosen (printed by the trainer callback)
    summary: str = ""


def _broadcast(obj: Any) -> Any:
    """Rank 0's value on every process (so all ranks expand the same layers); identity when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def require_unexpanded(model: nn.Module, what: str) -> None:
    """DTME and Recon expand a model once (the paper's Alg. 1); a second expansion is a user error."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ExpandedBackbone) and backbone.fork_layer is not None:
        raise MtlkitError(
            f"{what}: the model is already expanded (TM / TE or task-specific blocks from layer "
            f"{backbone.fork_layer}); expand an unexpanded model (analyze_token_space measures expanded ones)"
        )


def transform_model(
    model: nn.Module, name: str, spec: dict[str, Any], timing_images: torch.Tensor | None
) -> tuple[list[nn.Parameter], dict[str, Any]]:
    """Apply transform ``name`` in place; returns the new parameters and the cost report (parameters; with
    ``timing_images`` also inference time and FLOPs, both readings: see :mod:`mtlkit.dtme._measure`)."""
    before_ids = {id(p) for p in model.parameters()}
    n_before = count_parameters(model)
    tasks = list(spec["tasks"])
    cost_before = measure_inference(model, timing_images, tasks) if timing_images is not None else None
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
    if cost_before is not None:
        assert timing_images is not None
        report.update(inference_report(cost_before, measure_inference(model, timing_images, tasks), len(tasks)))
    return new, report


def expand(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Iterable[Batch],
    config: DTMEConfig | None = None,
    *,
    seed: int = 0,
) -> Expansion:
    """Calibrate ``model`` on ``batches``, choose the layers and attach TM / TE in place (one call of Alg. 1).

    ``config.calib_batches="auto"`` (the default) uses 100 batches here; the trainer resolves it for the
    run's dataset first (:meth:`DTMEConfig.for_dataset`).
    """
    cfg = config or DTMEConfig()
    require_unexpanded(model, "dtme")
    num_batches = cfg.resolved_calib_batches()
    analysis = analyze_token_space(model, tasks, batches, num_batches=num_batches, r=cfg.r)
    depth = len(analysis.layers)
    tm, te = select_layers(
        analysis.range_rates(),
        analysis.null_rates(),
        rho=cfg.rho,
        selection=cfg.selection,
        apply=cfg.mode,
        budget=cfg.budget,
        seed=cfg.seed if cfg.seed is not None else seed,
    )
    tm, te = _broadcast((tm, te))
    spec = {"tasks": list(tasks), "tm_layers": tm, "te_layers": te, "tokens": cfg.tokens,
            "modulator": cfg.modulator, "version": DTME_SPEC_VERSION}
    images = None
    if cfg.measure_inference:
        images = to_device(next(iter(batches)), model_device(model))["image"]
    new, cost = transform_model(model, "dtme", spec, images)
    union = expanded_layers(tm, te)
    analysis.expansion = {"tm_layers": tm, "te_layers": te, "selection": cfg.selection, "mode": cfg.mode,
                          "budget": cfg.budget, "rho": cfg.rho}
    report = {
        "tm_layers": tm,
        "te_layers": te,
        "expanded_layers": union,
        "expanded_ratio": len(union) / depth,
        "depth": depth,
        **cost,
        "calibration": {
            "batches": "all" if num_batches is None else num_batches,
            "covariance_batches": analysis.covariance_batches,
            "conflict_batches": analysis.conflict_batches,
            "skipped_batches": analysis.skipped_batches,
        },
        "token_space": analysis.summary(),
        "options": {**cfg.to_dict(), "calib_batches": "all" if num_batches is None else num_batches},
    }
    return Expansion(spec=spec, new_parameters=new, report=report, analysis=analysis,
                     summary=expansion_table(analysis, report))


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
        if getattr(trainer, "rank", 0) == 0:
            if result.summary:
                print(result.summary, flush=True)
            if result.analysis is not None:
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
        training = trainer.model.training
        seed = getattr(trainer, "seed", 0)
        result = expand(trainer.model, trainer.tasks, _FreshLoader(trainer), self.config, seed=seed)
        result.extra["training"] = training  # the end analysis runs in the same mode (BatchNorm in the heads)
        if self.config.freeze:
            for p in trainer.model.backbone.base.parameters():
                p.requires_grad_(False)
            result.report["frozen_params"] = count_parameters(trainer.model.backbone.base)
        return result

    def report(self, trainer: Any) -> dict[str, Any]:
        """As the base; with ``final_analysis`` the expanded model is analysed again at the end of training
        (``token_space_end.json``) and the change per space is reported (the paper's Tab. 14)."""
        rep = super().report(trainer)
        if self.result is None or not self.config.final_analysis:
            return rep
        if "end" not in self.result.extra:
            start, model = self.result.analysis, trainer.model
            was_training = model.training
            model.train(self.result.extra.get("training", True))
            try:
                end = analyze_token_space(model, trainer.tasks, _FreshLoader(trainer),
                                          num_batches=self.config.resolved_calib_batches(), r=self.config.r)
            finally:
                model.train(was_training)
            end.expansion = dict(start.expansion)
            self.result.extra["end"] = end
            if getattr(trainer, "rank", 0) == 0:
                end.save(Path(trainer.out) / END_ANALYSIS_FILE)
        end = self.result.extra["end"]
        rep[self.name]["token_space_end"] = end.summary()
        rep[self.name]["conflict_change"] = conflict_change(self.result.analysis, end)
        return rep


def load_analysis(run_dir: str | Path) -> TokenSpaceAnalysis:
    """The token-space analysis saved with a run."""
    return TokenSpaceAnalysis.load(Path(run_dir) / ANALYSIS_FILE)
