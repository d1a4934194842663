"""Recon baseline (Shi et al., "Recon: Reducing Conflicting Gradients from the Root", ICLR 2023), as the
DTME paper compares against it (Tab. 7; DESIGN.md §6.10).

Per calibration batch and layer, the gradient of every task's loss w.r.t. the layer's parameters; a pair
of tasks conflicts in that layer when the cosine of their gradients is below ``threshold`` (0: Recon's
conflict definition, opposite directions). The conflicts are counted over batches and pairs; the most
conflicting layers are turned into task-specific copies (the ``recon`` model transform: each task's
stream runs through its own copy, initialised from the shared weights), and training continues.

Our choices: a "layer" is a transformer block (the same unit DTME expands, so the two are compared on
the same layers; one ViT-B block copied for 3 more tasks is the ~23% overhead the DTME paper reports); the
conversion happens once during training, at the same point as DTME's expansion, instead of Recon's
retraining from scratch with the new architecture.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlkit.dtme._calibrate import (
    Batch,
    _Buffers,
    draw_batches,
    model_device,
    synchronize,
    task_losses,
    to_device,
    transformer_blocks,
)
from mtlkit.dtme._config import ReconConfig
from mtlkit.dtme._expand import (
    Expansion,
    ExpansionCallback,
    _broadcast,
    _FreshLoader,
    require_unexpanded,
    transform_model,
)
from mtlkit.dtme._expanded import expanded_backbone
from mtlkit.errors import MtlkitError
from mtlkit.models import TRANSFORMS

RECON_FILE = "recon_conflicts.json"


@TRANSFORMS.register("recon")
def apply_recon(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Replace the blocks ``spec["layers"]`` by per-task copies (``spec["tasks"]``)."""
    expanded_backbone(model, spec.get("tasks")).make_task_specific(spec["layers"])
    return model


@dataclass
class ParameterConflicts:
    """Per layer: share of (batch, pair) with gradient cosine below the threshold, per-pair rates and mean
    cosines (T×T, task order ``tasks``)."""

    tasks: list[str]
    threshold: float
    batches: int
    rates: list[float]
    pair_rates: list[list[list[float]]]
    mean_cosine: list[list[list[float]]]
    skipped_batches: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)  # the layers made task-specific (filled by the callback)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(asdict(self), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> ParameterConflicts:
        return cls(**json.loads(Path(path).read_text()))


def pairwise_cosine(grads: torch.Tensor) -> torch.Tensor:
    """(T, P) flattened gradients -> (T, T) cosines (0 where a gradient is zero)."""
    g = grads.to(torch.float64)
    norms = g.norm(dim=1)
    cos = (g @ g.T) / (norms[:, None] * norms[None, :]).clamp_min(1e-300)
    return torch.where((norms[:, None] > 0) & (norms[None, :] > 0), cos, torch.zeros_like(cos))


def parameter_conflicts(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Iterable[Batch],
    *,
    num_batches: int | None = 100,
    threshold: float = 0.0,
) -> ParameterConflicts:
    """Count per-block parameter-gradient conflicts of every task pair over the calibration batches."""
    names = list(tasks)
    if len(names) < 2:
        raise MtlkitError(f"gradient conflicts need at least two tasks, got {names}")
    blocks = transformer_blocks(model)
    params = [[p for p in blk.parameters() if p.requires_grad] for blk in blocks]
    flat = [p for ps in params for p in ps]
    if not flat:
        raise MtlkitError("recon: the backbone blocks have no trainable parameters")
    t_num, n_layers = len(names), len(blocks)
    counts = torch.zeros(n_layers, t_num, t_num, dtype=torch.float64)
    cos_sum = torch.zeros_like(counts)
    device = model_device(model)
    n = skipped = 0
    synchronize(device)
    t0 = time.perf_counter()
    with _Buffers(model):
        for raw in draw_batches(batches, num_batches):
            with torch.enable_grad():
                losses = task_losses(model, tasks, to_device(raw, device))
            if not all(math.isfinite(float(v.detach())) for v in losses.values()):
                skipped += 1
                continue
            per_task = []
            for i, t in enumerate(names):
                gs = torch.autograd.grad(losses[t], flat, retain_graph=i < t_num - 1, allow_unused=True)
                per_task.append([torch.zeros_like(p) if g is None else g for g, p in zip(gs, flat, strict=True)])
            offset = 0
            for layer, ps in enumerate(params):
                g = torch.stack([torch.cat([x.reshape(-1) for x in pt[offset : offset + len(ps)]]) for pt in per_task])
                offset += len(ps)
                cos = pairwise_cosine(g).cpu()
                conflict = (cos < threshold).double()
                conflict.fill_diagonal_(0)
                counts[layer] += conflict
                cos_sum[layer] += cos
            n += 1
    synchronize(device)
    elapsed = time.perf_counter() - t0
    if n == 0:
        raise MtlkitError("recon: no calibration batch gave finite losses")
    pair_rates = counts / n
    iu = torch.triu_indices(t_num, t_num, 1)
    rates = [float(pr[iu[0], iu[1]].mean()) for pr in pair_rates]
    return ParameterConflicts(
        tasks=names,
        threshold=float(threshold),
        batches=n,
        rates=rates,
        pair_rates=pair_rates.tolist(),
        mean_cosine=(cos_sum / n).tolist(),
        skipped_batches=skipped,
        timings={"conflicts_s": elapsed},
    )


def most_conflicting(rates: list[float], n: int) -> list[int]:
    """The ``n`` layers with the highest conflict rate (ties: earlier layer), ascending."""
    order = sorted(range(len(rates)), key=lambda i: (-rates[i], i))
    return sorted(order[:n])


def recon_expand(
    model: nn.Module, tasks: Mapping[str, Any], batches: Iterable[Batch], config: ReconConfig | None = None
) -> Expansion:
    """Measure parameter-gradient conflicts and make the most conflicting blocks task-specific, in place."""
    cfg = config or ReconConfig()
    require_unexpanded(model, "recon")
    conflicts = parameter_conflicts(
        model, tasks, batches, num_batches=cfg.resolved_calib_batches(), threshold=cfg.threshold
    )
    layers = _broadcast(most_conflicting(conflicts.rates, cfg.num_layers(len(conflicts.rates))))
    conflicts.layers = layers
    spec = {"tasks": list(tasks), "layers": layers}
    images = to_device(next(iter(batches)), model_device(model))["image"] if cfg.measure_inference else None
    new, cost = transform_model(model, "recon", spec, images)
    report = {
        "layers": layers,
        **cost,
        "conflict_rate": [round(r, 6) for r in conflicts.rates],
        "timings": conflicts.timings,
        "options": cfg.to_dict(),
    }
    return Expansion(spec=spec, new_parameters=new, report=report, analysis=conflicts)


class ReconCallback(ExpansionCallback):
    """Converts the most conflicting blocks into task-specific copies at ``config.iteration``."""

    name = "recon"
    analysis_file = RECON_FILE

    def __init__(self, config: ReconConfig | dict[str, Any] | None = None, iters: int | None = None) -> None:
        cfg = config if isinstance(config, ReconConfig) else ReconConfig.from_dict(config)
        super().__init__(cfg, iters)

    def run(self, trainer: Any) -> Expansion:
        return recon_expand(trainer.model, trainer.tasks, _FreshLoader(trainer), self.config)
