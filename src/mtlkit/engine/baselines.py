"""Single-task baselines: a cache of per-task results under a key, read back for Δm.

A baseline set lives in ``<cache>/<key>/baselines.json``: ``{"key": ..., "val": {task: primary},
"test": {task: primary}, "runs": {task: run dir}}``. The cache is ``$MTLKIT_CACHE/baselines`` (default
``~/.cache/mtlkit/baselines``) unless given. Through the API the key is the user's (``"census-mlp-v1"``);
through a config it is a hash of everything that defines the baseline's budget (:data:`KEY_FIELDS`), so a
multi-task run finds the baselines trained under the same conditions. Training them:
:mod:`mtlkit.engine._single_task` (``mtlkit.baselines.train`` / ``mtlkit train --single-task``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError
from mtlkit.metrics import delta_m as _delta_m

#: flat config keys that define a baseline (the multi-task run must match them)
KEY_FIELDS = ("dataset", "data_root", "dataset_options", "image_size", "model", "head", "patch_size",
              "pretrained", "iters", "batch_size", "lr", "weight_decay", "optimizer", "poly_power", "seed")


@dataclass
class Baselines:
    """Single-task results for Δm: primary metric per task on ``val`` and ``test``."""

    key: str
    path: Path
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Baselines:
        p = Path(path)
        if not p.is_file():
            raise MtlkitError(f"baselines file not found: {p}")
        data = json.loads(p.read_text())
        key = data.get("key")
        return cls(key if isinstance(key, str) else p.parent.name, p, dict(data.get("val", {})),
                   dict(data.get("test", {})), dict(data.get("runs", {})))

    def covers(self, tasks: list[str]) -> bool:
        return all(t in self.test for t in tasks)

    def delta_m(self, primary: dict[str, float], higher_is_better: dict[str, bool], split: str = "test") -> float:
        """Δm (%) of a multi-task run's primary metrics against these baselines."""
        base = self.test if split == "test" else self.val
        missing = [t for t in primary if t not in base]
        if missing:
            raise MtlkitError(f"baselines {self.key!r} ({self.path}) have no {split} result for task(s) {missing}")
        return _delta_m(primary, {t: base[t] for t in primary}, higher_is_better)


def cache_root(cache: str | Path | None = None) -> Path:
    if cache:
        return Path(cache)
    return Path(os.environ.get("MTLKIT_CACHE", Path.home() / ".cache" / "mtlkit")) / "baselines"


def find(key: str, tasks: list[str] | None = None, cache: str | Path | None = None) -> Baselines | None:
    """The cached baselines under ``key`` (None when absent or missing one of ``tasks``)."""
    path = cache_root(cache) / key / "baselines.json"
    if not path.is_file():
        return None
    found = Baselines.load(path)
    return found if found.covers(list(tasks or [])) else None


def record(key: str, task: str, val: float | None, test: float | None, run: str | Path,
           cache: str | Path | None = None, key_info: Any = None) -> Path:
    """Add one task's single-task result to ``<cache>/<key>/baselines.json`` (atomic rewrite)."""
    d = cache_root(cache) / key
    d.mkdir(parents=True, exist_ok=True)
    path = d / "baselines.json"
    data = json.loads(path.read_text()) if path.is_file() else {"key": key, "val": {}, "test": {}, "runs": {}}
    if key_info is not None:
        data["key_info"] = key_info
    data["val"][task] = val
    data["test"][task] = test
    data["runs"][task] = str(Path(run).resolve())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- the config path
def reference_config(config: Any) -> Any:
    """The config whose single-task runs are the Δm reference: an ``--arch`` run's own (its single-task
    twins) with ``baseline_kind="arch"``, the plain shared-encoder one with ``"plain"``."""
    arch = getattr(config.model, "arch", "shared")
    if arch == "shared" or getattr(config.run, "baseline_kind", "arch") == "arch":
        return config
    return config.replace(arch="shared", arch_options={})


def _shipped_sha256(model: Any) -> str | None:
    from mtlkit.checkpoints import SHIPPED, provenance

    name = model if isinstance(model, str) else None
    return provenance(name).get("sha256") if name in SHIPPED else None


def baseline_key(config: Any) -> str:
    """Hash of the config fields that define a baseline's budget (the architecture too, unless shared: the
    keys of plain baselines are unchanged, an architecture's twins get their own)."""
    fields = {k: config.get(k) for k in KEY_FIELDS}
    if getattr(config.model, "arch", "shared") != "shared":
        fields.update(arch=config.model.arch, arch_options=config.model.arch_options)
    if config.get("grad_clip") is not None:  # only when set: keys of runs without clipping are unchanged
        fields.update(grad_clip=config.get("grad_clip"))
    if config.get("pretrained") == "default":  # the shipped checkpoint's identity, not the word "default"
        fields.update(pretrained_sha256=_shipped_sha256(config.get("model")))
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def baseline_dir(config: Any) -> Path:
    return cache_root(config.baseline_cache) / baseline_key(config)


def find_baselines(config: Any, tasks: list[str]) -> Baselines | None:
    """The baselines of a config (its explicit ``baseline`` file, else the cache under the key of its
    reference config, :func:`reference_config`)."""
    if config.baseline:
        found = Baselines.load(config.baseline)
        return found if found.covers(tasks) else None
    config = reference_config(config)
    return find(baseline_key(config), tasks, config.baseline_cache)
