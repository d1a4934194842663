"""The Trainer: builds a run from a TrainConfig and trains it (iteration-based, evaluation at intervals).

Three independent axes meet here: the balancing method (``config.method``), the update strategy
(``config.strategy``) and model transforms such as DTME (callbacks that change the model mid-run).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler

from mtlkit import balancing, strategies
from mtlkit.analysis import GradStatsRecorder
from mtlkit.data import build_dataset
from mtlkit.engine import _distributed as D
from mtlkit.engine._logging import RunLogger
from mtlkit.engine._sampler import IterationBatchSampler
from mtlkit.engine.baselines import find_baselines
from mtlkit.engine.checkpoint import load_resume, save_model, save_resume
from mtlkit.engine.config import TrainConfig
from mtlkit.engine.evaluate import evaluate, to_device
from mtlkit.engine.visualize import save_predictions
from mtlkit.errors import MtlkitError
from mtlkit.metrics import delta_m
from mtlkit.models import build_model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Builds data, model, tasks, balancer, strategy and optimizer from ``config``; :meth:`fit` trains."""

    def __init__(self, config: TrainConfig, callbacks: list[Any] | None = None) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        D.init_from_env(self.device)
        self.rank, self.world = D.rank(), D.world_size()
        self.out = Path(config.out)
        seed_everything(config.seed)

        opts = dict(config.dataset_options)
        common = dict(root=config.data_root, tasks=config.tasks, image_size=config.image_size, **opts)
        self.train_set = build_dataset(config.dataset, "train", **common)
        self.val_set = build_dataset(config.dataset, "val", **common)
        self.test_set = build_dataset(config.dataset, "test", **common)
        self.tasks = self.train_set.make_tasks()

        build = dict(name=config.model, img_size=config.image_size, head=config.head, patch_size=config.patch_size)
        self.model = build_model(tasks=self.tasks, pretrained=config.pretrained, **build).to(self.device)
        self.model_spec: dict[str, Any] = {
            "build": {**build, "tasks": {t: dict(task.params) for t, task in self.tasks.items()}},
            "transforms": [],
        }
        self.initial_params = sum(p.numel() for p in self.model.parameters())

        method, mopts = config.method, dict(config.method_options)
        if config.weights is not None:
            method, mopts = "fixed", {**mopts, "weights": dict(config.weights)}
        self.balancer = balancing.get(method, tasks=list(self.tasks), **mopts)
        self.strategy = strategies.get(config.strategy, **config.strategy_options)
        if hasattr(self.strategy, "configure_balancer"):  # selective: one balancer of this method per group
            self.strategy.configure_balancer(method, mopts)
        self.grad_stats = GradStatsRecorder(config.grad_stats_every) if config.grad_stats_every else None
        self.optimizer = self._build_optimizer()
        total = config.iters
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: max(0.0, 1 - it / total) ** config.poly_power
        )
        self.callbacks = list(callbacks or []) + self._config_callbacks()
        self.iteration = 0
        self.logger: RunLogger | None = None

    # ------------------------------------------------------------------ building blocks
    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        shared = self.model.shared_parameters()
        shared_ids = {id(p) for p in shared}
        specific = [p for p in self.model.parameters() if id(p) not in shared_ids]
        groups = [{"params": shared, "lr": cfg.lr, "name": "shared"},
                  {"params": specific, "lr": cfg.lr * cfg.lr_ts, "name": "task_specific"}]
        extra = list(self.balancer.parameters())
        if extra:
            groups.append({"params": extra, "lr": cfg.lr, "name": "balancer", "weight_decay": 0.0})
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)

    def add_param_group(self, params: list[torch.nn.Parameter], name: str, lr_scale: float = 1.0) -> None:
        """Add new parameters (e.g. DTME's) to the optimizer and the LR schedule mid-run."""
        lr = self.config.lr * lr_scale
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.optimizer.add_param_group({"params": params, "lr": lr * factor, "initial_lr": lr, "name": name})
        self.scheduler.base_lrs.append(lr)
        self.scheduler.lr_lambdas.append(self.scheduler.lr_lambdas[0])

    def _config_callbacks(self) -> list[Any]:
        if self.config.dtme is None and self.config.recon is None:
            return []
        from mtlkit.dtme import make_callbacks  # DTME / Recon expand the model during training

        return list(make_callbacks(self.config))

    def _loader(self, dataset, batch_size: int, start: int = 0) -> DataLoader:
        sampler = IterationBatchSampler(
            len(dataset), batch_size, self.config.seed, start, self.rank, self.world, total=self.config.iters
        )
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.config.num_workers)

    def _eval_loader(self, dataset) -> DataLoader:
        sampler = DistributedSampler(dataset, shuffle=False) if self.world > 1 else None
        return DataLoader(dataset, batch_size=self.config.eval_batch_size, sampler=sampler,
                          num_workers=self.config.num_workers)

    @property
    def train_loader(self) -> DataLoader:
        """A fresh loader of training batches (for calibration passes by callbacks)."""
        return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.config.num_workers,
                          generator=torch.Generator().manual_seed(self.config.seed + 1))

    def _context(self) -> strategies.StepContext:
        model = self.model
        return strategies.StepContext(
            model=model,
            tasks=self.tasks,
            balancer=self.balancer,
            optimizer=self.optimizer,
            iteration=self.iteration,
            sync_grads=lambda: D.average_gradients([p for p in model.parameters()]),
            reduce_losses=D.average_values,
            needs_features=bool(getattr(self.balancer, "needs_features", False)),
            grad_stats=self.grad_stats,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "model_spec": self.model_spec,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["model_spec"].get("transforms"):
            from mtlkit.errors import MtlkitError

            raise MtlkitError(
                f"{self.out}: resuming a run whose model was expanded mid-training (DTME / Recon) is not supported; "
                "evaluate its checkpoint with `mtlkit eval` or start the run again"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.strategy.load_state_dict(state["strategy"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.iteration = state["iteration"]
        self.callbacks = [c for c in self.callbacks if not getattr(c, "done_before", lambda it: False)(self.iteration)]

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.config
        main = self.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if resume:
            state = load_resume(self.out)
            if state is not None:
                self.load_state_dict(state)
        self.logger = RunLogger(self.out, enabled=main, append=resume and self.iteration > 0)
        loader = self._loader(self.train_set, cfg.batch_size, start=self.iteration)
        bar = None
        if main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.iters, initial=self.iteration, desc=Path(cfg.out).name, dynamic_ncols=True)
        train_time, timed_iters, skipped = 0.0, 0, 0
        val_history = []
        for batch in loader:
            it = self.iteration
            for cb in self.callbacks:
                cb.on_iteration_start(self, it)
            t0 = time.perf_counter()
            self.model.train()
            info = self.strategy.step(to_device(batch, self.device), self._context())
            with warnings.catch_warnings():  # a skipped (non-finite) step still advances the schedule
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            dt = time.perf_counter() - t0
            train_time += dt
            timed_iters += 1
            skipped += int(info.get("skipped", 0))
            self.iteration = it + 1
            record = {"iter": it, "lr": self.optimizer.param_groups[0]["lr"], "time": dt, **info}
            self.logger.log(record)
            if bar is not None:
                total_loss = sum(info["losses"].values())
                bar.set_postfix(loss=f"{total_loss:.3f}", refresh=False)
                bar.update(1)
            if cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.iteration < cfg.iters:
                val = evaluate(self.model, self._eval_loader(self.val_set), self.tasks, self.device)
                val_history.append({"iter": self.iteration, **val})
                self.logger.log_eval("val", self.iteration, val)
                if main:
                    save_model(self.model, self.model_spec, self.out)
                    save_resume(self.state_dict(), self.out)
        if bar is not None:
            bar.close()
        return self._finish(train_time / max(timed_iters, 1), skipped, val_history)

    def _finish(self, sec_per_iter: float, skipped: int, val_history: list) -> dict[str, Any]:
        cfg = self.config
        val = evaluate(self.model, self._eval_loader(self.val_set), self.tasks, self.device)
        test = evaluate(self.model, self._eval_loader(self.test_set), self.tasks, self.device)
        self.logger.log_eval("val", self.iteration, val)
        self.logger.log_eval("test", self.iteration, test)
        metrics: dict[str, Any] = {
            "tasks": test["tasks"],
            "primary": test["primary"],
            "delta_m": None,
            "baseline": None,
            "method": cfg.method if cfg.weights is None else "fixed",
            "strategy": cfg.strategy,
            "iterations": self.iteration,
            "seconds_per_iter": sec_per_iter,
            "params": sum(p.numel() for p in self.model.parameters()),
            "skipped_steps": skipped,
            "val": val,
            "val_history": val_history,
        }
        higher = {t: task.higher_is_better for t, task in self.tasks.items()}
        if not cfg.single_task:
            found = find_baselines(cfg, list(self.tasks))
            if found is not None:
                path, base = found
                metrics["baseline"] = str(path)
                try:
                    metrics["delta_m"] = delta_m(test["primary"], base["test"], higher)
                    metrics["val_delta_m"] = delta_m(val["primary"], base["val"], higher)
                except MtlkitError as e:  # e.g. a baseline metric of 0: report why, never lose the run
                    metrics["delta_m_error"] = str(e)
        for cb in self.callbacks:
            extra = getattr(cb, "report", None)
            if extra is not None:
                metrics.update(extra(self))
        if self.rank == 0:
            save_model(self.model, self.model_spec, self.out)
            save_resume(self.state_dict(), self.out)
            batch = next(iter(DataLoader(self.test_set, batch_size=4)))
            save_predictions(self.model, to_device(batch, self.device), self.tasks, self.out / "predictions.png")
            (self.out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2))
            self.logger.close()
        return metrics


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN / inf -> None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
