"""The gain of a pretrained backbone over random init in a benchmark suite (``make demo``, issue #18).

A method listed in ``Suite.random_init`` is trained a second time with ``pretrained=None`` (same seed, data and
budget). Its Δm over the single-task baselines (trained from the checkpoint) goes in the table as
``<method> (random init)``, and the gain is reported as Δm of the pretrained run *over the random-init run*
(Maninis et al.'s formula with the random-init run as the reference; positive = the checkpoint helps).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def _directions(cfg: Any, tasks: list[str]) -> dict[str, bool]:
    from mtlkit.data import build_dataset

    ds = build_dataset(cfg.dataset, "val", root=cfg.data_root, tasks=tasks, image_size=cfg.image_size,
                       **cfg.dataset_options)
    return {t: task.higher_is_better for t, task in ds.make_tasks(tasks).items()}


def random_init_row(cfg: Any, method: str, overrides: dict[str, Any], out: Path, seed: int,
                    rows: list[dict[str, Any]], tasks: list[str] | None) -> dict[str, Any]:
    """Train ``method`` from random init; its row (Δm against this seed's single-task row)."""
    from mtlkit.engine.trainer import Trainer
    from mtlkit.metrics import delta_m

    run_cfg = cfg.replace(out=str(out / "runs" / f"{method}-random-init-seed{seed}"), pretrained=None, **overrides)
    metrics = Trainer.from_config(run_cfg).fit()
    tasks = tasks or list(metrics["primary"])
    single = next(r for r in rows if r["method"] == "single-task" and r["seed"] == seed)
    dm = delta_m(metrics["primary"], single["primary"], _directions(cfg, tasks))
    return {"method": f"{method} (random init)", "seed": seed, "primary": metrics["primary"], "delta_m": dm,
            "seconds_per_iter": metrics["seconds_per_iter"], "run": run_cfg.out,
            "higher_is_better": _directions(cfg, tasks)}


def gain_markdown(rows: list[dict[str, Any]], tasks: list[str], cfg_dataset: str = "") -> str:
    """A paragraph: per task and Δm, the pretrained run's gain over its random-init twin (mean over seeds)."""
    from mtlkit.metrics import delta_m

    lines = []
    for r in rows:
        if not r["method"].endswith(" (random init)"):
            continue
        base = r["method"][: -len(" (random init)")]
        pre = next((x for x in rows if x["method"] == base and x["seed"] == r["seed"]), None)
        if pre is None:
            continue
        gain = delta_m(pre["primary"], r["primary"], r["higher_is_better"])
        lines.append((base, r["seed"], gain, {t: pre["primary"][t] - r["primary"][t] for t in tasks}))
    if not lines:
        return ""
    out = ["", f"Gain of the pretrained checkpoint over random init ({cfg_dataset}, same seed and budget; Δm of the "
           "pretrained run with the random-init run as reference):", ""]
    for base in dict.fromkeys(b for b, *_ in lines):
        gains = [g for b, _, g, _ in lines if b == base]
        diffs = {t: statistics.mean(d[t] for b, _, _, d in lines if b == base) for t in tasks}
        per = ", ".join(f"{t} {v:+.3g}" for t, v in diffs.items())
        out.append(f"- {base}: Δm {statistics.mean(gains):+.2f}% over {len(gains)} seed(s) (metric differences: {per})")
    return "\n".join(out) + "\n"
