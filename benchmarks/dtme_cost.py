"""Cost of DTME-MTL (the paper's Tab. 6, its inference overhead and its parameter overhead), in one run.

1. Calibration on ``--calib-batches`` batches: streaming covariance (forward passes), eigendecompositions
   and the conflict measurement (forward + one backward per task + projections), against the time of one
   training epoch (``--epoch-batches`` joint training steps with Adam; default: NYUD-v2's 795 training
   images at the batch size, extrapolated from timed steps).
2. Inference per image of the expanded model (ρ = 0.5, TM + TE on conflict-selected layers, ``--budget``)
   relative to the unexpanded one, for 2..``--max-tasks`` tasks, in both readings of the paper's
   "+13.4% per task" (ViT-B, GPU):
   - amortised: ``model(x)`` for all T tasks in one batched pass, (ratio − 1) / T;
   - single task: ``model(x, tasks=[t])``, only task t's stream, ratio − 1 (mean over the tasks);
   each in wall-clock time (median of ``--repeats`` passes, the two models interleaved) and in FLOPs
   (``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions, attention).
3. With ``--vitb-flops``: FLOPs of ViT-B (224², 4 NYUD-v2 tasks) expanded at different depths (exact counts,
   hardware-independent; the fork layer decides the amortised overhead: the paper's 13.4% per task needs
   a fork near block 10 of 12).
4. Parameter overhead at the paper's Tab. 1 setting (ViT-B, 224², linear heads; NYUD-v2 4 tasks,
   PASCAL-Context 5; ρ = 0.5, L = 12, m = 6) for several readings, next to the paper's 0.24% / 0.30%.

Random images and labels (the timing does not depend on the data). Prints tables, writes JSON::

    python benchmarks/dtme_cost.py --model micro --image-size 64 --batch-size 8 \\
        --out benchmarks/results/dtme_cost.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtlkit import balancing, strategies
from mtlkit.dtme import DTMEConfig, analyze_token_space, expand, forward_flops
from mtlkit.dtme._calibrate import synchronize
from mtlkit.models import build_model
from mtlkit.tasks import make_task

TASK_ORDER = ("semseg", "depth", "normals", "edge", "saliency", "parts")
NYUD_TRAIN_IMAGES = 795
#: the paper's Tab. 1 parameter overheads (ViT-B, rho 0.5, m 6)
PAPER_PARAM_PCT = {"nyud": 0.24, "pascal-context": 0.30}


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


@torch.no_grad()
def interleaved_seconds(models: dict, images: torch.Tensor, calls: dict, repeats: int) -> dict:
    """Median seconds per image of each (model, call) pair, rounds interleaved so drift hits all alike."""
    for m in models.values():
        m.eval()
    keys = [(name, call) for name in models for call in calls]
    for name, call in keys:  # warm-up
        calls[call](models[name], images)
    times: dict = {k: [] for k in keys}
    for _ in range(repeats):
        for name, call in keys:
            synchronize(images.device)
            t0 = time.perf_counter()
            calls[call](models[name], images)
            synchronize(images.device)
            times[(name, call)].append(time.perf_counter() - t0)
    return {k: statistics.median(v) / images.shape[0] for k, v in times.items()}


def inference_row(args, n: int, device: torch.device) -> dict:
    size, bs = args.image_size, args.batch_size
    torch.manual_seed(0)
    tasks = make_tasks(n)
    plain = build_model(args.model, tasks, size).to(device)
    expanded = build_model(args.model, tasks, size).to(device)
    expanded.load_state_dict(plain.state_dict())
    calib = [random_batch(tasks, bs, size, device, 1000 + i) for i in range(3)]
    res = expand(expanded, tasks, calib, DTMEConfig(calib_batches=3, budget=args.budget, measure_inference=False))
    images = calib[0]["image"]
    models = {"plain": plain, "expanded": expanded}
    calls = {"all": lambda m, x: m(x)}
    calls.update({t: (lambda m, x, t=t: m(x, tasks=[t])) for t in tasks})
    secs = interleaved_seconds(models, images, calls, args.repeats)
    flops = {(name, c): forward_flops(m, images, None if c == "all" else [c]) for name, m in models.items()
             for c in calls}
    one = list(tasks)
    row = {
        "tasks": n,
        "tm_layers": res.spec["tm_layers"],
        "te_layers": res.spec["te_layers"],
        "fork_layer": expanded.backbone.fork_layer,
        "param_overhead_pct": res.report["param_overhead_pct"],
        "gflops_per_image_plain": flops[("plain", "all")] / 1e9,
        "gflops_per_image_expanded": flops[("expanded", "all")] / 1e9,
        "gflops_per_image_expanded_one_task": statistics.mean(flops[("expanded", t)] for t in one) / 1e9,
        "ms_per_image_plain": 1e3 * secs[("plain", "all")],
        "ms_per_image_expanded": 1e3 * secs[("expanded", "all")],
        "ms_per_image_expanded_one_task": 1e3 * statistics.mean(secs[("expanded", t)] for t in one),
    }
    f_ratio = flops[("expanded", "all")] / flops[("plain", "all")]
    s_ratio = secs[("expanded", "all")] / secs[("plain", "all")]
    row["flops_ratio_all_tasks"] = f_ratio
    row["flops_overhead_per_task_pct"] = 100 * (f_ratio - 1) / n
    row["flops_overhead_single_task_pct"] = 100 * (statistics.mean(
        flops[("expanded", t)] / flops[("plain", t)] for t in one) - 1)
    row["time_ratio_all_tasks"] = s_ratio
    row["time_overhead_per_task_pct"] = 100 * (s_ratio - 1) / n
    row["time_overhead_single_task_pct"] = 100 * (statistics.mean(
        secs[("expanded", t)] / secs[("plain", t)] for t in one) - 1)
    return row


def vitb_fork_flops() -> list[dict]:
    """GFLOPs per image of ViT-B (224², 4 tasks, linear heads) with TM / TE at given layers, both readings."""
    from mtlkit.dtme import DTME_SPEC_VERSION, apply_dtme

    tasks = make_tasks(4)
    x = torch.randn(1, 3, 224, 224)
    plain = build_model("base", tasks, 224)
    p_all, p_one = forward_flops(plain, x), forward_flops(plain, x, ["depth"])
    layouts = [([5, 6, 7, 8, 9, 10], []), ([], [5, 6, 7, 8, 9, 10]), ([6, 8, 10], [5, 7, 9]),
               ([9, 10, 11], [8, 9, 10]), ([10, 11], [10]), ([11], [])]
    rows = []
    for tm, te in layouts:
        m = build_model("base", tasks, 224)
        apply_dtme(m, {"tasks": list(tasks), "tm_layers": tm, "te_layers": te, "version": DTME_SPEC_VERSION})
        a_all, a_one = forward_flops(m, x), forward_flops(m, x, ["depth"])
        rows.append({"tm_layers": tm, "te_layers": te, "fork_layer": m.backbone.fork_layer,
                     "gflops_plain": p_all / 1e9, "gflops_expanded": a_all / 1e9,
                     "flops_overhead_per_task_pct": 100 * (a_all / p_all - 1) / 4,
                     "flops_overhead_single_task_pct": 100 * (a_one / p_one - 1)})
    return rows


def parameter_readings() -> list[dict]:
    """Added parameters T·D·(2·|TM| + m·|TE|) in % of the unexpanded ViT-B model (backbone + linear heads)."""
    d, depth, m, n = 768, 12, 6, 6  # ViT-B, rho 0.5 -> n = 6 layers
    readings = [
        ("total budget, TM and TE on the same n layers (max)", n, n),
        ("total budget, n layers split TM / TE (n/2 each)", n // 2, n // 2),
        ("each: n TM + n TE layers (mtlkit budget=each)", n, n),
        ("TE on every layer with a next block, TM on n", n, depth - 1),
        ("TM and TE on every layer", depth, depth),
    ]
    datasets = {
        "nyud": {"semseg": make_task("semseg", num_classes=40), "depth": make_task("depth"),
                 "normals": make_task("normals"), "edge": make_task("edge")},
        "pascal-context": {"semseg": make_task("semseg", num_classes=21), "parts": make_task("parts", num_classes=7),
                           "saliency": make_task("saliency"), "normals": make_task("normals"),
                           "edge": make_task("edge")},
    }
    base = {k: sum(p.numel() for p in build_model("base", t, 224, head="linear").parameters())
            for k, t in datasets.items()}
    rows = []
    for name, tm, te in readings:
        row = {"reading": name, "tm_layers": tm, "te_layers": te}
        for k, t in datasets.items():
            added = len(t) * d * (2 * tm + m * te)
            row[f"{k}_added"] = added
            row[f"{k}_pct"] = 100 * added / base[k]
        rows.append(row)
    # what the paper's numbers imply: per task 0.06% of the model (NYUD/PASCAL = 5/4 exactly)
    implied = {k: PAPER_PARAM_PCT[k] / 100 * base[k] / len(t) / d for k, t in datasets.items()}
    rows.append({"reading": "paper Tab. 1", **{f"{k}_pct": PAPER_PARAM_PCT[k] for k in datasets},
                 "implied_D_vectors_per_task": implied, "base_params": base})
    return rows


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
    p.add_argument("--budget", default="total", choices=("total", "each"))
    p.add_argument("--repeats", type=int, default=10, help="timed inference passes (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-params", action="store_true", help="skip the ViT-B parameter readings")
    p.add_argument("--vitb-flops", action="store_true", help="FLOPs of ViT-B expanded at several depths")
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

    # 2. inference overhead per number of tasks, both readings
    rows = [inference_row(args, n, device) for n in range(2, args.max_tasks + 1)]

    # 3. ViT-B FLOPs by expansion depth; 4. parameter overhead readings at ViT-B
    vitb = vitb_fork_flops() if args.vitb_flops else []
    params = [] if args.no_params else parameter_readings()

    result = {
        "setup": {"model": args.model, "image_size": size, "batch_size": bs, "device": str(device),
                  "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                  "threads": torch.get_num_threads(), "calib_tasks": list(tasks), "calib_batches": args.calib_batches,
                  "budget": args.budget, "torch": torch.__version__},
        "calibration": calib,
        "inference": rows,
        "vitb_flops": vitb,
        "parameters": params,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"DTME cost: {args.model} {size}x{size}, batch {bs}, {device} ({torch.get_num_threads()} threads)")
    print(f"\nCalibration on {args.calib_batches} batches, {len(tasks)} tasks (paper Tab. 6)")
    print("| covariance s | eigen s | conflicts s | total s | train step s | epoch s | calibration / epoch |")
    print("|---|---|---|---|---|---|---|")
    c = calib
    print(f"| {c['covariance_s']:.2f} | {c['eigen_s']:.3f} | {c['conflicts_s']:.2f} | {c['total_s']:.2f} "
          f"| {c['train_step_s']:.3f} | {c['epoch_s']:.1f} ({epoch_batches} steps) "
          f"| {c['calibration_over_epoch']:.2f} |")
    print(f"\nInference per image, expanded (rho 0.5, TM+TE, budget {args.budget}) vs unexpanded; "
          "amortised = (ratio - 1) / T for all tasks in one pass, single = one task's stream alone")
    print("| T | TM | TE | fork | params +% | GFLOP plain | GFLOP exp. | FLOPs +%/task amortised | FLOPs +% single "
          "| ms plain | ms exp. | time +%/task amortised | time +% single |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tasks']} | {r['tm_layers']} | {r['te_layers']} | {r['fork_layer']} | "
              f"{r['param_overhead_pct']:.2f} | {r['gflops_per_image_plain']:.3f} | "
              f"{r['gflops_per_image_expanded']:.3f} | {r['flops_overhead_per_task_pct']:.1f} | "
              f"{r['flops_overhead_single_task_pct']:.1f} | {r['ms_per_image_plain']:.2f} | "
              f"{r['ms_per_image_expanded']:.2f} | {r['time_overhead_per_task_pct']:.1f} | "
              f"{r['time_overhead_single_task_pct']:.1f} |")
    if vitb:
        print("\nViT-B 224², 4 tasks: GFLOPs per image by expanded layers (exact counts)")
        print("| TM | TE | fork | GFLOP plain | GFLOP expanded | +%/task amortised | +% single task |")
        print("|---|---|---|---|---|---|---|")
        for r in vitb:
            print(f"| {r['tm_layers']} | {r['te_layers']} | {r['fork_layer']} | {r['gflops_plain']:.2f} | "
                  f"{r['gflops_expanded']:.2f} | {r['flops_overhead_per_task_pct']:.1f} | "
                  f"{r['flops_overhead_single_task_pct']:.2f} |")
    if params:
        print("\nParameter overhead, ViT-B 224², linear heads, rho 0.5 (n = 6 of L = 12), m = 6: T·D·(2·|TM| + m·|TE|)")
        print("| reading | TM layers | TE layers | NYUD-v2 (4 tasks) % | PASCAL-Context (5 tasks) % |")
        print("|---|---|---|---|---|")
        for r in params:
            print(f"| {r['reading']} | {r.get('tm_layers', '')} | {r.get('te_layers', '')} | "
                  f"{r['nyud_pct']:.3f} | {r['pascal-context_pct']:.3f} |")
        implied = params[-1]["implied_D_vectors_per_task"]
        print(f"(the paper's numbers imply {implied['nyud']:.1f} / {implied['pascal-context']:.1f} D-vectors per "
              "task, 2·|TM| + m·|TE|; mtlkit's largest rho-0.5 reading gives 48)")
    print(f"\nresults: {args.out}")
    return result


if __name__ == "__main__":
    main()
