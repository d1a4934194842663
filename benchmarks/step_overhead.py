"""Cost of every balancing method per training step, as a ratio to the equal-weight step, in one run.

Same model (the default ``micro`` preset at 64x64), same fixed batch (16 images), same 4 dense tasks
(semseg, depth, normals, edge), joint strategy (FAMO's default update includes its extra forward). Rounds
are interleaved (every method once per round). On CPU a step's time is the CPU time of this process
(``time.process_time``, one torch thread by default), which other processes on a loaded machine do not add
to (they still slow it through shared caches and memory bandwidth); on CUDA it is wall time between
synchronisations. Ratios use the median of the N interleaved steps of each method; the minimum is in the
JSON too, and ``spread`` is the interquartile range over the median (the noise of that row). Reference rows:

- ``T backward passes``: forward, then one full backward per task (``autograd.grad`` of each loss), summed:
  the naive per-task-gradient step, the bound Jacobian methods must not exceed.
- ``nash_mtl [official]``: Nash-MTL with the official cvxpy solver, beside the default warm-started Newton
  solve of the same equation (``agg ms`` is the solver's wall time per step).
- ``[autogram]``: every aggregator whose weights come from the Gramian J Jᵀ, with ``engine="autogram"``
  (TorchJD's Gramian engine hooked on the backbone, then one backward of Σ w_t L_t) beside the default
  Jacobian path.
- for every method that differentiates per task with respect to parameters (aggregators with
  ``on=params``, AvgNorm, GradNorm) a second timing with the per-task backbone gradients batched in one
  ``vmap`` call (``chunk_size=T``) beside the default (a loop of T backbone backward passes on CPU,
  all tasks batched on accelerators), showing where batching beats the loop.

``agg ms``: the aggregator's own time per step (Gramian weighting, QP / convex solvers), from the step log.
Peak memory: on CUDA the peak allocated memory of a step; on CPU the peak resident set size of a step
above the resident set before it (Linux ``/proc/self/clear_refs``), in a fresh process per method whose
allocator returns large blocks to the system (``MALLOC_MMAP_THRESHOLD_``); ``--no-memory`` skips it.

    python benchmarks/step_overhead.py [--threads 1] [--rounds 15] [--model micro] [--methods a,b]
        [--out benchmarks/results/step_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mtlkit import balancing, strategies
from mtlkit.models import build_model
from mtlkit.tasks import make_task

TASKS = ("semseg", "depth", "normals", "edge")
NAIVE = "T backward passes"


def make_batch(tasks: dict[str, Any], batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {"image": torch.randn(batch, 3, size, size, generator=g)}
    out["semseg"] = torch.randint(0, tasks["semseg"].channels, (batch, size, size), generator=g)
    out["depth"] = torch.rand(batch, 1, size, size, generator=g) * 10 + 0.1
    out["normals"] = torch.nn.functional.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1)
    out["edge"] = (torch.rand(batch, 1, size, size, generator=g) > 0.9).float()
    return {k: v.to(device) for k, v in out.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One method (or the naive reference) with its own model copy, optimizer and step function."""

    def __init__(self, label: str, method: str | None, options: dict[str, Any], args: argparse.Namespace,
                 device: torch.device) -> None:
        self.label, self.method = label, method
        self.tasks = {t: make_task(t) for t in TASKS}
        torch.manual_seed(0)
        self.model = build_model(args.model, self.tasks, img_size=args.size).to(device)
        self.batch = make_batch(self.tasks, args.batch, args.size, device)
        self.device = device
        if method is None:
            self.balancer = None
            params = list(self.model.parameters())
        else:
            self.balancer = balancing.get(method, tasks=list(self.tasks), **options)
            if options.get("engine") == "autogram":
                self.balancer.setup(model=self.model)  # hooks the backbone before the first forward
            params = list(self.model.parameters()) + self.balancer.parameters()
        self.opt = torch.optim.Adam(params, lr=1e-5)
        self.strategy = strategies.Joint()
        self.it = 0

    def step(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if self.balancer is None:
            self._naive_step()
        else:
            ctx = strategies.StepContext(model=self.model, tasks=self.tasks, balancer=self.balancer,
                                         optimizer=self.opt, iteration=self.it,
                                         needs_features=self.balancer.needs_features)
            info = self.strategy.step(self.batch, ctx)
        self.it += 1
        return info

    def _naive_step(self) -> None:
        """Forward, then T separate full backward passes (per-task gradients of every parameter), summed."""
        self.opt.zero_grad(set_to_none=True)
        out = self.model(self.batch["image"])
        params = [p for p in self.model.parameters() if p.requires_grad]
        total = [torch.zeros_like(p) for p in params]
        for t in TASKS:
            loss = self.tasks[t].loss(out[t], self.batch[t])
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g)
        for p, g in zip(params, total, strict=True):
            p.grad = g
        self.opt.step()

    def timed(self) -> tuple[float, dict[str, Any]]:
        """Seconds of one step: CPU time of this process on CPU, wall time between synchronisations on CUDA."""
        clock = time.perf_counter if self.device.type == "cuda" else time.process_time
        sync(self.device)
        t0 = clock()
        info = self.step()
        sync(self.device)
        return clock() - t0, info


