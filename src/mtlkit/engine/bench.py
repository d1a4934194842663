"""Benchmark suites: single-task baselines + methods over seeds -> the paper-style table.

A method entry is a name resolved to config overrides: a balancing method (``avgnorm``), an update strategy
(``selective``), ``dtme`` (token modulation / expansion with the default balancer) or ``recon``.
Results: ``results.json``, ``results.csv`` and ``results.md`` in the output directory.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlkit.engine._single_task import train_single_task_baselines
from mtlkit.engine.config import TrainConfig
from mtlkit.errors import MtlkitError


@dataclass
class Suite:
    dataset: str
    methods: list[str]
    seeds: list[int]
    config: dict[str, Any] = field(default_factory=dict)
    #: also train these methods from random init and report the checkpoint's gain over it (mtlkit.engine.pretrain)
    random_init: list[str] = field(default_factory=list)


SUITES: dict[str, Suite] = {
    # `make demo`: baselines + equal weighting on synthetic NYUD, a few minutes on 2 CPU cores.
    # It starts from the shipped MAE checkpoint of the micro ViT (--pretrained default, docs/pretrain.md) and
    # reports the gain over the same run from random init.
    "demo": Suite("synthetic-nyud", ["equal"], [0], {"iters": 300, "batch_size": 8, "eval_every": 0,
                                                     "pretrained": "default"}, random_init=["equal"]),
    # A broader CPU comparison: the three papers' methods against the common baselines.
    "quick": Suite("synthetic-nyud", ["equal", "uw", "dwa", "avgnorm", "pcgrad", "mgda", "selective", "dtme"],
                   [0, 1], {"iters": 600, "batch_size": 16, "eval_every": 0}),
}


def method_overrides(name: str) -> dict[str, Any]:
    from mtlkit.balancing import BALANCERS
    from mtlkit.strategies import STRATEGIES

    if name in BALANCERS:
        return {"method": name}
    if name in STRATEGIES:
        return {"strategy": name}
    if name in ("dtme", "recon"):
        return {name: {}}
    valid = sorted(set(BALANCERS.names()) | set(STRATEGIES.names()) | {"dtme", "recon"})
    raise MtlkitError(f"unknown method {name!r} in benchmark; valid: {', '.join(valid)}")


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def run_suite(
    suite: Suite, out: Path, base: dict[str, Any] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train the baselines and every method for every seed; write and return the table."""
    from mtlkit.engine.trainer import Trainer

    for m in suite.methods:
        method_overrides(m)  # fail before training on an unknown name
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    tasks: list[str] | None = None
    for seed in suite.seeds:
        cfg = TrainConfig.from_dict({"dataset": suite.dataset, **suite.config, **(base or {}), "seed": seed,
                                     "progress": progress, "out": str(out / "runs" / f"single-seed{seed}")})
        if tasks is None:
            from mtlkit.data import build_dataset

            ds = build_dataset(cfg.dataset, "val", root=cfg.data_root, tasks=cfg.tasks, image_size=cfg.image_size,
                               **cfg.dataset_options)
            tasks = list(ds.task_names)
        path = train_single_task_baselines(cfg, tasks)
        data = json.loads(path.read_text())
        rows.append({"method": "single-task", "seed": seed, "primary": {t: data["test"][t] for t in tasks},
                     "delta_m": 0.0, "seconds_per_iter": None, "run": str(path.parent)})
        for m in suite.methods:
            run_cfg = cfg.replace(out=str(out / "runs" / f"{m}-seed{seed}"), **method_overrides(m))
            metrics = Trainer.from_config(run_cfg).fit()
            rows.append({"method": m, "seed": seed, "primary": metrics["primary"], "delta_m": metrics["delta_m"],
                         "seconds_per_iter": metrics["seconds_per_iter"], "run": run_cfg.out})
        for m in suite.random_init if cfg.pretrained else []:
            from mtlkit.engine._pretrain_gain import random_init_row

            rows.append(random_init_row(cfg, m, method_overrides(m), out, seed, rows, tasks))
    table = summarize(rows, tasks or [])
    if suite.random_init and rows:
        from mtlkit.engine._pretrain_gain import gain_markdown

        table["markdown"] += gain_markdown(rows, tasks or [], cfg_dataset=suite.dataset)
    (out / "results.json").write_text(json.dumps({"rows": rows, "table": table}, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *tasks, "delta_m", "seconds_per_iter"])
        for r in rows:
            w.writerow([r["method"], r["seed"], *[r["primary"][t] for t in tasks], r["delta_m"], r["seconds_per_iter"]])
    (out / "results.md").write_text(table["markdown"])
    return table


def summarize(rows: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    from mtlkit.tasks import TASKS  # noqa: F401  (names only)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    header = ["method", *tasks, "Δm (%)", "s/iter"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = {}
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        cells = [_fmt([r["primary"][t] for r in rs]) for t in tasks]
        dm = _fmt([r["delta_m"] for r in rs])
        spi = [r["seconds_per_iter"] for r in rs if r["seconds_per_iter"] is not None]
        spi_s = f"{statistics.mean(spi):.3f}" if spi else "-"
        lines.append("| " + " | ".join([m, *cells, dm, spi_s]) + " |")
        summary[m] = {"primary": {t: [r["primary"][t] for r in rs] for t in tasks},
                      "delta_m": [r["delta_m"] for r in rs], "seconds_per_iter": spi}
    return {"methods": summary, "markdown": "\n".join(lines) + "\n"}
