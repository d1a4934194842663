"""Cost per batch of selective task group updates relative to the equal-weight joint step, measured in one run.

The paper (Sec. 5, Tab. 1 / E.1) argues its cost sits between loss-based methods (one forward, one backward,
one step) and gradient-based ones (T backward passes plus the aggregation): K groups cost K forwards,
K backwards and K optimizer steps, with K averaging well below T. We time, on the micro ViT with 4 tasks:

- ``equal (joint)``: the reference, one forward / backward / step;
- ``selective`` (affinity grouping, after a short warm-up) and the number of groups it used;
- ``selective grouping=joint`` (must cost the same as the reference) and ``grouping=separate`` (K = T);
- ``T backward passes``: one forward, a backward per task into a gradient matrix, their sum, one step --
  the floor of every gradient-based method (before its aggregation solver).

Methods are timed round-robin (``--rounds`` rounds of ``--steps`` batches each, after ``--warmup-steps``
untimed batches) so machine load drifts affect all alike; the per-method time is the median over rounds.
Both wall-clock and process CPU time are reported; on a shared CPU machine the CPU-time ratio (with
``--threads 1``) is the steadier one, since it does not count time spent waiting for other processes.
Usage: ``python benchmarks/selective_overhead.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mtlkit import balancing, strategies
from mtlkit.models import build_model
from mtlkit.strategies import StepContext
from mtlkit.tasks import make_task

TASKS = ("semseg", "depth", "normals", "edge")


def make_batch(size: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch_size, 3, size, size, generator=g)
    return {
        "image": image,
        "semseg": (image[:, 0] * 5).long().clamp(max=4),  # learnable targets, so losses actually move
        "depth": image[:, 1:2] + 0.5,
        "normals": torch.nn.functional.normalize(image - 0.5, dim=1),
        "edge": (image[:, 2:3] > 0.8).float(),
    }


class PerTaskBackward(strategies.Strategy):
    """T backward passes into a gradient matrix on the shared parameters, summed: gradient methods' floor."""

    name = "per-task-backward"

    def step(self, batch, ctx):
        ctx.optimizer.zero_grad(set_to_none=True)
        losses, _ = strategies.compute_losses(ctx, batch)
        shared = ctx.model.shared_parameters()
        rows = []
        for i, t in enumerate(losses):
            own = ctx.model.task_parameters(t)
            grads = torch.autograd.grad(losses[t], shared + own, retain_graph=i < len(losses) - 1, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                   for g, p in zip(grads[: len(shared)], shared, strict=True)]))
            for g, p in zip(grads[len(shared) :], own, strict=True):
                p.grad = g
        combined = torch.stack(rows).sum(0)  # an aggregator would solve for this combination
        offset = 0
        for p in shared:
            p.grad = combined[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        ctx.optimizer.step()
        return {"losses": {t: float(v.detach()) for t, v in losses.items()}, "steps": 1, "skipped": 0}


def methods() -> dict[str, Any]:
    return {
        "equal (joint)": lambda: strategies.get("joint"),
        "selective": lambda: strategies.get("selective", warmup=10, seed=0),
        "selective grouping=joint": lambda: strategies.get("selective", grouping="joint"),
        "selective grouping=separate": lambda: strategies.get("selective", grouping="separate", seed=0),
        "T backward passes": PerTaskBackward,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="timed batches per round and method")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--warmup-steps", type=int, default=12, help="untimed batches first (covers the warm-up)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tasks = {t: make_task(t, num_classes=5) if t == "semseg" else make_task(t) for t in TASKS}
    runs: dict[str, dict[str, Any]] = {}
    for name, factory in methods().items():
        torch.manual_seed(0)
        model = build_model("micro", tasks, args.size).to(args.device)
        ctx = StepContext(model=model, tasks=tasks, balancer=balancing.get("equal", tasks=list(tasks)),
                          optimizer=torch.optim.Adam(model.parameters(), lr=1e-4))
        runs[name] = {"ctx": ctx, "strategy": factory(), "times": [], "cpu": [], "groups": [], "steps": [], "i": 0}

    batches = [{k: v.to(args.device) for k, v in make_batch(args.size, args.batch_size, s).items()} for s in range(8)]

    def one(run: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        ctx = run["ctx"]
        ctx.iteration = run["i"]
        batch = batches[run["i"] % len(batches)]
        run["i"] += 1
        t0, c0 = time.perf_counter(), time.process_time()
        info = run["strategy"].step(batch, ctx)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, info

    for run in runs.values():
        for _ in range(args.warmup_steps):
            one(run)
    for _ in range(args.rounds):
        for run in runs.values():
            total = cpu = 0.0
            for _ in range(args.steps):
                dt, dc, info = one(run)
                total += dt
                cpu += dc
                run["steps"].append(int(info.get("steps", 1)))
                if "groups" in info:
                    run["groups"].append(len(info["groups"]))
            run["times"].append(total / args.steps)
            run["cpu"].append(cpu / args.steps)

    ref = statistics.median(runs["equal (joint)"]["times"])
    ref_cpu = statistics.median(runs["equal (joint)"]["cpu"])
    rows = []
    for name, run in runs.items():
        sec, cpu = statistics.median(run["times"]), statistics.median(run["cpu"])
        rows.append({
            "method": name,
            "sec_per_batch": sec,
            "relative": sec / ref,
            "cpu_sec_per_batch": cpu,
            "cpu_relative": cpu / ref_cpu,
            "avg_groups": statistics.mean(run["groups"]) if run["groups"] else None,
            "avg_steps": statistics.mean(run["steps"]),
        })
    result = {
        "benchmark": "selective_overhead",
        "model": "micro",
        "tasks": list(TASKS),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "timed_batches_per_method": args.steps * args.rounds,
        "reference": "equal (joint)",
        "rows": rows,
    }
    print(f"micro ViT, {len(TASKS)} tasks, {args.size}x{args.size}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds x {args.steps} batches")
    print(f"{'method':<30} {'s/batch':>9} {'x equal':>8} {'cpu s':>8} {'x equal':>8} {'groups K':>9} {'steps':>6}")
    for r in rows:
        k = "-" if r["avg_groups"] is None else f"{r['avg_groups']:.2f}"
        print(f"{r['method']:<30} {r['sec_per_batch']:>9.4f} {r['relative']:>8.2f} {r['cpu_sec_per_batch']:>8.4f} "
              f"{r['cpu_relative']:>8.2f} {k:>9} {r['avg_steps']:>6.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
