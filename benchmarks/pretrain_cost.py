"""How long does the default ``mtlkit pretrain`` of a CNN (SimSiam) take here? Seconds per step, extrapolated.

Runs ``--steps`` steps of the production loop (:func:`mtlkit.engine._simsiam.train_simsiam`, the default
``PretrainConfig(model=--model)``: batch 64, 64 x 64, two views) on scenes rendered beforehand, and times the
rendering of those scenes separately (the real run renders its ``images`` distinct scenes as the stream reaches
them). Seconds per step: the median of the per-step times after the first (warm-up) step. Extrapolated run:
``steps x s/step + images x s/scene``; the issue's budget is 30 minutes on the 2 CPU cores of this machine.

    nice -n 10 python benchmarks/pretrain_cost.py [--model resnet18] [--steps 20]
        [--out benchmarks/results/pretrain_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mtlkit.engine._simsiam import train_simsiam
from mtlkit.engine.pretrain import PretrainConfig, SceneStream, lr_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/pretrain_cost.json")
    args = ap.parse_args()

    default = PretrainConfig(model=args.model)
    cfg = PretrainConfig(model=args.model, steps=args.steps, images=args.steps * default.batch_size, log_every=1)
    stream = SceneStream(cfg)
    t0 = time.perf_counter()
    stream._ensure(cfg.images)
    render_s = (time.perf_counter() - t0) / cfg.images
    _, curve, _ = train_simsiam(cfg, stream.raw, lambda s: lr_at(s, cfg), progress=False)
    times = [round(b["seconds"] - a["seconds"], 2) for a, b in zip(curve, curve[1:], strict=False)]
    step_s = statistics.median(times)
    full = default.steps * step_s + default.images * render_s
    result = {
        "command": f"nice -n 10 python benchmarks/pretrain_cost.py --model {args.model} --steps {args.steps}",
        "model": args.model, "objective": cfg.objective,
        "default_config": {"steps": default.steps, "batch_size": default.batch_size, "image_size": default.image_size,
                           "images": default.images},
        "measured_steps": args.steps, "seconds_first_step": curve[0]["seconds"], "seconds_per_step_median": step_s,
        "seconds_per_step_min_max": [min(times), max(times)], "seconds_render_per_scene": round(render_s, 5),
        "extrapolated_default_run_s": round(full, 1), "budget_s": 1800, "within_budget": full <= 1800,
        "loss_first": curve[0]["loss"], "loss_last": curve[-1]["loss"],
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "nice": os.nice(0), "torch": torch.__version__, "platform": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
