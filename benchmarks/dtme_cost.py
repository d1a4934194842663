"""Cost of DTME-MTL (the paper's Tab. 6 and its inference overhead), measured in one run.

1. Calibration on ``--calib-batches`` batches: streaming covariance (forward passes), eigendecompositions,
   and the conflict measurement (forward + one backward per task + projections), against the time of one
   training epoch (``--epoch-batches`` joint training steps with Adam; default: NYUD-v2's 795 training
   images at the batch size, extrapolated from timed steps).
2. Inference time per image of the expanded model (ρ = 0.5, TM + TE on conflict-selected layers) relative
   to the unexpanded one, for 2..``--max-tasks`` tasks; the paper reports +13.4% per task with ViT-B on GPU.

Random images and labels (the timing does not depend on the data). Prints a table, writes JSON::

    python benchmarks/dtme_cost.py --model micro --image-size 64 --batch-size 8 --out dtme_cost.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtlkit import balancing, strategies
from mtlkit.dtme import DTMEConfig, analyze_token_space, expand
from mtlkit.dtme._calibrate import synchronize
from mtlkit.dtme._measure import inference_seconds
from mtlkit.models import build_model
from mtlkit.tasks import make_task

TASK_ORDER = ("semseg", "depth", "normals", "edge", "saliency", "parts")
NYUD_TRAIN_IMAGES = 795


def make_tasks(n: int) -> dict:
    params = {"semseg": {"num_classes": 40}, "parts": {"num_classes": 7}}
    return {t: make_task(t, **params.get(t, {})) for t in TASK_ORDER[:n]}


def random_batch(tasks: dict, b: int, size: int, device: torch.device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {"image": torch.randn(b, 3, size, size, generator=g)}
    for t, task in tasks.items():
        if task.display == "labels":
            out[t] = torch.randint(0, task.channels, (b, size, size), generator=g)
        elif t == "normals":
            out[t] = F.normalize(torch.randn(b, 3, size, size, generator=g), dim=1)
        elif t == "depth":
            out[t] = torch.rand(b, 1, size, size, generator=g) + 0.1
        else:
            out[t] = (torch.rand(b, 1, size, size, generator=g) > 0.8).float()
    return {k: v.to(device) for k, v in out.items()}


def train_step_seconds(model, tasks, batch, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ctx = strategies.StepContext(model=model, tasks=tasks, balancer=balancing.get("equal", list(tasks)), optimizer=opt)
    joint = strategies.get("joint")
    model.train()
    joint.step(batch, ctx)  # warm-up
    times = []
    for _ in range(steps):
        synchronize(batch["image"].device)
        t0 = time.perf_counter()
        joint.step(batch, ctx)
        synchronize(batch["image"].device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="micro")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tasks", type=int, default=4, help="tasks in the calibration measurement")
    p.add_argument("--calib-batches", type=int, default=100)
    p.add_argument("--epoch-batches", type=int, default=None, help="default: ceil(795 / batch size) (NYUD-v2)")
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps (median)")
    p.add_argument("--max-tasks", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10, help="timed inference passes (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="dtme_cost.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size, bs = args.image_size, args.batch_size
    epoch_batches = args.epoch_batches or math.ceil(NYUD_TRAIN_IMAGES / bs)

    # 1. calibration vs one epoch
    torch.manual_seed(0)
    tasks = make_tasks(args.tasks)
    model = build_model(args.model, tasks, size).to(device)
    batches = [random_batch(tasks, bs, size, device, i) for i in range(args.calib_batches)]
    analysis = analyze_token_space(model, tasks, batches, num_batches=None)
    step_s = train_step_seconds(model, tasks, batches[0], args.train_steps)
    epoch_s = step_s * epoch_batches
    calib = {
        **analysis.timings,
        "total_s": sum(analysis.timings.values()),
        "train_step_s": step_s,
        "epoch_batches": epoch_batches,
        "epoch_s": epoch_s,
        "calibration_over_epoch": sum(analysis.timings.values()) / epoch_s,
    }

    # 2. inference overhead per number of tasks
    images = batches[0]["image"]
    rows = []
    for n in range(2, args.max_tasks + 1):
        torch.manual_seed(0)
        t_n = make_tasks(n)
        m = build_model(args.model, t_n, size).to(device)
        before = inference_seconds(m, images, repeats=args.repeats, warmup=2)
        calib_n = [random_batch(t_n, bs, size, device, 1000 + i) for i in range(3)]
        res = expand(m, t_n, calib_n, DTMEConfig(calib_batches=3, measure_inference=False))
        after = inference_seconds(m, images, repeats=args.repeats, warmup=2)
        ratio = after / before
        rows.append({
            "tasks": n,
            "tm_layers": res.spec["tm_layers"],
            "te_layers": res.spec["te_layers"],
            "fork_layer": m.backbone.fork_layer,
            "param_overhead_pct": res.report["param_overhead_pct"],
            "s_per_image_before": before,
            "s_per_image_after": after,
            "ratio": ratio,
            "overhead_per_task_pct": 100 * (ratio - 1) / n,
        })

    result = {
        "setup": {"model": args.model, "image_size": size, "batch_size": bs, "device": str(device),
                  "threads": torch.get_num_threads(), "calib_tasks": list(tasks), "calib_batches": args.calib_batches},
        "calibration": calib,
        "inference": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"DTME cost: {args.model} {size}x{size}, batch {bs}, {device} ({torch.get_num_threads()} threads)")
    print(f"\nCalibration on {args.calib_batches} batches, {len(tasks)} tasks (paper Tab. 6)")
    print("| covariance s | eigen s | conflicts s | total s | train step s | epoch s | calibration / epoch |")
    print("|---|---|---|---|---|---|---|")
    c = calib
    print(f"| {c['covariance_s']:.2f} | {c['eigen_s']:.3f} | {c['conflicts_s']:.2f} | {c['total_s']:.2f} "
          f"| {c['train_step_s']:.3f} | {c['epoch_s']:.1f} ({epoch_batches} steps) "
          f"| {c['calibration_over_epoch']:.2f} |")
    print("\nInference per image, expanded (rho 0.5, TM+TE) vs unexpanded")
    print("| tasks | TM layers | TE layers | fork | params +% | ms before | ms after | ratio | +% per task |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tasks']} | {r['tm_layers']} | {r['te_layers']} | {r['fork_layer']} | "
              f"{r['param_overhead_pct']:.2f} | {1e3 * r['s_per_image_before']:.2f} | "
              f"{1e3 * r['s_per_image_after']:.2f} | {r['ratio']:.2f} | {r['overhead_per_task_pct']:.1f} |")
    print(f"\nresults: {args.out}")
    return result


if __name__ == "__main__":
    main()
