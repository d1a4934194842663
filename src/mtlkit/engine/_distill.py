"""The trainer's side of URL distillation (``--distill url``) and of the feature-distance probe
(``--feature-distance``), both from :mod:`mtlkit.distill`.

:class:`DistillRuntime` holds the frozen teachers (the cached single-task models, loaded without drawing from
the global random generator), the :class:`~mtlkit.distill.URLDistiller` and/or the
:class:`~mtlkit.distill.FeatureDistanceProbe`. Both are built at the first step from that step's features
(channel counts), their adaptors initialised from their own ``torch.Generator`` seeded from the run seed
(our choice: the official code draws from the global one; an own generator keeps a resumed run exact).

It plugs into the update strategies through two :class:`~mtlkit.strategies.StepContext` callbacks:

- ``backward_hook(features, batch, tasks)``, called after each forward and **before** the balancer's
  backward: back-propagates ``Σ_{t in tasks} λ_t D_t`` keeping the graph, so that the balancer's update
  accumulates on top and the balancer sees only the task losses (``nyu_url.py`` lines 201-219: the
  weighting is computed from the task losses, then ``loss = loss + dist_loss``, one backward). The joint
  strategy distils every task once per batch; the selective strategy distils the tasks of the group it
  updates (each task once per batch, as its task loss; our choice, the official code has no groups). The
  probe runs here too, once per iteration, on detached features;
- ``after_step()``, after each optimizer step: the adaptors' own optimizer step (lines 217-221).

:meth:`DistillRuntime.end_iteration` advances the adaptors' cosine schedule (once per trainer iteration)
and returns what the log row gets: ``distill/<task>`` and ``feature_distance/<task>`` (``log.csv`` columns).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlkit.distill import (
    LOG_KEY,
    OPTIONS,
    PAPER,
    FeatureDistanceProbe,
    URLDistiller,
    build_teacher,
    model_select,
)
from mtlkit.errors import MtlkitError

#: ``--distill`` values
METHODS = ("url",)
#: ``--feature-distance`` options (our choices: the study gives none)
PROBE_OPTIONS: dict[str, Any] = {"every": 1, "lr": OPTIONS["lr"], "weight_decay": OPTIONS["weight_decay"]}
#: metrics.json keys
DISTILL_KEY = "distill"


def check_options(distill: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated URL options (``--distill-opt k=v``) merged over the official defaults."""
    options = dict(options or {})
    if distill is None:
        if options:
            raise MtlkitError("--distill-opt needs --distill url")
        return {}
    if distill not in METHODS:
        raise MtlkitError(f"--distill {distill!r}: the only distillation method is {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in OPTIONS.items())
        raise MtlkitError(f"--distill url has no option(s) {', '.join(unknown)}; valid: {valid}")
    out = {**OPTIONS, **options}
    if out["schedule"] not in ("cosine", "constant"):
        raise MtlkitError(f"--distill-opt schedule={out['schedule']!r}: use cosine (official) or constant")
    for k in ("lr", "weight_decay"):
        try:
            out[k] = float(out[k])
        except (TypeError, ValueError):
            raise MtlkitError(f"--distill-opt {k}={out[k]!r}: must be a number") from None
    return out


def check_probe_options(options: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``--feature-distance`` (True / options) -> probe options, or None when off."""
    if not options:
        return None
    given = {} if options is True else dict(options)
    unknown = sorted(set(given) - set(PROBE_OPTIONS))
    if unknown:
        raise MtlkitError(
            f"--feature-distance has no option(s) {', '.join(unknown)}; valid: {', '.join(PROBE_OPTIONS)}")
    out = {**PROBE_OPTIONS, **given}
    try:
        out = {"every": int(out["every"]), "lr": float(out["lr"]), "weight_decay": float(out["weight_decay"])}
    except (TypeError, ValueError):
        raise MtlkitError(f"--feature-distance options must be numbers, got {given}") from None
    return out


def teachers_from_runs(runs: Mapping[str, str | Path], tasks: list[str], device: torch.device,
                       model: nn.Module | None = None) -> dict[str, nn.Module]:
    """Frozen teachers ``{task: feature extractor}`` from the single-task run directories (built-in models
    are rebuilt from their ``model.json``; a user's model needs ``teachers=`` given to the Trainer)."""
    from mtlkit.engine.checkpoint import load_model

    missing = [t for t in tasks if t not in runs]
    if missing:
        raise MtlkitError(f"no single-task run for task(s) {missing} to use as teacher; train them with --single-task")
    out = {}
    for t in tasks:
        run = Path(runs[t])
        if not (run / "model.safetensors").is_file():
            raise MtlkitError(f"teacher of task {t!r}: {run}/model.safetensors not found; retrain the single-task "
                              "baselines (mtlkit train --single-task)")
        select = None if model is None else model_select(model)
        select = select[-1] if isinstance(select, list | tuple) else select
        out[t] = build_teacher(lambda run=run: load_model(run, device)[0], None, select).to(device)
    return out


class DistillRuntime:
    """URL distillation and / or the feature-distance probe of one training run."""

    def __init__(
        self,
        teachers: Mapping[str, nn.Module],
        *,
        distill: str | None,
        options: Mapping[str, Any] | None,
        probe: bool | Mapping[str, Any] | None,
        total_steps: int,
        seed: int,
        device: torch.device,
        select: Any = None,
        sync_grads: Callable[[list[nn.Parameter]], None] | None = None,
        reduce_values: Callable[[dict[str, float]], dict[str, float]] | None = None,
    ) -> None:
        self.options = check_options(distill, options)
        self.probe_options = check_probe_options(probe)
        self.use_url = distill is not None
        if not self.use_url and self.probe_options is None:
            raise MtlkitError("DistillRuntime needs --distill url or --feature-distance")
        self.teachers = dict(teachers)
        self.total_steps, self.seed, self.device = int(total_steps), int(seed), device
        self.select = select if select is not None else self.options.get("feature")
        self.sync_grads, self.reduce = sync_grads, reduce_values
        self.distiller: URLDistiller | None = None
        self.probe: FeatureDistanceProbe | None = None
        self._pending: dict[str, Any] | None = None
        self._iteration = -1
        self._teacher_feats: dict[str, torch.Tensor] | None = None
        self._probed: dict[str, float] | None = None
        self._stepped = False
        self._nonfinite = 0

    # ------------------------------------------------------------------ construction at the first step
    def _build(self, model: nn.Module, feats: Any, inputs: Any) -> None:
        if feats is None:
            raise MtlkitError(
                f"{type(model).__name__} has no forward_features(x): URL and --feature-distance need the features "
                "the heads read (mtlkit.models.MultiTaskModel and SharedBottom expose them)"
            )
        select = model_select(model, self.select)
        if self.use_url and self.distiller is None:
            gen = torch.Generator().manual_seed(self.seed)
            total = self.total_steps if self.options["schedule"] == "cosine" else None
            self.distiller = URLDistiller.from_example(
                self.teachers, feats, inputs, select=select, weights=self.options["weights"], lr=self.options["lr"],
                weight_decay=self.options["weight_decay"], total_steps=total, generator=gen,
            )
            self.distiller.to(self.device)
        if self.probe_options is not None and self.probe is None:
            self.probe = FeatureDistanceProbe.from_example(
                self.teachers, feats, inputs, select=select, seed=self.seed + 1, **self.probe_options
            )
            self.probe.to(self.device)
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    # ------------------------------------------------------------------ the step callbacks
    def hook(self, model: nn.Module, iteration: int, input_key: str) -> Callable[[Any, dict, list[str]], None]:
        """The ``StepContext.backward_hook`` of one iteration."""

        def backward_hook(feats: Any, batch: dict[str, Any], tasks: list[str]) -> None:
            inputs = batch[input_key]
            self._build(model, feats, inputs)
            first = iteration != self._iteration
            if first:  # a new batch: teacher features once per batch (selective: K forwards on it)
                self._iteration = iteration
                bank = self.distiller if self.distiller is not None else self.probe
                assert bank is not None
                self._teacher_feats = bank.teacher_features(inputs)
                if self.probe is not None and self.probe.due(iteration):
                    self._probed = self.probe.step(feats, teacher_features=self._teacher_feats, iteration=iteration,
                                                   sync_grads=self.sync_grads)
            if self.distiller is None:
                return
            self.distiller.zero_grad()
            d = self.distiller.distances(feats, teacher_features=self._teacher_feats)
            if first:  # the log and metrics.json: the batch's first forward (as the strategies' losses)
                self.distiller.last = {t: float(v.detach()) for t, v in d.items()}
                self.distiller.recent.append(dict(self.distiller.last))
            picked = [self.distiller.weights[t] * d[t] for t in tasks if t in d]  # nyu_url.py lines 200-201
            if not picked:
                return
            total = torch.stack(picked).sum()
            value = float(total.detach())
            if not math.isfinite(value):  # never let it corrupt the student (the task losses still step)
                self._nonfinite += 1
                warnings.warn(f"URL distillation loss is {value}; left out of this step", RuntimeWarning, stacklevel=2)
                return
            total.backward(retain_graph=True)
            self._stepped = True

        return backward_hook

    def after_step(self) -> None:
        """The adaptors' optimizer step, after the student's (``nyu_url.py`` lines 220-221)."""
        if self.distiller is not None and self._stepped:
            self.distiller.step(self.sync_grads)
            self.distiller.zero_grad()
        self._stepped = False

    def end_iteration(self) -> dict[str, Any]:
        """Advance the adaptors' schedule; ``{"distill": {task: D}, "feature_distance": {...}}`` for the log."""
        out: dict[str, Any] = {}
        if self.distiller is not None:
            self.distiller.schedule_step()
            if self.distiller.last:
                out[DISTILL_KEY] = self._reduce(self.distiller.last)
            if self._nonfinite:
                out["distill_nonfinite"] = self._nonfinite
                self._nonfinite = 0
        if self._probed is not None:
            out[LOG_KEY] = self._reduce(self._probed)
            self._probed = None
        return out

    def _reduce(self, values: dict[str, float]) -> dict[str, float]:
        return dict(values) if self.reduce is None else self.reduce(dict(values))

    # ------------------------------------------------------------------ report and state
    def report(self) -> dict[str, Any]:
        """``metrics.json`` entries: final URL distances and probe distances per task (mean of the last steps)."""
        out: dict[str, Any] = {}
        if self.distiller is not None:
            out[DISTILL_KEY] = {"method": "url", "weights": dict(self.distiller.weights),
                                "distance": self._reduce(self.distiller.final())}
        if self.probe is not None:
            out[LOG_KEY] = self._reduce(self.probe.final())
        return out

    def state_dict(self) -> dict[str, Any]:
        if self.distiller is None and self.probe is None:
            return dict(self._pending or {})
        return {
            "distiller": None if self.distiller is None else self.distiller.state_dict(),
            "probe": None if self.probe is None else self.probe.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        if (self.use_url and self.distiller is None) or (self.probe_options is not None and self.probe is None):
            self._pending = dict(state)  # built at the first step (channel counts come from its features)
            return
        self._load(state)

    def _load(self, state: Mapping[str, Any]) -> None:
        if self.distiller is not None and state.get("distiller") is not None:
            self.distiller.load_state_dict(state["distiller"])
            self.distiller._move_optimizer_state(self.device)
        if self.probe is not None and state.get("probe") is not None:
            self.probe.load_state_dict(state["probe"])
            self.probe._move_optimizer_state(self.device)


def _as_teacher(module: nn.Module, model: nn.Module) -> nn.Module:
    """A user's teacher: a single-task model (wrapped to give its distilled feature) or a feature extractor."""
    from mtlkit.distill import FeatureExtractor, freeze

    if callable(getattr(module, "forward_features", None)):
        select = model_select(model)
        module = FeatureExtractor(module, select[-1] if isinstance(select, list | tuple) else select)
    return freeze(module)


def build_runtime(
    trainer: Any, distill: str | None, options: Mapping[str, Any] | None, probe: bool | Mapping[str, Any] | None,
    teachers: Mapping[str, nn.Module] | None,
) -> DistillRuntime | None:
    """The trainer's :class:`DistillRuntime` (None when neither URL nor the probe is on). Teachers: as given
    (``{task: single-task model or feature extractor}``), else the single-task runs of the trainer's Δm
    baselines (``baselines.json`` lists them; ``from_config`` trains them first when missing)."""
    from mtlkit.engine import _distributed as D

    opts = check_options(distill, options)  # validate before loading anything
    if distill is None and not check_probe_options(probe):
        return None
    tasks = list(trainer.tasks)
    if teachers is not None:
        missing = [t for t in tasks if t not in teachers]
        if missing:
            raise MtlkitError(f"teachers= misses task(s) {missing}; give one single-task model per task")
        made = {t: _as_teacher(teachers[t], trainer.model).to(trainer.device) for t in tasks}
    elif trainer.baseline is not None and trainer.baseline.runs:
        made = teachers_from_runs(trainer.baseline.runs, tasks, trainer.device, trainer.model)
    else:
        raise MtlkitError(
            "URL / --feature-distance need the single-task models as teachers: pass teachers={task: model} or "
            "baseline=... (mtlkit.baselines.train); from a config, train them first with "
            "mtlkit.engine.train_teachers(config) (`mtlkit train --distill url` does)"
        )
    return DistillRuntime(
        made, distill=distill, options=opts if distill else None, probe=probe, total_steps=trainer.iters,
        seed=trainer.seed, device=trainer.device, sync_grads=D.average_gradients, reduce_values=D.average_values,
    )



# ---------------------------------------------------------------------- `mtlkit methods`
def _table_rows() -> list[tuple[str, str, str, str]]:
    opts = ", ".join(f"{k}={v}" for k, v in OPTIONS.items())
    paper = PAPER.split(":")[0] + ", IJCV 2023"  # the table's short form; the full title in docs/url.md
    return [("url", "distillation", paper, f"--distill url --distill-opt {opts}; teachers: single-task runs")]


def _table_notes() -> list[str]:
    return ["url: composes with every method and strategy (added after the balancer); official defaults: "
            "weights semseg=1 depth=1 normals=2 (others 1), adaptor Adam lr 1e-2 wd 5e-4, cosine; "
            "--feature-distance probes the distance to the single-task features (imbalance study Fig. 6)"]


def _register_table_rows() -> None:
    from mtlkit.balancing._options import TABLE_NOTES, TABLE_ROWS

    if _table_rows not in TABLE_ROWS:
        TABLE_ROWS.append(_table_rows)
    if _table_notes not in TABLE_NOTES:
        TABLE_NOTES.append(_table_notes)


_register_table_rows()
