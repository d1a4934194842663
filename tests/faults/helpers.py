"""Kill-and-resume helpers of the fault suite: an augmented tiny dataset, an interrupting callback and the
comparison of two run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mtlkit.data import DATASETS
from mtlkit.data.transforms import sample_rng
from mtlkit.engine import Trainer
from tests.conftest import TinyRandom

TIMING = ("seconds", "time", "_s_per_", "_ms", "inference_ratio", "inference_overhead", "timing", "step_memory")


class TinyAugmented(TinyRandom):
    """``tiny-random`` with augmentations drawn from the global RNGs (as the real datasets' are): a random
    flip (numpy generator seeded from torch, :func:`sample_rng`) and input noise from torch's global RNG."""

    def __getitem__(self, i: int):
        out = super().__getitem__(i)
        if sample_rng().random() < 0.5:
            out = {k: v.flip(-1) for k, v in out.items()}
        out["image"] = out["image"] + 0.1 * torch.randn_like(out["image"])
        return out


if "tiny-augmented" not in DATASETS:
    DATASETS.register("tiny-augmented", lambda split, *, root=None, tasks=None, image_size=16, **o:
                      TinyAugmented(split, tasks=tasks, image_size=image_size, **o))


class Stop(Exception):
    """Stands for a kill: the process dies at the start of an iteration."""


class StopAt:
    def __init__(self, n: int) -> None:
        self.n = n

    def on_iteration_start(self, trainer: Any, it: int) -> None:
        if it == self.n:
            raise Stop


def without_timing(obj: Any) -> Any:
    """``metrics.json`` without wall-clock and memory measurements (the only values that differ between two runs)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def log_records(run: Path) -> list[dict[str, Any]]:
    """``log.jsonl`` without timings and the selective strategy's ``affinity_tasks`` (logged once per process)."""
    records = [without_timing(json.loads(line)) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "affinity_tasks"} for r in records]


def kill_and_resume(cfg: Any, tmp_path: Path, stop: int, resumed_cfg: Any = None) -> tuple[Path, Path]:
    """Train ``cfg`` uninterrupted into ``full``; into ``part`` train, die at the start of iteration ``stop``
    (past a checkpoint) and resume to the end. Returns the two run directories."""
    full, part = tmp_path / "full", tmp_path / "part"
    Trainer(cfg.replace(out=str(full))).fit()
    t = Trainer(cfg.replace(out=str(part)))
    t.callbacks.append(StopAt(stop))
    with pytest.raises(Stop):
        t.fit()
    t.logger.close()  # what the dead process had logged past the checkpoint reaches the files
    Trainer((resumed_cfg or cfg).replace(out=str(part))).fit(resume=True)
    return full, part


def assert_same_run(full: Path, part: Path) -> None:
    """Byte-identical weights, identical metrics.json (timings aside) and logs holding every iteration once."""
    assert (full / "model.safetensors").read_bytes() == (part / "model.safetensors").read_bytes()
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((part / "metrics.json").read_text())
    assert without_timing(a) == without_timing(b), (without_timing(a), without_timing(b))
    la, lb = log_records(full), log_records(part)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x == y, (x, y)
    csv_rows = (part / "log.csv").read_text().splitlines()
    assert sum(r == csv_rows[0] for r in csv_rows) == 1 and len(csv_rows) == 1 + a["iterations"], csv_rows
