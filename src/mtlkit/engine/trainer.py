"""The Trainer: objects in (model, tasks, data, balancer, strategy, transforms, optimizer), a run out.

Three independent axes meet here: the balancing method (``balancer``), the update strategy (``strategy``)
and model transforms (DTME / Recon: callbacks that change the model mid-run). :meth:`Trainer.from_config`
builds those objects from a nested :class:`~mtlkit.engine.config.Config`; it is the only path the CLI uses,
and ``Trainer(config)`` is the same call.

Training is iteration-based: batch ``i`` is a pure function of (seed, i) (:mod:`._sampler`), so a resumed
run is exactly the uninterrupted one. A run directory holds ``log.jsonl`` / ``log.csv`` / TensorBoard
events, ``eval.jsonl``, ``model.safetensors`` + ``model.json``, ``resume.safetensors`` + ``resume.json`` (no
pickle; :mod:`._state`, docs/reliability.md), ``metrics.json`` and, when a task has a picture, ``predictions.png``.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mtlkit import balancing, strategies
from mtlkit.engine import _distributed as D
from mtlkit.engine._batch import BatchFormat, take, to_device
from mtlkit.engine._compile import Compiler
from mtlkit.engine._loading import loader_options, prepare_model
from mtlkit.engine._logging import RunLogger
from mtlkit.engine._memory import StepMemory
from mtlkit.engine._precision import Precision
from mtlkit.engine._protocol import check_model
from mtlkit.engine._resume import finished_metrics, new_run_state, restore, trainer_state, truncate_logs
from mtlkit.engine._sampler import ShardSampler
from mtlkit.engine._seeded import SeededBatchSampler, SeededItems
from mtlkit.engine._select import check_select, consider, select_final  # "best on validation"
from mtlkit.engine._state import check_config, load_resume, save_resume
from mtlkit.engine.baselines import Baselines, find
from mtlkit.engine.checkpoint import save_model
from mtlkit.engine.config import Config
from mtlkit.engine.evaluate import evaluate
from mtlkit.errors import MtlkitError
from mtlkit.strategies._guard import check_skipped

OPTIMIZERS = ("adam", "adamw", "sgd")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _TrainerType(type):
    """``Trainer(config)`` is ``Trainer.from_config(config)``: one code path for both spellings."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Config):
            return cls.from_config(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class _Formatted:
    """A loader whose batches go through the trainer's :class:`BatchFormat` (re-iterable)."""

    def __init__(self, loader: DataLoader, fmt: BatchFormat) -> None:
        self.loader, self.fmt = loader, fmt

    def __iter__(self):
        return (self.fmt(b) for b in self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _dataset(data: Any, what: str) -> tuple[Dataset | None, Callable | None]:
    """(map-style dataset, collate_fn) of ``data`` (a Dataset or a DataLoader over one)."""
    if data is None:
        return None, None
    if isinstance(data, DataLoader):
        return data.dataset, data.collate_fn
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return data, None
    raise MtlkitError(f"{what} must be a map-style Dataset (with __len__ and __getitem__) or a DataLoader over one")


class Trainer(metaclass=_TrainerType):
    """Trains ``model`` on ``tasks`` with a balancing method, an update strategy and model transforms.

    ``model``: any ``nn.Module`` returning ``{task: output}`` (see :class:`mtlkit.models.MultiTaskProtocol`).
    ``tasks``: ``{name: Task}`` (or a list of tasks). ``train_data`` / ``val_data`` / ``test_data``: map-style
    datasets (or DataLoaders over them) whose items are dicts with the inputs under ``inputs`` (a key,
    default ``"image"``), ``(inputs, targets)`` pairs, or anything ``inputs=fn`` turns into such a pair.
    ``balancer`` / ``strategy``: a registry name or an instance (options via ``balancer_options`` /
    ``strategy_options`` with a name). ``transforms``: DTME / Recon (``"dtme"``, ``("recon", {...})`` or
    callback instances from :mod:`mtlkit.dtme`). ``optimizer``: ``"adam"`` (default), ``"adamw"``, ``"sgd"``,
    a factory ``fn(param_groups) -> Optimizer`` or an optimizer instance; ``schedule``: ``"poly"`` (default,
    power ``poly_power``), ``"constant"`` or ``fn(iteration) -> LR factor``. ``baseline``: single-task
    baselines for Δm (a :class:`~mtlkit.engine.baselines.Baselines`, a ``baselines.json`` path or a cache key).
    ``predictions``: write ``predictions.png`` (for the tasks that have a picture).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tasks: Mapping[str, Any] | Sequence[Any],
        train_data: Any,
        *,
        val_data: Any = None,
        test_data: Any = None,
        balancer: str | Any = "equal",
        strategy: str | Any = "joint",
        transforms: Iterable[Any] = (),
        optimizer: str | Callable[..., torch.optim.Optimizer] | torch.optim.Optimizer | None = None,
        schedule: str | Callable[[int], float] | None = None,
        iters: int,
        out: str | Path,
        callbacks: Iterable[Any] = (),
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        eval_every: int = 0,
        inputs: str | Callable[[Any], Any] = "image",
        lr: float = 1e-3,
        lr_ts: float = 1.0,
        weight_decay: float = 0.0,
        poly_power: float = 0.9,
        balancer_options: Mapping[str, Any] | None = None,
        strategy_options: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        num_workers: int = 0,
        grad_stats_every: int = 0,
        baseline: Baselines | str | Path | None = None,
        baseline_cache: str | Path | None = None,
        progress: bool = False,
        predictions: bool = True,
        config: Config | None = None,
        model_spec: dict[str, Any] | None = None,
        max_consecutive_skipped: int = 20,
        precision: str = "fp32",
        global_jacobian: bool = False,
        grad_clip: float | None = None,
        select: str = "last",
        compile: str | None = None,
        max_memory: str | int | None = None,
        distill: str | None = None,
        distill_options: Mapping[str, Any] | None = None,
        feature_distance: bool | Mapping[str, Any] = False,
        teachers: Mapping[str, torch.nn.Module] | None = None,
    ) -> None:
        for name, v in (("iters", iters), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise MtlkitError(f"{name}={v!r}: must be a positive integer")
        if not (isinstance(eval_every, int) and eval_every >= 0):
            raise MtlkitError(f"eval_every={eval_every!r}: must be >= 0 (0 = at the end)")
        self.config = config
        self.iters, self.batch_size, self.eval_every = iters, batch_size, eval_every
        self.eval_batch_size = eval_batch_size or batch_size
        self.lr, self.lr_ts, self.weight_decay = float(lr), float(lr_ts), float(weight_decay)
        self.poly_power = poly_power
        self.seed, self.num_workers, self.progress, self.predictions = seed, num_workers, progress, predictions
        self.device = resolve_device(device)
        D.init_from_env(self.device)
        self.rank, self.world = D.rank(), D.world_size()
        self.out = Path(out)
        seed_everything(seed)

        self.tasks = self._tasks(tasks)
        self.fmt = BatchFormat(list(self.tasks), inputs)
        self.input_key = self.fmt.key
        self.train_set, self._collate = _dataset(train_data, "train_data")
        self.val_set, self._val_collate = _dataset(val_data, "val_data")
        self.test_set, self._test_collate = _dataset(test_data, "test_data")

        self.model = model.to(self.device)
        prepare_model(self.model, self.device)  # channels_last for a CNN on CUDA
        user = {"class": f"{type(model).__module__}.{type(model).__name__}"}
        self.model_spec: dict[str, Any] = dict(model_spec or user)
        self.model_spec.setdefault("transforms", [])
        self.initial_params = sum(p.numel() for p in self.model.parameters())

        self.precision = Precision.for_model(precision, self.model)  # autocast forward, fp16 GradScaler
        self.compiler = Compiler(compile)  # torch.compile of the forward (None: off); recompiled after expansion
        self.compiler.apply(self.model)
        self.max_memory = max_memory  # checked on the first step of fit (StepMemory)
        self.step_memory: dict[str, Any] | None = None
        self.balancer = self._balancer(balancer, balancer_options)
        self.strategy = self._strategy(strategy, strategy_options)
        self.callbacks = list(callbacks) + self._transforms(transforms)
        check_model(self.model, list(self.tasks), balancer=self.balancer, strategy=self.strategy,
                    transforms=[c for c in self.callbacks if getattr(c, "is_transform", False)], lr_ts=self.lr_ts)
        self.grad_stats = None
        if grad_stats_every:
            from mtlkit.analysis import GradStatsRecorder

            self.grad_stats = GradStatsRecorder(grad_stats_every)
        self.optimizer = self._optimizer(optimizer)
        self.scheduler = self._scheduler(schedule)
        self.baseline = self._baseline(baseline, baseline_cache)
        self.select = check_select(select, self.baseline, self.val_set is not None)
        self._best_state: dict[str, torch.Tensor] | None = None
        from mtlkit.engine._distill import build_runtime  # URL / feature-distance probe (docs/url.md)

        self.distill = build_runtime(self, distill, distill_options, feature_distance, teachers)
        self.iteration = 0
        self.logger: RunLogger | None = None
        self.run_state = new_run_state()  # counters over the whole run (resumed with it)
        self.max_consecutive_skipped = max_consecutive_skipped
        self.global_jacobian = bool(global_jacobian)
        if grad_clip is not None and not float(grad_clip) > 0:
            raise MtlkitError(f"grad_clip must be > 0 (the max global gradient norm) or None, got {grad_clip!r}")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.loader_generator = torch.Generator().manual_seed(seed)  # the training loader's own RNG
        self.epoch_iters = len(self.train_set) // (batch_size * self.world) if self.train_set is not None else None
        if self.epoch_iters == 0:  # before anything is written (also checked by the sampler)
            SeededBatchSampler(len(self.train_set), batch_size, seed, world=self.world)
        setup = getattr(self.balancer, "setup", None)  # e.g. DWA's one-epoch window
        if callable(setup):
            setup(**_accepted(setup, epoch_iters=self.epoch_iters, model=self.model))

    # ------------------------------------------------------------------ from a config
    @classmethod
    def from_config(cls, config: Config, callbacks: Iterable[Any] = ()) -> Trainer:
        """Build datasets, tasks, model, balancer, strategy and transforms from ``config`` (the CLI's path)."""
        from mtlkit import dtme
        from mtlkit.data import build_dataset
        from mtlkit.models.arch._build import arch_spec, build_arch_model

        config.validate()
        seed_everything(config.seed)
        common = dict(root=config.data_root, tasks=config.tasks, image_size=config.image_size,
                      **dict(config.dataset_options))
        train_set = build_dataset(config.dataset, "train", **common)
        val_set = build_dataset(config.dataset, "val", **common)
        test_set = build_dataset(config.dataset, "test", **common)
        tasks = train_set.make_tasks()
        build = dict(name=config.model.name, img_size=config.image_size, head=config.head, patch_size=config.patch_size)
        build.update(arch_spec(config.model.arch, config.model.arch_options))  # --arch: {} for shared
        model = build_arch_model(tasks=tasks, pretrained=config.pretrained, **build)
        spec = {"build": {**build, "tasks": {t: dict(task.params) for t, task in tasks.items()}}, "transforms": []}
        method, mopts = config.method.name, dict(config.method_options)
        if config.weights is not None:
            method, mopts = "fixed", {**mopts, "weights": dict(config.weights)}
        baseline = None
        if not config.single_task:
            from mtlkit.engine.baselines import find_baselines

            baseline = find_baselines(config, list(tasks))
        return cls(
            model, tasks, train_set, val_data=val_set, test_data=test_set,
            balancer=method, balancer_options=mopts,
            strategy=config.strategy.name, strategy_options=dict(config.strategy_options),
            transforms=dtme.make_transforms(config.transforms, config.iters, config.dataset),
            optimizer=config.optimizer, schedule="poly", iters=config.iters, out=config.out,
            callbacks=callbacks, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
            eval_every=config.eval_every, inputs=config.input_key, lr=config.lr, lr_ts=config.lr_ts,
            weight_decay=config.weight_decay, poly_power=config.poly_power, seed=config.seed, device=config.device,
            num_workers=config.num_workers, grad_stats_every=config.grad_stats_every, baseline=baseline,
            progress=config.progress, config=config, model_spec=spec, precision=config.precision,
            global_jacobian=config.global_jacobian, grad_clip=config.grad_clip,
            select="last" if config.single_task else config.select,
            compile=config.compile, max_memory=config.max_memory,
            **({} if config.single_task else dict(distill=config.distill, distill_options=config.distill_options,
                                                  feature_distance=config.feature_distance)),
            max_consecutive_skipped=config.max_consecutive_skipped,
        )

    # ------------------------------------------------------------------ building blocks
    @staticmethod
    def _tasks(tasks: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        out = dict(tasks) if isinstance(tasks, Mapping) else {t.name: t for t in tasks}
        if not out:
            raise MtlkitError("tasks: give at least one task ({name: Task} or a list of Task)")
        bad = [t for t, task in out.items() if not callable(getattr(task, "loss", None))]
        if bad:
            raise MtlkitError(f"task(s) {bad} have no loss(pred, target): use mtlkit.Task or a subclass")
        return out

    def _balancer(self, balancer: str | Any, options: Mapping[str, Any] | None) -> Any:
        if isinstance(balancer, str):
            self._balancer_spec = (balancer, dict(options or {}))
            return balancing.get(balancer, tasks=list(self.tasks), **dict(options or {}))
        self._balancer_spec = None
        if options:
            raise MtlkitError("balancer_options only apply when balancer is given by name")
        if not callable(getattr(balancer, "backward", None)):
            raise MtlkitError(f"balancer must be a method name or a mtlkit.balancing.Balancer, got {balancer!r}")
        return balancer

    def _strategy(self, strategy: str | Any, options: Mapping[str, Any] | None) -> Any:
        if isinstance(strategy, str):
            strategy = strategies.get(strategy, **dict(options or {}))
        elif options:
            raise MtlkitError("strategy_options only apply when strategy is given by name")
        configure = getattr(strategy, "configure_balancer", None)
        if callable(configure) and self._balancer_spec is not None and getattr(strategy, "balancer_spec", 1) is None:
            # selective: one balancer of the run's method per task group, with the run's options
            configure(*self._balancer_spec)
        return strategy

    def _transforms(self, transforms: Iterable[Any]) -> list[Any]:
        from mtlkit import dtme

        made = []
        for t in transforms:
            cb = dtme.make_transform(t, iters=self.iters)
            made.append(cb)
        return made

    def _param_groups(self) -> list[dict[str, Any]]:
        fn = getattr(self.model, "shared_parameters", None)
        if callable(fn):
            shared = list(fn())
            ids = {id(p) for p in shared}
            specific = [p for p in self.model.parameters() if id(p) not in ids]
            groups = [{"params": shared, "lr": self.lr, "name": "shared"},
                      {"params": specific, "lr": self.lr * self.lr_ts, "name": "task_specific"}]
        else:
            groups = [{"params": list(self.model.parameters()), "lr": self.lr, "name": "model"}]
        extra = list(self.balancer.parameters())
        if extra:
            for p in extra:
                balancing._base.place(p, self.device)
            groups.append({"params": extra, "lr": self.lr, "name": "balancer", "weight_decay": 0.0})
        return groups

    def _optimizer(self, optimizer: Any) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.Optimizer):  # the user's: add what the balancer learns if missing
            known = {id(p) for g in optimizer.param_groups for p in g["params"]}
            extra = [p for p in self.balancer.parameters() if id(p) not in known]
            if extra:
                optimizer.add_param_group({"params": extra, "name": "balancer", "weight_decay": 0.0})
            return optimizer
        groups = self._param_groups()
        name = optimizer or "adam"
        if callable(name):
            return name(groups)
        if name == "adam":
            return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        if name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        raise MtlkitError(f"optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}, a factory or an Optimizer")

    def _scheduler(self, schedule: Any) -> torch.optim.lr_scheduler.LambdaLR:
        total, power = self.iters, self.poly_power
        if schedule in (None, "poly"):
            def factor(it: int) -> float:
                return max(0.0, 1 - it / total) ** power
        elif schedule == "constant":
            def factor(it: int) -> float:
                return 1.0
        elif callable(schedule):
            factor = schedule
        else:
            raise MtlkitError(f"schedule {schedule!r}: use 'poly', 'constant' or fn(iteration) -> LR factor")
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _baseline(self, baseline: Any, cache: Any) -> Baselines | None:
        if baseline is None or isinstance(baseline, Baselines):
            return baseline
        p = Path(baseline)
        if p.suffix == ".json" or p.is_file():
            return Baselines.load(p)
        found = find(str(baseline), list(self.tasks), cache)
        if found is None:
            raise MtlkitError(f"no single-task baselines under key {str(baseline)!r} in {cache or 'the cache'} for "
                              f"tasks {list(self.tasks)}; train them with mtlkit.baselines.train(..., key=...)")
        return found

    def add_param_group(self, params: list[torch.nn.Parameter], name: str, lr_scale: float = 1.0,
                        weight_decay: float | None = None) -> None:
        """Add parameters created mid-run (DTME's, a task group's balancer) to the optimizer and the schedule."""
        lr = self.lr * lr_scale
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        group: dict[str, Any] = {"params": params, "lr": lr * factor, "initial_lr": lr, "name": name}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay
        self.optimizer.add_param_group(group)
        self.scheduler.base_lrs.append(lr)
        self.scheduler.lr_lambdas.append(self.scheduler.lr_lambdas[0])

    def _add_balancer_parameters(self, params: list[torch.nn.Parameter], name: str) -> None:
        for p in params:
            balancing._base.place(p, self.device)
        self.add_param_group(params, name, weight_decay=0.0)

    # ------------------------------------------------------------------ loaders
    def _loader(self, start: int = 0) -> Iterable[dict[str, Any]]:
        sampler = SeededBatchSampler(len(self.train_set), self.batch_size, self.seed, start, self.rank, self.world,
                                     total=self.iters)
        loader = DataLoader(SeededItems(self.train_set), batch_sampler=sampler, num_workers=self.num_workers,
                            generator=self.loader_generator,  # creating the iterator draws no global RNG
                            **loader_options(self.device, self.num_workers),
                            **({"collate_fn": self._collate} if self._collate else {}))
        return _Formatted(loader, self.fmt)

    def _eval_loader(self, split: str) -> Iterable[dict[str, Any]]:
        dataset = self.val_set if split == "val" else self.test_set
        cache = self.__dict__.setdefault("_eval_loaders", {})  # kept: persistent workers live across evaluations
        key = (split, id(dataset), self.eval_batch_size)
        if key in cache:
            return cache[key]
        collate = self._val_collate if split == "val" else self._test_collate
        sampler = ShardSampler(len(dataset), self.rank, self.world) if self.world > 1 else None  # no padding
        loader = DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers,
                            generator=torch.Generator(),  # evaluating draws nothing from the training RNG
                            **loader_options(self.device, self.num_workers),
                            **({"collate_fn": collate} if collate else {}))
        cache[key] = _Formatted(loader, self.fmt)
        return cache[key]

    @property
    def train_loader(self) -> Iterable[dict[str, Any]]:
        """A fresh, seeded loader of training batches (for calibration passes by transforms)."""
        loader = DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed + 1),
                            **loader_options(self.device, self.num_workers),
                            **({"collate_fn": self._collate} if self._collate else {}))
        return _Formatted(loader, self.fmt)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """``{"tasks": {task: {metric: value}}, "primary": {task: value}}`` of the model on a split."""
        if (self.val_set if split == "val" else self.test_set) is None:
            raise MtlkitError(f"no {split} data: pass {split}_data=... to the Trainer")
        return evaluate(self.model, self._eval_loader(split), self.tasks, self.device, input_key=self.input_key)

    def _context(self) -> strategies.StepContext:
        model = self.model
        optimizer = self.optimizer
        return strategies.StepContext(
            model=model,
            tasks=self.tasks,
            balancer=self.balancer,
            optimizer=optimizer,
            iteration=self.iteration,
            sync_grads=lambda: D.average_gradients([p for g in optimizer.param_groups for p in g["params"]]),
            reduce_losses=D.average_values,
            global_mean=D.global_mean_scales if D.is_distributed() else None,
            reduce_jacobian=D.average_tensor if D.is_distributed() and self.global_jacobian else None,
            grad_clip=self.grad_clip,
            needs_features=bool(getattr(self.balancer, "needs_features", False)),
            grad_stats=self.grad_stats,
            input_key=self.input_key,
            add_parameters=self._add_balancer_parameters,
            epoch_iters=self.epoch_iters,
            precision=self.precision if self.precision.enabled else None,
            **({} if self.distill is None else dict(
                backward_hook=self.distill.hook(model, self.iteration, self.input_key),
                after_step=self.distill.after_step)),
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The resume state (tensors and plain values; written without pickle by :mod:`._state`)."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a model expanded mid-run is expanded again before its weights load)."""
        restore(self, state)

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``iters`` (continuing from ``out``'s checkpoint when ``resume``); returns ``metrics.json``."""
        main = self.rank == 0
        if resume:
            state = load_resume(self.out)
            if state is not None:
                check_config(state.get("config"), self.config.to_dict() if self.config else None, self.out)
                done = finished_metrics(self.out, state)
                if done is not None:  # a finished run: nothing to train, nothing rewritten
                    return done
                self.load_state_dict(state)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.config is not None:
                import yaml

                (self.out / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            if resume and self.iteration > 0:
                truncate_logs(self.out, self.iteration)
        self.logger = RunLogger(self.out, enabled=main, append=resume and self.iteration > 0)
        loader = self._loader(start=self.iteration)
        memory = StepMemory(self.device, self.max_memory)  # peak of this fit's first step; max_memory check
        bar = None
        if main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.iters, initial=self.iteration, desc=self.out.name, dynamic_ncols=True)
        rs = self.run_state
        for batch in loader:
            it = self.iteration
            self.compiler.pause(self.model)  # callbacks (DTME calibration hooks) run the model eagerly
            for cb in self.callbacks:
                cb.on_iteration_start(self, it)
            self.compiler.resume(self.model, len(self.model_spec["transforms"]))  # recompiled after expansion
            t0 = time.perf_counter()
            self.model.train()
            ctx = self._context()
            info = memory.measure(self.strategy.step, to_device(batch, self.device), ctx)
            with warnings.catch_warnings():  # a skipped (non-finite) step still advances the schedule
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            dt = time.perf_counter() - t0
            rs["train_time"] += dt
            rs["timed_iters"] += 1
            rs["skipped"] += int(info.get("skipped", 0))
            if self.distill is not None:
                info.update(self.distill.end_iteration())
            self.iteration = it + 1
            self.logger.log({"iter": it, "lr": self.optimizer.param_groups[0]["lr"], "time": dt, **info})
            check_skipped(rs, info, it, self.max_consecutive_skipped, self.logger)
            if bar is not None:
                bar.set_postfix(loss=f"{sum(info['losses'].values()):.3f}", refresh=False)
                bar.update(1)
            if self.eval_every and self.iteration % self.eval_every == 0 and self.iteration < self.iters:
                if self.val_set is not None:
                    val = self.evaluate("val")
                    rs["val_history"].append({"iter": self.iteration, **val})
                    self.logger.log_eval("val", self.iteration, val)
                    if self.select == "best":
                        consider(self, val)
                if main:
                    save_model(self.model, self.model_spec, self.out)
                    save_resume(self.state_dict(), self.out)
        self.step_memory = memory.report() or self.step_memory
        if bar is not None:
            bar.close()
        return self._finish(rs["train_time"] / max(rs["timed_iters"], 1), rs["skipped"], rs["val_history"])

    def _finish(self, sec_per_iter: float, skipped: int, val_history: list) -> dict[str, Any]:
        val = self.evaluate("val") if self.val_set is not None else None
        if self.select == "best" and val is not None:
            val = select_final(self, val)  # may load an earlier model's weights
        test = self.evaluate("test") if self.test_set is not None else None
        final = test or val or {"tasks": {}, "primary": {}}
        for split, result in (("val", val), ("test", test)):
            if result is not None:
                self.logger.log_eval(split, self.iteration, result)
        metrics: dict[str, Any] = {
            "tasks": final["tasks"],
            "primary": final["primary"],
            "delta_m": None,
            "baseline": None,
            "method": getattr(self.balancer, "name", type(self.balancer).__name__),
            "strategy": getattr(self.strategy, "name", type(self.strategy).__name__),
            "iterations": self.iteration,
            "seconds_per_iter": sec_per_iter,
            "params": sum(p.numel() for p in self.model.parameters()),
            "skipped_steps": skipped,
            "step_memory": self.step_memory,
            "val": val,
            "val_history": val_history,
        }
        if self.select == "best":
            metrics["selected"] = {"rule": "best val Δm", **self.run_state["best"]}
        report = getattr(self.balancer, "report", None)
        if callable(report):
            metrics["method_report"] = report()
        if self.baseline is not None and final["primary"]:
            higher = {t: task.higher_is_better for t, task in self.tasks.items()}
            metrics["baseline"] = str(self.baseline.path)
            metrics["baseline_key"] = self.baseline.key
            try:
                metrics["delta_m"] = self.baseline.delta_m(final["primary"], higher, "test" if test else "val")
                if val is not None and test is not None:
                    metrics["val_delta_m"] = self.baseline.delta_m(val["primary"], higher, "val")
            except MtlkitError as e:  # e.g. a baseline metric of 0: report why, never lose the run
                metrics["delta_m_error"] = str(e)
        if self.distill is not None:
            metrics.update(self.distill.report())
        for cb in self.callbacks:
            extra = getattr(cb, "report", None)
            if extra is not None:
                metrics.update(extra(self))
        if self.rank == 0:
            save_model(self.model, self.model_spec, self.out)
            self.run_state["finished"] = True
            save_resume(self.state_dict(), self.out)
            if self.predictions:
                self._save_predictions()
            (self.out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=2))
            self.logger.close()
        return metrics

    def _save_predictions(self) -> None:
        """``predictions.png`` for the tasks that have a picture (none for the others; never fails the run)."""
        dataset = self.test_set if self.test_set is not None else self.val_set
        if dataset is None:
            return
        from mtlkit.engine.visualize import save_predictions

        collate = self._test_collate if self.test_set is not None else self._val_collate
        loader = DataLoader(dataset, batch_size=min(4, len(dataset)), **({"collate_fn": collate} if collate else {}))
        batch = to_device(take(self.fmt(next(iter(loader))), 4), self.device)
        save_predictions(self.model, batch, self.tasks, self.out / "predictions.png", input_key=self.input_key)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN / inf -> None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _accepted(fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts: a user balancer's ``setup(*, epoch_iters)`` written before the
    ``model`` keyword existed keeps working."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}
