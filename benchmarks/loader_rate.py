"""Does the synthetic data keep training fed? Loader production rate vs training consumption, in samples/s.

Production: batches drawn from the trainer's own training loader (``Trainer._loader``: the iteration
sampler, the DataLoader with the run's worker options, the batch formatting) for the default data
configuration (``synthetic-nyud``, 64x64, batch 16) with the default ``num_workers`` (0, generation in the
training process) and with ``--workers`` processes. Consumption: training steps of the default model and
method (``micro``, ``equal``, joint strategy) on a batch already in memory. The issue's requirement is
production >= 5x consumption with the default workers. Each rate is the median of ``--rounds`` timed
windows, interleaved (production window, consumption window, ...), wall clock.

    python benchmarks/loader_rate.py [--rounds 5] [--workers 2] [--out benchmarks/results/loader_rate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mtlkit.data import build_dataset
from mtlkit.engine import Trainer
from mtlkit.engine._batch import to_device
from mtlkit.models import build_model


def make_trainer(args: argparse.Namespace, workers: int, out: Path) -> Trainer:
    train = build_dataset("synthetic-nyud", "train", image_size=args.size)
    tasks = train.make_tasks()
    torch.manual_seed(0)
    model = build_model(args.model, tasks, args.size)
    return Trainer(model, tasks, train, balancer=args.method, iters=10**6, out=out, batch_size=args.batch,
                   num_workers=workers, device=args.device, progress=False, predictions=False)


def production(trainer: Trainer, batches: int, it: Any) -> float:
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += next(iter(b.values())).shape[0]
    return n / (time.perf_counter() - t0)


def consumption(trainer: Trainer, batch: dict[str, Any], steps: int) -> float:
    trainer.model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.strategy.step(batch, trainer._context())
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return steps * trainer.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model", default="micro")
    p.add_argument("--method", default="equal")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="a second production measurement with this many workers")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=20, help="batches per production window")
    p.add_argument("--steps", type=int, default=4, help="steps per consumption window")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/loader_rate.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        default = make_trainer(args, 0, Path(tmp) / "w0")
        workers = make_trainer(args, args.workers, Path(tmp) / "wn")
        it0, itn = iter(default._loader()), iter(workers._loader())
        batch = to_device(next(it0), default.device)
        next(itn)  # start the workers outside the timing
        consumption(default, batch, 1)  # warm-up
        rates: dict[str, list[float]] = {"default_workers": [], f"{args.workers}_workers": [], "training": []}
        for _ in range(args.rounds):
            rates["default_workers"].append(production(default, args.batches, it0))
            rates[f"{args.workers}_workers"].append(production(workers, args.batches, itn))
            rates["training"].append(consumption(default, batch, args.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "config": {"dataset": "synthetic-nyud", "image_size": args.size, "batch_size": args.batch, "model": args.model,
                   "method": args.method, "device": args.device, "default_num_workers": 0, "workers": args.workers,
                   "rounds": args.rounds, "torch_threads": torch.get_num_threads()},
        "samples_per_s": med,
        "all_rounds": rates,
        "ratio_default_workers": med["default_workers"] / med["training"],
        f"ratio_{args.workers}_workers": med[f"{args.workers}_workers"] / med["training"],
        "requirement": "production / consumption >= 5 with the default workers",
        "holds": med["default_workers"] / med["training"] >= 5,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for k, v in med.items():
        print(f"{k:>16}: {v:10.1f} samples/s")
    print(f"production / consumption: {result['ratio_default_workers']:.1f}x (default workers), "
          f"{result[f'ratio_{args.workers}_workers']:.1f}x ({args.workers} workers) -> {out}")
    return result


if __name__ == "__main__":
    main()
