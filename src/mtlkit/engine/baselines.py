"""Single-task baselines: trained once per (dataset, model, budget, seed) and found again by later runs.

The cache lives under ``config.baseline_cache`` or ``$MTLKIT_CACHE/baselines`` (default
``~/.cache/mtlkit/baselines``); its key hashes everything that defines the baseline's training budget, so a
multi-task run finds the baselines trained under the same conditions and fills in Δm.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mtlkit.engine.config import TrainConfig

#: keys that define a baseline (the multi-task run must match them)
KEY_FIELDS = ("dataset", "data_root", "dataset_options", "image_size", "model", "head", "patch_size",
              "pretrained", "iters", "batch_size", "lr", "weight_decay", "optimizer", "poly_power", "seed")


def cache_root(config: TrainConfig) -> Path:
    if config.baseline_cache:
        return Path(config.baseline_cache)
    return Path(os.environ.get("MTLKIT_CACHE", Path.home() / ".cache" / "mtlkit")) / "baselines"


def baseline_key(config: TrainConfig) -> str:
    d = config.to_dict()
    blob = json.dumps({k: d[k] for k in KEY_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def baseline_dir(config: TrainConfig) -> Path:
    return cache_root(config) / baseline_key(config)


def find_baselines(config: TrainConfig, tasks: list[str]) -> tuple[Path, dict[str, Any]] | None:
    """``(path, {"val": {task: primary}, "test": {task: primary}})`` when every task has a baseline."""
    if config.baseline:
        path = Path(config.baseline)
    else:
        path = baseline_dir(config) / "baselines.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not all(t in data.get("test", {}) for t in tasks):
        return None
    return path, {s: {t: data[s][t] for t in tasks} for s in ("val", "test")}


def record_baseline(config: TrainConfig, task: str, metrics: dict[str, Any]) -> Path:
    """Add one task's single-task result to the cache's ``baselines.json`` (atomic rewrite)."""
    d = baseline_dir(config)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "baselines.json"
    data = json.loads(path.read_text()) if path.is_file() else {"key": {k: config.to_dict()[k] for k in KEY_FIELDS},
                                                                 "val": {}, "test": {}, "runs": {}}
    data["val"][task] = metrics["val"]["primary"][task]
    data["test"][task] = metrics["primary"][task]
    data["runs"][task] = str(Path(config.out).resolve())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


def train_single_task_baselines(config: TrainConfig, tasks: list[str], force: bool = False) -> Path:
    """Train one model per task (skipping tasks already in the cache unless ``force``); returns the JSON path."""
    from mtlkit.engine.trainer import Trainer

    found = None if force else find_baselines(config, tasks)
    if found is not None:
        return found[0]
    existing = find_baselines(config, [])
    done = set(json.loads(existing[0].read_text())["test"]) if existing and not force else set()
    for t in tasks:
        if t in done:
            continue
        run_dir = baseline_dir(config) / t
        cfg = config.replace(tasks=[t], single_task=True, method="equal", method_options={}, weights=None,
                             strategy="joint", strategy_options={}, dtme=None, recon=None, out=str(run_dir))
        metrics = Trainer(cfg).fit()
        record_baseline(config, t, metrics)
    return baseline_dir(config) / "baselines.json"