def runner_specs(args: argparse.Namespace) -> list[tuple[str, str | None, dict[str, Any], str]]:
    """(label, method, options, kind) for every row to time."""
    names = args.methods.split(",") if args.methods else balancing.BALANCERS.names()
    names = ["equal"] + [n for n in names if n != "equal"]
    specs: list[tuple[str, str | None, dict[str, Any], str]] = []
    for n in names:
        cls = balancing.BALANCERS.get(n)
        missing = [m for m in cls.requires if __import__("importlib").util.find_spec(m) is None]
        if missing:
            print(f"skipping {n}: needs {', '.join(missing)} (pip install 'mtlkit[solvers]')", file=sys.stderr)
            continue
        specs.append((n, n, {}, cls.kind))
        if "solver" in cls.options and n == "nash_mtl":
            specs.append((f"{n} [official]", n, {"solver": "official"}, cls.kind))
        per_param = issubclass(cls, balancing.GradientLossWeighting) or (
            issubclass(cls, balancing.JacobianAggregator) and cls.default_on == "params")
        if per_param and args.vmap:
            specs.append((f"{n} [vmap]", n, {"chunk_size": len(TASKS)}, cls.kind))
        if args.autogram and "engine" in cls.options and cls.default_on == "params":
            specs.append((f"{n} [autogram]", n, {"engine": "autogram"}, cls.kind))
        if n == "famo":  # the default re-computes the losses after the step (one more forward); "next" does not
            specs.append(("famo [next]", n, {"update": "next"}, cls.kind))
    specs.insert(1, (NAIVE, None, {}, "reference"))
    return specs


