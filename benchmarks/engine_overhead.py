"""Overhead of ``mtlkit.Trainer`` against a bare PyTorch loop doing the same training, in one run.

Both train the same model from the same initial weights with equal loss weights, Adam, a polynomial LR
schedule and the same batches (the Trainer's deterministic iteration sampler, in memory, no workers),
and write the model once at the end. The bare loop is the shortest correct loop: zero_grad, forward,
Σ losses, backward, step, schedule step. The Trainer adds what it always does: batch normalisation,
per-step finiteness check (a NaN step is skipped), logs (JSONL, CSV, TensorBoard), the end checkpoint
and resume state. Evaluation is left out of both (no val / test data).

Two workloads: a user MLP on tabular rows (``SharedBottom``; 64 features, 3 hidden layers of 512, batch
256, 2 classification tasks + 1 regression task) and the ``micro`` ViT on 64×64 images (batch 16, 4 dense
tasks). The main numbers are paired: a Trainer callback runs one bare-loop step at the start of every
Trainer iteration, so the two alternate step by step under the same machine load; steps/s from the
median step, the overhead also from the 10th percentile (on a shared machine other processes only add
time). Then each whole run alone (wall time, median of rounds, alternating order; the Trainer's includes
its end checkpoint and resume state). Goal: the Trainer within 5% of the bare loop.

    python benchmarks/engine_overhead.py [--rounds 5] [--mlp-steps 300] [--vit-steps 30] [--device cpu]
        [--out benchmarks/results/engine_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import mtlkit
from mtlkit.engine._sampler import IterationBatchSampler
from mtlkit.metrics import AccuracyMeter, RegressionMeter
from mtlkit.models import SharedBottom, build_model
from mtlkit.tasks import make_task

FEATURES, HIDDEN = 64, 512


class Rows(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=g)
        buckets = torch.bucketize(self.x[:, 1].contiguous(), torch.tensor([-0.5, 0.5]))
        self.y = {"a": (self.x[:, 0] > 0).long(), "b": buckets, "r": self.x[:, 2] + 0.5 * self.x[:, 3]}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], **{t: v[i] for t, v in self.y.items()}}


class Images(Dataset):
    def __init__(self, n: int, size: int, tasks: dict[str, Any]) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = {"semseg": torch.randint(0, tasks["semseg"].channels, (n, size, size), generator=g),
                  "depth": torch.rand(n, 1, size, size, generator=g) * 10 + 0.1,
                  "normals": F.normalize(torch.randn(n, 3, size, size, generator=g), dim=1),
                  "edge": (torch.rand(n, 1, size, size, generator=g) > 0.9).float()}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], **{t: v[i] for t, v in self.y.items()}}


def mlp_workload() -> tuple[dict[str, Any], Dataset, Any, int]:
    tasks = {
        "a": mtlkit.Task("a", 2, lambda p, t: F.cross_entropy(p, t), AccuracyMeter, "accuracy", True,
                         kind="classification"),
        "b": mtlkit.Task("b", 3, lambda p, t: F.cross_entropy(p, t), AccuracyMeter, "accuracy", True,
                         kind="classification"),
        "r": mtlkit.Task("r", 1, lambda p, t: F.mse_loss(p.squeeze(1), t), RegressionMeter, "rmse", False,
                         kind="regression"),
    }

    def make() -> nn.Module:
        enc = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                            nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        return SharedBottom(enc, {t: nn.Linear(HIDDEN, task.channels) for t, task in tasks.items()})

    return tasks, Rows(8192), make, 256


def vit_workload() -> tuple[dict[str, Any], Dataset, Any, int]:
    tasks = {t: make_task(t, **({"num_classes": 7} if t == "semseg" else {}))
             for t in ("semseg", "depth", "normals", "edge")}
    return tasks, Images(256, 64, tasks), lambda: build_model("micro", tasks, img_size=64), 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bare:
    """The shortest correct loop, one step at a time: zero_grad, forward, Σ losses, backward, step, schedule."""

    def __init__(self, tasks, data, make, batch, steps, device) -> None:
        torch.manual_seed(0)
        self.tasks, self.device = tasks, device
        self.model = make().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda it: max(0.0, 1 - it / steps) ** 0.9)
        loader = DataLoader(data, batch_sampler=IterationBatchSampler(len(data), batch, 0, total=steps))
        self.batches = iter(loader)

    def step(self) -> bool:
        b = next(self.batches, None)
        if b is None:
            return False
        b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
        self.opt.zero_grad(set_to_none=True)
        outputs = self.model(b["image"])
        loss = sum(self.tasks[t].loss(outputs[t], b[t]) for t in self.tasks)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return True


class Paired:
    """Trainer callback that runs one bare-loop step at the start of every Trainer iteration and times
    both: the Trainer's iteration (from the end of this callback to its next call: data, step, logging)
    and the bare step, interleaved step by step so that both see the same machine load."""

    def __init__(self, bare: Bare, device: torch.device) -> None:
        self.bare, self.device = bare, device
        self.trainer_s: list[float] = []
        self.bare_s: list[float] = []
        self._last: float | None = None

    def on_iteration_start(self, trainer: Any, iteration: int) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self._last is not None:
            self.trainer_s.append(now - self._last)
        self.bare.step()
        sync(self.device)
        t = time.perf_counter()
        self.bare_s.append(t - now)
        self._last = time.perf_counter()


def run_pair(tasks, data, make, batch, steps, device, out: Path) -> tuple[list[float], list[float]]:
    bare = Bare(tasks, data, make, batch, steps, device)
    clock = Paired(bare, device)
    torch.manual_seed(0)
    t = mtlkit.Trainer(make(), tasks, data, balancer="equal", iters=steps, batch_size=batch, out=out / "run",
                       lr=1e-3, weight_decay=0.0, device=device, predictions=False, callbacks=[clock])
    t.fit()
    return clock.trainer_s[1:], clock.bare_s[2:]  # drop the first iterations (lazy allocations)


def wall(kind: str, tasks, data, make, batch, steps, device, out: Path) -> float:
    """A whole run, alone: the bare loop (plus one torch.save) or Trainer.fit (plus its end checkpoint)."""
    sync(device)
    t0 = time.perf_counter()
    if kind == "bare":
        bare = Bare(tasks, data, make, batch, steps, device)
        while bare.step():
            pass
        torch.save(bare.model.state_dict(), out / "bare.pt")
    else:
        torch.manual_seed(0)
        mtlkit.Trainer(make(), tasks, data, balancer="equal", iters=steps, batch_size=batch, out=out / "wall",
                       lr=1e-3, weight_decay=0.0, device=device, predictions=False).fit()
    sync(device)
    return time.perf_counter() - t0


def measure(name, workload, steps: int, rounds: int, device: torch.device) -> dict[str, Any]:
    tasks, data, make, batch = workload()
    paired: dict[str, list[float]] = {"bare": [], "trainer": []}
    totals: dict[str, list[float]] = {"bare": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_pair(tasks, data, make, batch, min(steps, 5), device, out)  # warm-up (allocator, kernels)
        for r in range(rounds):
            tr, ba = run_pair(tasks, data, make, batch, steps, device, out)
            paired["trainer"] += tr
            paired["bare"] += ba
            for kind in (("bare", "trainer") if r % 2 == 0 else ("trainer", "bare")):
                totals[kind].append(wall(kind, tasks, data, make, batch, steps, device, out))
    med = {k: statistics.median(v) for k, v in paired.items()}
    p10 = {k: statistics.quantiles(v, n=10)[0] for k, v in paired.items()}
    walls = {k: statistics.median(v) for k, v in totals.items()}
    return {
        "workload": name, "steps": steps, "batch": batch, "rounds": rounds,
        "bare_steps_per_s": 1 / med["bare"], "trainer_steps_per_s": 1 / med["trainer"],
        "step_ms_median": {k: 1000 * v for k, v in med.items()},
        "step_ms_p10": {k: 1000 * v for k, v in p10.items()},
        "overhead_pct_median": 100 * (med["trainer"] / med["bare"] - 1),
        "overhead_pct_p10": 100 * (p10["trainer"] / p10["bare"] - 1),
        "overhead_pct_wall": 100 * (walls["trainer"] / walls["bare"] - 1),
        "wall_seconds": totals,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mlp-steps", type=int, default=300)
    p.add_argument("--vit-steps", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure("mlp (SharedBottom, tabular)", mlp_workload, args.mlp_steps, args.rounds, device),
            measure("micro ViT 64x64 (4 dense tasks)", vit_workload, args.vit_steps, args.rounds, device)]
    env = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "python": sys.version.split()[0], "machine": platform.machine(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "results": rows}, indent=2))
    print(f"{'workload':34s} {'bare steps/s':>12s} {'Trainer steps/s':>15s} {'overhead median':>16s} "
          f"{'overhead p10':>13s} {'overhead wall':>14s}")
    for r in rows:
        print(f"{r['workload']:34s} {r['bare_steps_per_s']:12.1f} {r['trainer_steps_per_s']:15.1f} "
              f"{r['overhead_pct_median']:+15.1f}% {r['overhead_pct_p10']:+12.1f}% {r['overhead_pct_wall']:+13.1f}%")
    print(f"env: {env}  ->  {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
