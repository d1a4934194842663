"""Cost of one training step per ``--arch`` and balancing method, relative to the same architecture's
equal-weight step, measured in one run (tiny CPU configurations, 4 NYUD tasks, 32x32 inputs).

What it shows: the gradient methods' overhead on each architecture, which depends on where the balancing
cut lies (MTAN / InvPT: per task; MTI-Net: one shared list; TaskPrompter: none, so per-task gradients are
taken through the whole network). Also the plain shared encoder (``shared``) on the micro ViT, for scale.

Methods are timed round-robin (``--rounds`` rounds of ``--steps`` steps after a warm-up) so load drifts on a
shared machine affect all alike; per (arch, method) the median over rounds of wall-clock and process CPU
time per step. Usage: ``python benchmarks/arch_step.py [--json benchmarks/results/arch_step.json]``.
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
from mtlkit.data.synthetic._scene import NUM_CLASSES
from mtlkit.models.arch import build_arch_model
from mtlkit.tasks import make_task

SIZE = 32
TASKS = {"semseg": NUM_CLASSES, "depth": 1, "normals": 3, "edge": 1}
TINY: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "shared": ("micro", {"depth": 4}, {}),
    "mtan": ("convnext_atto", {}, {"head_channels": 16}),
    "mtinet": ("ghostnet_050", {}, {}),
    "invpt": ("micro", {"depth": 4}, {"embed_dim": 32, "pred_channels": 16, "official_unused": False}),
    "taskprompter": ("micro", {"depth": 4}, {"embed_dim": 32, "final_embed_dim": 32, "chan_nheads": 4}),
}
METHODS = ("equal", "avgnorm", "pcgrad", "cagrad")


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(b, 3, SIZE, SIZE, generator=g)
    m = img.mean(1, keepdim=True)
    return {
        "image": img,
        "semseg": (torch.sigmoid(m[:, 0]) * NUM_CLASSES).long().clamp(0, NUM_CLASSES - 1),
        "depth": m.sigmoid() + 0.5,
        "normals": torch.nn.functional.normalize(img[:, :3] + 0.1, dim=1),
        "edge": (m > 0.3).float(),
    }


def setup(arch: str, method: str) -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    name, over, opts = TINY[arch]
    tasks = {t: make_task(t, **({"num_classes": c} if t == "semseg" else {})) for t, c in TASKS.items()}
    model = build_arch_model(name, tasks, SIZE, arch=arch, arch_options=opts, **over)
    bal = balancing.get(method, tasks=list(tasks))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ctx = strategies.StepContext(model=model, tasks=tasks, balancer=bal, optimizer=opt,
                                 needs_features=bal.needs_features)
    return model, ctx, strategies.get("joint")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/arch_step.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = batch()
    runs = {(a, m): setup(a, m) for a in TINY for m in METHODS}
    for _, ctx, strat in runs.values():  # warm-up
        strat.step(data, ctx)
    wall: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for key, (_, ctx, strat) in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                strat.step(data, ctx)
            wall[key].append((time.perf_counter() - w0) / args.steps)
            cpu[key].append((time.process_time() - c0) / args.steps)
    result: dict[str, Any] = {"size": SIZE, "batch": 4, "tasks": list(TASKS), "threads": args.threads,
                              "rounds": args.rounds, "steps": args.steps, "archs": {}}
    for a in TINY:
        model = runs[(a, "equal")][0]
        ref_w = statistics.median(wall[(a, "equal")])
        ref_c = statistics.median(cpu[(a, "equal")])
        rows = {}
        for m in METHODS:
            w, c = statistics.median(wall[(a, m)]), statistics.median(cpu[(a, m)])
            rows[m] = {"wall_s": round(w, 4), "cpu_s": round(c, 4), "wall_ratio": round(w / ref_w, 2),
                       "cpu_ratio": round(c / ref_c, 2)}
        result["archs"][a] = {"params": sum(p.numel() for p in model.parameters()), "methods": rows}
        print(a, {m: (r["wall_s"], r["cpu_ratio"]) for m, r in rows.items()})
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(out)


if __name__ == "__main__":
    main()
