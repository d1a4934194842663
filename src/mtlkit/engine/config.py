"""TrainConfig: every key of a training run, settable from the CLI and from a YAML file (CLI wins).

Defaults follow the papers' recipe scaled to CPU: Adam, polynomial LR decay (power 0.9, as the official
selective-update code's ``PolynomialLR``), iteration-based training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlkit.errors import MtlkitError


@dataclass
class TrainConfig:
    dataset: str = "synthetic-nyud"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    image_size: int = 64
    model: str = "micro"
    head: str = "linear"
    patch_size: int | None = None
    pretrained: str | None = None
    method: str = "equal"
    method_options: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] | None = None  # shorthand for --method fixed
    strategy: str = "joint"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    dtme: dict[str, Any] | None = None
    recon: dict[str, Any] | None = None
    iters: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    lr_ts: float = 1.0
    weight_decay: float = 1e-6
    optimizer: str = "adam"
    poly_power: float = 0.9
    eval_every: int = 500
    eval_batch_size: int = 32
    grad_stats_every: int = 0
    seed: int = 0
    out: str = "runs/run"
    num_workers: int = 0
    device: str = "auto"
    single_task: bool = False
    baseline_cache: str | None = None
    baseline: str | None = None  # explicit path of a single-task baselines JSON
    progress: bool = True

    # ---------------------------------------------------------------- construction
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = set(values) - set(cls.keys())
        if unknown:
            bad, valid = ", ".join(sorted(unknown)), ", ".join(cls.keys())
            raise MtlkitError(f"unknown config key(s) {bad}; valid keys: {valid}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise MtlkitError(f"config file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise MtlkitError(f"config file {p} must hold a mapping of keys to values")
        data.update(overrides or {})
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check values before any training starts; errors name the key and the constraint."""

        def need(cond: bool, key: str, constraint: str) -> None:
            if not cond:
                raise MtlkitError(f"{key}={getattr(self, key)!r}: {constraint}")

        need(isinstance(self.iters, int) and self.iters > 0, "iters", "must be a positive integer")
        need(isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size", "must be a positive integer")
        need(self.eval_batch_size > 0, "eval_batch_size", "must be a positive integer")
        need(self.lr > 0, "lr", "must be > 0")
        need(self.lr_ts > 0, "lr_ts", "must be > 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.eval_every >= 0, "eval_every", "must be >= 0 (0 = only at the end)")
        need(self.grad_stats_every >= 0, "grad_stats_every", "must be >= 0 (0 = off)")
        need(isinstance(self.image_size, int) and self.image_size > 0, "image_size", "must be a positive integer")
        need(self.optimizer in ("adam", "adamw", "sgd"), "optimizer", "must be one of adam, adamw, sgd")
        need(self.tasks is None or len(self.tasks) > 0, "tasks", "must name at least one task")
        if self.weights is not None and self.method not in ("fixed", "equal"):
            raise MtlkitError("weights: fixed loss weights need --method fixed (or no --method)")
