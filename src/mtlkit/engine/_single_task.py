"""Training single-task baselines (one model per task, equal budget) into the baseline cache.

Two doors, one cache (:mod:`mtlkit.engine.baselines`): :func:`train_baselines` for user objects under a
key the user names (``mtlkit.baselines.train``), :func:`train_single_task_baselines` for a config (key =
hash of its budget; ``mtlkit train --single-task``). A task already in the cache is not retrained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mtlkit.engine.baselines import (
    KEY_FIELDS,
    Baselines,
    baseline_dir,
    baseline_key,
    cache_root,
    find,
    find_baselines,
    record,
    reference_config,
)
from mtlkit.engine.trainer import Trainer
from mtlkit.errors import MtlkitError


def _primary(metrics: dict[str, Any], task: str, split: str) -> float | None:
    result = metrics.get("val") if split == "val" else metrics
    return None if not result else result["primary"].get(task)


def train_baselines(
    make_model: Callable[[list[str]], nn.Module],
    tasks: Mapping[str, Any] | Sequence[Any],
    train_data: Any,
    *,
    key: str,
    cache: str | Path | None = None,
    force: bool = False,
    **trainer_kwargs: Any,
) -> Baselines:
    """Train one model per task (``make_model([task])``, equal weights, joint updates) with the Trainer's
    other arguments (``val_data``, ``test_data``, ``iters``, ``lr``, ...), cached under ``key``.

    ``key`` is yours: use one per (data, model, budget); a later call with the same key returns the cached
    results (``force=True`` retrains). Runs go to ``<cache>/<key>/<task>``.
    """
    tasks = dict(tasks) if isinstance(tasks, Mapping) else {t.name: t for t in tasks}
    if not key or "/" in key:
        raise MtlkitError(f"baseline key {key!r}: give a non-empty name without '/' (e.g. 'census-mlp-v1')")
    for banned in ("balancer", "strategy", "transforms", "out", "baseline"):
        if banned in trainer_kwargs:
            raise MtlkitError(f"single-task baselines are trained with equal weights and joint updates; drop {banned}=")
    existing = None if force else find(key, [], cache)
    done = set(existing.test) if existing is not None else set()
    for t, task in tasks.items():
        if t in done:
            continue
        run = cache_root(cache) / key / t
        trainer = Trainer(make_model([t]), {t: task}, train_data, out=run, **trainer_kwargs)
        m = trainer.fit()
        record(key, t, _primary(m, t, "val"), _primary(m, t, "test"), run, cache)
    found = find(key, list(tasks), cache)
    assert found is not None
    return found


def train_single_task_baselines(config: Any, tasks: list[str], force: bool = False) -> Path:
    """The config path: one run per task under the config's key; returns the ``baselines.json`` path. With
    ``--arch`` the runs are the architecture's single-task twins (``baseline_kind="arch"``) or the plain
    shared-encoder networks (``"plain"``)."""
    config = reference_config(config)
    found = None if force else find_baselines(config, tasks)
    if found is not None:
        return found.path
    key = baseline_key(config)
    existing = None if force else find(key, [], config.baseline_cache)
    done = set(existing.test) if existing is not None else set()
    info = {k: config.get(k) for k in KEY_FIELDS}
    for t in tasks:
        if t in done:
            continue
        run_dir = baseline_dir(config) / t
        cfg = config.replace(tasks=[t], single_task=True, method="equal", method_options={}, weights=None,
                             strategy="joint", strategy_options={}, dtme=None, recon=None, out=str(run_dir),
                             distill=None, distill_options={}, feature_distance=False, select="last")
        m = Trainer.from_config(cfg).fit()
        record(key, t, _primary(m, t, "val"), _primary(m, t, "test"), run_dir, config.baseline_cache, info)
    return baseline_dir(config) / "baselines.json"


def train_teachers(config: Any) -> Path | None:
    """The teachers of ``--distill url`` / ``--feature-distance``: the config's single-task baselines (the
    same cache as Δm), trained first when missing; None when the config uses neither."""
    if config.single_task or not (config.distill or config.feature_distance):
        return None
    tasks = config.tasks
    if tasks is None:
        from mtlkit.data import build_dataset

        ds = build_dataset(config.dataset, "val", root=config.data_root, image_size=config.image_size,
                           **config.dataset_options)
        tasks = list(ds.task_names)
    return train_single_task_baselines(config, list(tasks))
