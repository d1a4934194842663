"""Type and value checks of a :class:`~mtlkit.engine.config.Config` (from flags or YAML) before anything is
built: every bad value is one line naming the key, the value and the fix (the CLI exits with code 2).

YAML gives any type to any key (``iters: true``, ``tasks: 5``, ``lr: fast``); these checks run on every
config (``Config.validate``), so the trainer only ever sees values of the documented types. Environment
checks (a CUDA device on a machine without one, ``--out`` naming a file, a missing ``--baseline``) are here
too: they fail the same way, before any data is generated.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePath
from typing import Any

import torch

from mtlkit.errors import MtlkitError


def _fail(key: str, value: Any, fix: str) -> None:
    raise MtlkitError(f"{key}={value!r}: {fix}")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _int(cfg: Any, key: str, minimum: int, optional: bool = False) -> None:
    v = cfg.get(key)
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        _fail(key, v, f"must be {what}" + (" (or unset)" if optional else ""))


def _str(cfg: Any, key: str, optional: bool = False) -> None:
    v = cfg.get(key)
    if (v is None and optional) or (isinstance(v, str) and v) or isinstance(v, PurePath):
        return
    _fail(key, v, "must be a non-empty string" + (" (or unset)" if optional else ""))


def check_types(cfg: Any) -> None:
    """Every flat key has a value of its documented type and range."""
    for key in ("iters", "batch_size", "eval_batch_size"):
        _int(cfg, key, 1)
    size = cfg.get("image_size")
    if not (_positive_int(size) or (isinstance(size, list | tuple) and len(size) == 2
                                    and all(_positive_int(x) for x in size))):
        _fail("image_size", size, "must be a positive integer or [H, W] (448x576 on the command line)")
    for key in ("num_workers", "seed", "eval_every", "grad_stats_every"):
        _int(cfg, key, 0)
    _int(cfg, "patch_size", 1, optional=True)
    for key in ("dataset", "out", "device", "head", "input_key"):
        _str(cfg, key)
    for key in ("data_root", "pretrained", "baseline", "baseline_cache"):
        _str(cfg, key, optional=True)
    if not isinstance(cfg.get("global_jacobian"), bool):
        _fail("global_jacobian", cfg.get("global_jacobian"), "must be true or false")
    if cfg.get("select") not in ("last", "best"):
        _fail("select", cfg.get("select"), "must be last (the final model) or best (best validation Δm)")
    gc = cfg.get("grad_clip")
    if gc is not None and (isinstance(gc, bool) or not isinstance(gc, int | float) or not 0 < gc < math.inf):
        _fail("grad_clip", gc, "must be a finite number > 0 (the max global gradient norm), or null for none")
    pp = cfg.get("poly_power")
    if isinstance(pp, bool) or not isinstance(pp, int | float) or not 0 <= pp < math.inf:
        _fail("poly_power", pp, "must be a finite number >= 0")
    tasks = cfg.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
            _fail("tasks", tasks, "must be a list of task names, e.g. [semseg, depth] (--tasks semseg,depth)")
        dup = sorted({t for t in tasks if tasks.count(t) > 1})
        if dup:
            _fail("tasks", tasks, f"names {', '.join(dup)} more than once; give each task once")
    weights = cfg.get("weights")
    if weights is not None:
        if not isinstance(weights, dict):
            _fail("weights", weights, "must map tasks to numbers: {semseg: 1, depth: 2} (--weights semseg=1,depth=2)")
        for t, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < math.inf:
                _fail(f"weights.{t}", w, "a loss weight must be a finite number >= 0 (TASK=W,...)")
        unknown = sorted(set(weights) - set(tasks)) if tasks is not None else []
        if unknown:
            _fail("weights", weights, f"task(s) {', '.join(unknown)} are not trained (tasks: {', '.join(tasks)})")


def check_environment(cfg: Any) -> None:
    """Device, output directory and baseline file exist as the config says."""
    device = cfg.get("device")
    if device != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            _fail("device", device, "use auto, cpu, cuda, cuda:N or mps")
        if dev.type == "cuda" and not torch.cuda.is_available():
            _fail("device", device, "CUDA is not available on this machine; use --device cpu (or auto)")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            _fail("device", device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            _fail("device", device, "MPS is not available on this machine; use --device cpu (or auto)")
    out = Path(cfg.get("out"))
    if out.exists() and not out.is_dir():
        _fail("out", str(out), "is an existing file; give a directory for the run")
    baseline = cfg.get("baseline")
    if baseline is not None and not Path(baseline).is_file():
        _fail("baseline", baseline, "file not found; give the baselines.json written by `mtlkit train --single-task`")
