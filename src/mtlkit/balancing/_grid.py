"""Weight grids for the grid-search baseline: parsing, grid points, a run's average logged weights.

The search itself trains runs, so it lives in the engine (:func:`mtlkit.engine.grid.grid_search`).

Grid search over fixed loss weights, picked by validation Δm, beside AvgNorm's average weights.

The imbalance paper's baseline (Tabs. VI-VII): train the multi-task model for every point of a weight grid
(``fixed`` weights), keep the point with the best validation Δm, and compare its weights with the average
weights AvgNorm chose during one run. Both use the same budget and the same cached single-task baselines.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from mtlkit.errors import MtlkitError


def parse_grid(items: list[str] | None) -> dict[str, list[float]]:
    """``["depth=1,2,5", "edge=10,50"]`` -> ``{"depth": [1, 2, 5], "edge": [10, 50]}``."""
    grid: dict[str, list[float]] = {}
    for item in items or []:
        for part in item.split():
            if "=" not in part:
                raise MtlkitError(f"--grid {part!r} must look like TASK=W1,W2,... (e.g. edge=1,10,50)")
            task, raw = part.split("=", 1)
            try:
                values = [float(v) for v in raw.split(",") if v.strip()]
            except ValueError:
                raise MtlkitError(f"--grid {part!r}: weights must be numbers") from None
            if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
                raise MtlkitError(f"--grid {part!r}: give one or more finite weights >= 0")
            grid[task.strip()] = values
    return grid


def grid_points(grid: dict[str, list[float]], tasks: list[str]) -> list[dict[str, float]]:
    """Cartesian product over ``tasks`` (a task missing from the grid keeps weight 1)."""
    unknown = set(grid) - set(tasks)
    if unknown:
        raise MtlkitError(f"--grid names task(s) {sorted(unknown)} that the run does not have; tasks: {tasks}")
    axes = [grid.get(t, [1.0]) for t in tasks]
    return [dict(zip(tasks, combo, strict=True)) for combo in itertools.product(*axes)]


def average_logged_weights(run_dir: str | Path) -> dict[str, float]:
    """Mean over the iterations of a run's logged ``weights`` (what the paper reports for AvgNorm)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        try:
            w = json.loads(line).get("weights") or {}
        except json.JSONDecodeError:
            continue
        for t, v in w.items():
            if isinstance(v, int | float) and math.isfinite(v):
                sums[t] = sums.get(t, 0.0) + float(v)
                counts[t] = counts.get(t, 0) + 1
    return {t: sums[t] / counts[t] for t in sums}
