"""The run configuration: nested sections (data, model, method, strategy, transforms, optim, run).

``Trainer.from_config(cfg)`` turns a config into objects (datasets, tasks, model, balancer, strategy,
transforms, optimizer) and the Trainer only ever sees those objects. A YAML file holds the sections::

    data: {name: synthetic-nyud, image_size: 64, batch_size: 16}
    model: {name: micro, head: linear}
    method: {name: avgnorm, options: {params: last}}
    strategy: {name: joint}
    transforms: {dtme: {rho: 0.5}}
    optim: {name: adam, lr: 1.0e-3}
    run: {iters: 1000, eval_every: 500, out: runs/run}

Flat keys (``iters``, ``lr``, ``dataset``, ... as the CLI flags name them) are accepted everywhere a config
is built or changed and land in their section (:data:`FLAT_KEYS`), so ``cfg.replace(lr=1e-4)`` and old flat
YAML files keep working. Defaults follow the papers' recipe scaled to CPU: Adam, polynomial LR decay (power
0.9, as the official selective-update code's ``PolynomialLR``), iteration-based training.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlkit.errors import MtlkitError


@dataclass
class DataConfig:
    name: str = "synthetic-nyud"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    image_size: int | list[int] = 64  # square side, or [H, W] (NYUD-v2's 448x576)
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0
    #: batch key of the model inputs
    input_key: str = "image"


@dataclass
class ModelConfig:
    name: str = "micro"
    head: str = "linear"
    patch_size: int | None = None
    pretrained: str | None = None
    #: multi-task architecture (mtlkit.models.arch): shared (encoder + heads), mtan, mtinet, invpt, taskprompter
    arch: str = "shared"
    arch_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "equal"
    options: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] | None = None  # shorthand for name=fixed
    #: distillation added after the balancer (``url``, see docs/url.md) and its options
    distill: str | None = None
    distill_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyConfig:
    name: str = "joint"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    lr_ts: float = 1.0
    weight_decay: float = 1e-6
    poly_power: float = 0.9
    #: clip the global L2 norm of the model's gradients before each step (None = off; InvPT / TaskPrompter
    #: code: ``clip_grad_norm_(model.parameters(), max_norm=10)``)
    grad_clip: float | None = None


@dataclass
class RunConfig:
    iters: int = 1000
    eval_every: int = 500
    grad_stats_every: int = 0
    seed: int = 0
    out: str = "runs/run"
    device: str = "auto"
    single_task: bool = False
    baseline_cache: str | None = None
    baseline: str | None = None  # explicit path of a single-task baselines JSON
    #: Δm reference of an --arch run: "arch" (the architecture's single-task twins) or "plain" (shared encoder)
    baseline_kind: str = "arch"
    progress: bool = True
    #: abort (exit code 2) after this many consecutive batches without an optimizer step (0 = never)
    max_consecutive_skipped: int = 20
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    #: several processes: gradient aggregators (PCGrad, MGDA, ...) aggregate the global Jacobian (all-reduced,
    #: T x P per step) instead of averaging each process's aggregate; same result as one process, more traffic
    global_jacobian: bool = False
    #: the run's model: "last", or "best" (highest val Δm over the periodic evaluations; engine/_select.py)
    select: str = "last"
    compile: str | None = None  # torch.compile backend of the model forward (e.g. inductor); None = off
    max_memory: str | None = None  # refuse a run whose one-step peak exceeds this (e.g. "8GB")
    #: the feature-distance probe (imbalance study Fig. 6): True or its options ({every, lr, weight_decay})
    feature_distance: bool | dict[str, Any] = False


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "strategy": StrategyConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}

#: flat key (as the CLI flag names it) -> (section, field)
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "dataset": ("data", "name"),
    "data_root": ("data", "root"),
    "dataset_options": ("data", "options"),
    "tasks": ("data", "tasks"),
    "image_size": ("data", "image_size"),
    "batch_size": ("data", "batch_size"),
    "eval_batch_size": ("data", "eval_batch_size"),
    "num_workers": ("data", "num_workers"),
    "input_key": ("data", "input_key"),
    "model": ("model", "name"),
    "head": ("model", "head"),
    "patch_size": ("model", "patch_size"),
    "pretrained": ("model", "pretrained"),
    "arch": ("model", "arch"),
    "arch_options": ("model", "arch_options"),
    "method": ("method", "name"),
    "method_options": ("method", "options"),
    "weights": ("method", "weights"),
    "distill": ("method", "distill"),
    "distill_options": ("method", "distill_options"),
    "strategy": ("strategy", "name"),
    "strategy_options": ("strategy", "options"),
    "dtme": ("transforms", "dtme"),
    "recon": ("transforms", "recon"),
    "optimizer": ("optim", "name"),
    "lr": ("optim", "lr"),
    "lr_ts": ("optim", "lr_ts"),
    "weight_decay": ("optim", "weight_decay"),
    "poly_power": ("optim", "poly_power"),
    "grad_clip": ("optim", "grad_clip"),
    **{f.name: ("run", f.name) for f in dataclasses.fields(RunConfig)},
}


class Config:
    """A run: seven sections (``cfg.data.name``, ``cfg.optim.lr``, ``cfg.transforms["dtme"]``, ...).

    ``Config(iters=10, lr=1e-4)`` / ``Config(run={"iters": 10})`` both work; reading a flat key
    (``cfg.iters``) reads its section's field.
    """

    def __init__(self, **values: Any) -> None:
        self.data, self.model, self.method = DataConfig(), ModelConfig(), MethodConfig()
        self.strategy, self.optim, self.run = StrategyConfig(), OptimConfig(), RunConfig()
        #: model transform name -> options (``{"dtme": {"rho": 0.5}}``); applied in this order
        self.transforms: dict[str, dict[str, Any]] = {}
        self._update(values)

    # ---------------------------------------------------------------- construction
    def _update(self, values: dict[str, Any]) -> None:
        values = dict(values)
        sections = {k: values.pop(k) for k in list(values) if k in SECTIONS or k == "transforms"}
        unknown = sorted(set(values) - set(FLAT_KEYS))
        if unknown:
            valid = ", ".join([*SECTIONS, "transforms"])
            raise MtlkitError(f"unknown config key(s) {', '.join(unknown)}; sections: {valid}; flat keys: "
                              f"{', '.join(FLAT_KEYS)}")
        for name, sub in sections.items():
            if isinstance(sub, str) and name in ("model", "method", "strategy"):
                sub = {"name": sub}  # flat form: model=micro, method=avgnorm
            if name == "transforms":
                self._set_transforms(sub)
                continue
            if sub is None:
                continue
            if not isinstance(sub, dict):
                raise MtlkitError(f"config section {name!r} must be a mapping, got {sub!r}")
            cls = SECTIONS[name]
            names = {f.name for f in dataclasses.fields(cls)}
            bad = sorted(set(sub) - names)
            if bad:
                raise MtlkitError(f"unknown key(s) {', '.join(bad)} in config section {name!r}; valid: "
                                  f"{', '.join(sorted(names))}")
            setattr(self, name, dataclasses.replace(getattr(self, name), **copy.deepcopy(sub)))
        for key, value in values.items():
            section, fname = FLAT_KEYS[key]
            if section == "transforms":
                self._set_transforms({**self.transforms, fname: value}, drop_none=True)
            else:
                setattr(getattr(self, section), fname, copy.deepcopy(value))

    def _set_transforms(self, value: Any, drop_none: bool = False) -> None:
        if value is None:
            self.transforms = {}
            return
        if isinstance(value, list | tuple):  # [dtme, {recon: {...}}]
            items: dict[str, Any] = {}
            for v in value:
                items.update({v: {}} if isinstance(v, str) else dict(v))
            value = items
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise MtlkitError(f"config section 'transforms' must map transform names to options, got {value!r}")
        for name, opts in value.items():
            if opts is not None and not isinstance(opts, dict):
                raise MtlkitError(f"transforms.{name}: options must be a mapping (or empty), got {opts!r}")
        self.transforms = {k: dict(v or {}) for k, v in value.items() if v is not None or not drop_none}

    @classmethod
    def keys(cls) -> list[str]:
        """The flat keys (CLI flag names) and the section names."""
        return [*FLAT_KEYS, *SECTIONS, "transforms"]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
        p = Path(path)
        if not p.is_file():
            raise MtlkitError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise MtlkitError(f"config file {p} is not valid YAML ({type(e).__name__})") from None
        if not isinstance(data, dict):
            raise MtlkitError(f"config file {p} must hold a mapping of sections to values")
        cfg = cls(**data)
        cfg._update(overrides or {})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Nested sections (what ``config.yaml`` holds)."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        out["transforms"] = copy.deepcopy(self.transforms)
        return {k: out[k] for k in ("data", "model", "method", "strategy", "transforms", "optim", "run")}

    def get(self, key: str) -> Any:
        """The value of a flat key (``get("model")`` is the model name; ``cfg.model`` is the section)."""
        if key not in FLAT_KEYS:
            raise MtlkitError(f"unknown config key {key!r}; flat keys: {', '.join(FLAT_KEYS)}")
        section, fname = FLAT_KEYS[key]
        if section == "transforms":
            return self.transforms.get(fname)
        return getattr(getattr(self, section), fname)

    def flat(self) -> dict[str, Any]:
        """Every flat key with its value (``dtme`` / ``recon``: options or None)."""
        return {k: self.get(k) for k in FLAT_KEYS}

    def replace(self, **changes: Any) -> Config:
        cfg = copy.deepcopy(self)
        cfg._update(changes)
        cfg.validate()
        return cfg

    def __getattr__(self, name: str) -> Any:
        # flat reads (cfg.iters, cfg.lr); the sections model / method / strategy shadow their flat names
        if name.startswith("_") or name not in FLAT_KEYS:
            raise AttributeError(name)
        return self.get(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check values before any training starts; errors name the key and the constraint."""
        from mtlkit.engine._validate import check_types

        check_types(self)  # types and ranges of every flat key (YAML gives any type to any key)

        def need(cond: bool, key: str, constraint: str) -> None:
            if not cond:
                raise MtlkitError(f"{key}={getattr(self, key)!r}: {constraint}")

        def pos_int(key: str) -> None:
            v = getattr(self, key)
            need(isinstance(v, int) and not isinstance(v, bool) and v > 0, key, "must be a positive integer")

        def number(key: str) -> float:
            v = getattr(self, key)
            need(isinstance(v, int | float) and not isinstance(v, bool), key, "must be a number")
            return float(v)

        for key in ("iters", "batch_size", "eval_batch_size"):
            pos_int(key)  # image_size (an int or [H, W]): check_types
        need(0 < number("lr") < math.inf, "lr", "must be a finite number > 0")
        need(0 < number("lr_ts") < math.inf, "lr_ts", "must be a finite number > 0")
        need(0 <= number("weight_decay") < math.inf, "weight_decay", "must be a finite number >= 0")
        mcs = self.max_consecutive_skipped
        need(isinstance(mcs, int) and not isinstance(mcs, bool) and mcs >= 0, "max_consecutive_skipped",
             "must be an integer >= 0 (0 = never abort)")
        need(isinstance(self.eval_every, int) and self.eval_every >= 0, "eval_every", "must be >= 0 (0 = at the end)")
        need(isinstance(self.grad_stats_every, int) and self.grad_stats_every >= 0, "grad_stats_every",
             "must be >= 0 (0 = off)")
        need(self.optimizer in ("adam", "adamw", "sgd"), "optimizer", "must be one of adam, adamw, sgd")
        for section in ("model", "method", "strategy"):
            name = getattr(self, section).name
            if not isinstance(name, str) or not name:
                raise MtlkitError(f"{section}.name={name!r}: must be a name (see `mtlkit methods`, `mtlkit data list`)")
        need(self.tasks is None or len(self.tasks) > 0, "tasks", "must name at least one task")
        need(isinstance(self.dataset_options, dict), "dataset_options", "must be a mapping")
        need(isinstance(self.method_options, dict), "method_options", "must be a mapping")
        need(isinstance(self.strategy_options, dict), "strategy_options", "must be a mapping")
        need(isinstance(self.arch_options, dict), "arch_options", "must be a mapping")
        need(self.baseline_kind in ("arch", "plain"), "baseline_kind", "must be arch or plain")
        from mtlkit.engine._speed_config import check_speed_keys

        check_speed_keys(self)
        need(self.distill in (None, "url"), "distill", "must be url (or none)")
        need(isinstance(self.distill_options, dict), "distill_options", "must be a mapping")
        need(isinstance(self.feature_distance, bool | dict), "feature_distance", "must be true/false or options")
        if self.weights is not None and self.method.name not in ("fixed", "equal"):
            raise MtlkitError("weights: fixed loss weights need --method fixed (or no --method)")


#: the name used by earlier versions and by most callers
TrainConfig = Config