def _rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (Linux)."""
    text = Path("/proc/self/status").read_text()
    lines = [line for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM"))]
    val = {line.split(":")[0]: int(line.split()[1]) for line in lines}
    return val["VmRSS"] / 1024.0, val["VmHWM"] / 1024.0


def _memory_child(queue: Any, label: str, method: str | None, options: dict[str, Any], ns: dict[str, Any]) -> None:
    torch.set_num_threads(ns["threads"])
    r = Runner(label, method, options, argparse.Namespace(**ns), torch.device("cpu"))
    r.step()  # optimizer state and caches exist from here on
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    base, _ = _rss_mib()
    r.step()
    r.step()
    queue.put(_rss_mib()[1] - base)


def cpu_peak_mib(spec: tuple[str, str | None, dict[str, Any], str], args: argparse.Namespace) -> float | None:
    """Peak memory of a step above the resident set before it, in a fresh process (Linux only)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # large blocks go back to the system when freed
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    label, method, options, _ = spec
    p = ctx.Process(target=_memory_child, args=(q, label, method, options, vars(args)))
    p.start()
    p.join(timeout=600)
    return q.get() if p.exitcode == 0 and not q.empty() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="micro")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per method (interleaved)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable ratios on a shared machine)")
    ap.add_argument("--methods", help="comma-separated subset (equal is always included)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-vmap", dest="vmap", action="store_false", help="skip the batched-Jacobian rows")
    ap.add_argument("--no-autogram", dest="autogram", action="store_false",
                    help="skip the rows with TorchJD's Gramian engine (engine=autogram)")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--out", default="benchmarks/results/step_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    specs = runner_specs(args)
    runners = [Runner(label, method, opts, args, device) for label, method, opts, _ in specs]
    for r in runners:
        for _ in range(args.warmup):
            r.step()
    times: dict[str, list[float]] = {r.label: [] for r in runners}
    agg_ms: dict[str, list[float]] = {r.label: [] for r in runners}
    for i in range(args.rounds):
        for r in runners:
            dt, info = r.timed()
            times[r.label].append(dt)
            if "aggregate_ms" in info:
                agg_ms[r.label].append(info["aggregate_ms"])
        print(f"\rround {i + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    peaks: dict[str, float | None] = {}
    if args.memory:
        for spec, r in zip(specs, runners, strict=True):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                r.step()
                peaks[r.label] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            else:
                peaks[r.label] = cpu_peak_mib(spec, args)

    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (statistics.quantiles(v, n=4)[2] - statistics.quantiles(v, n=4)[0]) / med[k] if len(v) > 1 else 0.0
              for k, v in times.items()}
    equal, naive = med["equal"], med[NAIVE]
    rows = []
    for label, method, opts, kind in specs:
        ratio = med[label] / equal
        target = None  # the goals: AvgNorm / equal <= 1.2, Jacobian methods <= T backward passes
        if kind == "loss weighting":
            target = 1.2 if method in ("avgnorm", "gradnorm") else 1.1
        elif kind == "gradient aggregation":
            target = naive / equal
        rows.append({
            "method": label, "kind": kind, "options": opts,
            "seconds_per_step_median": med[label], "seconds_per_step_min": best[label], "spread": spread[label],
            "ratio_to_equal": ratio, "ratio_to_equal_min": best[label] / best["equal"],
            "ratio_to_T_backward": med[label] / naive, "target_ratio": target,
            "meets_target": None if target is None else ratio <= target,
            "aggregate_ms": statistics.median(agg_ms[label]) if agg_ms[label] else None,
            "peak_memory_mib": peaks.get(label),
        })
    result = {
        "config": {"model": args.model, "image_size": args.size, "batch": args.batch, "tasks": list(TASKS),
                   "rounds": args.rounds, "threads": args.threads, "device": str(device)},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count()},
        "clock": "wall time (CUDA synchronised)" if device.type == "cuda" else "process CPU time",
        "estimator": "median over interleaved rounds (minimum also given; spread = IQR / median)",
        "load_average": os.getloadavg(),
        "equal_seconds_per_step": equal, "T_backward_seconds_per_step": naive, "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"{args.model} {args.size}x{args.size}, batch {args.batch}, {len(TASKS)} tasks, {args.threads} thread(s), "
          f"{device}; median of {args.rounds} interleaved steps, "
          f"{'wall' if device.type == 'cuda' else 'CPU'} time; load average {os.getloadavg()[0]:.1f}")
    print(f"equal: {equal * 1000:.1f} ms/step; T backward passes: {naive * 1000:.1f} ms/step ({naive / equal:.2f}x)")
    head = (f"{'method':22s} {'kind':20s} {'ms/step':>8s} {'spread':>6s} {'x equal':>8s} {'x T-bwd':>8s} "
            f"{'target':>7s} {'ok':>3s} {'agg ms':>7s} {'peak MiB':>9s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        tgt = "-" if r["target_ratio"] is None else f"{r['target_ratio']:.2f}"
        ok = "-" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        agg = "-" if r["aggregate_ms"] is None else f"{r['aggregate_ms']:.1f}"
        mem = "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f}"
        print(f"{r['method']:22s} {r['kind']:20s} {r['seconds_per_step_median'] * 1000:8.1f} {r['spread']:6.2f} "
              f"{r['ratio_to_equal']:8.2f} {r['ratio_to_T_backward']:8.2f} {tgt:>7s} {ok:>3s} {agg:>7s} {mem:>9s}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
