"""One command for an accelerator: seconds per iteration and peak memory of the papers' setting, per method.

ViT-B/16 at 448x576, batch 8, the 4 NYUD-v2 tasks (semseg with 40 classes, depth, normals, edge), random
images and labels (the time does not depend on the data), Adam. Rows: the same step written as a bare
PyTorch loop (forward, summed losses, one backward, optimizer step); mtlkit's joint step with ``equal``,
``avgnorm``, ``uw``, ``pcgrad``, ``cagrad``, ``nash_mtl``; the selective strategy (affinity grouping, no
warm-up, equal weights inside a group); DTME before its expansion (the plain model, equal weights) and
after it (the expanded model, calibrated on 2 batches). Each row at ``fp32``, ``bf16`` and ``bf16+compile``
(``torch.compile`` of the forward, backend ``--backend``: inductor on CUDA). Per cell: the median seconds
per iteration of ``--steps`` timed steps after ``--warmup`` (compilation happens in the warm-up; wall
time on CUDA, the process's CPU time on one thread with ``--small``), and the
peak memory of a cell over its construction and warm-up, above what was in use before it was built
(CUDA: ``max_memory_allocated``; CPU: the peak resident set, Linux, with large blocks mmapped so that
freed memory leaves the resident set). The cells of one precision are timed in interleaved rounds.
Ratios against the bare loop and against fp32 of the same row are in the JSON and the Markdown table.

    python benchmarks/gpu.py                  # on a GPU machine (about 30 cells)
    python benchmarks/gpu.py --small          # CPU smoke run at a tiny size (how the tests run it)

Writes ``benchmarks/results/gpu[_small].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mtlkit import balancing, strategies
from mtlkit.dtme import DTMEConfig, expand
from mtlkit.engine._compile import Compiler
from mtlkit.engine._memory import _cpu_peak, _cpu_reset
from mtlkit.engine._precision import Precision
from mtlkit.models import build_model
from mtlkit.tasks import make_task

TASKS = ("semseg", "depth", "normals", "edge")
ROWS = ("bare", "equal", "avgnorm", "uw", "pcgrad", "cagrad", "nash_mtl", "selective", "dtme_before", "dtme_after")
PRECISIONS = ("fp32", "bf16", "bf16+compile")


def make_tasks() -> dict[str, Any]:
    return {t: make_task(t, num_classes=40) if t == "semseg" else make_task(t) for t in TASKS}


def random_batch(tasks: dict[str, Any], b: int, hw: tuple[int, int], device: torch.device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = {"image": torch.randn(b, 3, h, w, generator=g),
           "semseg": torch.randint(0, tasks["semseg"].channels, (b, h, w), generator=g),
           "depth": torch.rand(b, 1, h, w, generator=g) * 10 + 0.1,
           "normals": F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1),
           "edge": (torch.rand(b, 1, h, w, generator=g) > 0.9).float()}
    return {k: v.to(device) for k, v in out.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Cell:
    """One (row, precision): its own model, optimizer and step function."""

    def __init__(self, row: str, precision: str, args: argparse.Namespace, device: torch.device) -> None:
        self.row, self.device = row, device
        self.tasks = make_tasks()
        torch.manual_seed(0)
        self.model = build_model(args.model, self.tasks, img_size=args.size, **args.model_kw).to(device)
        self.batch = random_batch(self.tasks, args.batch, args.size, device, seed=0)
        if row == "dtme_after":
            calib = [random_batch(self.tasks, args.batch, args.size, device, seed=100 + i) for i in range(2)]
            expand(self.model, self.tasks, calib, DTMEConfig(calib_batches=2, measure_inference=False))
        mode = precision.split("+")[0]
        self.precision = Precision.for_model(mode, self.model)
        if precision.endswith("+compile"):
            Compiler(args.backend).apply(self.model)
        method = {"bare": None, "selective": "equal", "dtme_before": "equal", "dtme_after": "equal"}.get(row, row)
        self.balancer = None if method is None else balancing.get(method, tasks=list(self.tasks))
        extra = [] if self.balancer is None else self.balancer.parameters()
        self.opt = torch.optim.Adam(list(self.model.parameters()) + extra, lr=1e-6)
        if row == "selective":
            self.strategy = strategies.get("selective", warmup=0, seed=0)
            self.strategy.configure_balancer("equal", {})
        else:
            self.strategy = strategies.get("joint")
        self.it = 0
        self.steps_per_batch: list[int] = []

    def step(self) -> None:
        if self.balancer is None:
            self._bare()
        else:
            ctx = strategies.StepContext(
                model=self.model, tasks=self.tasks, balancer=self.balancer, optimizer=self.opt, iteration=self.it,
                needs_features=bool(getattr(self.balancer, "needs_features", False)),
                precision=self.precision if self.precision.enabled else None,
                add_parameters=lambda params, name: self.opt.add_param_group({"params": params, "name": name}))
            info = self.strategy.step(self.batch, ctx)
            self.steps_per_batch.append(int(info.get("steps", 1)))
        self.it += 1

    def _bare(self) -> None:
        """The step without mtlkit: autocast forward, fp32 losses, one backward, optimizer step."""
        self.opt.zero_grad(set_to_none=True)
        with self.precision.autocast():
            out = self.model(self.batch["image"])
        loss = sum(self.tasks[t].loss(out[t].float(), self.batch[t]) for t in TASKS)
        loss.backward()
        self.opt.step()


def build_cell(row: str, precision: str, args: argparse.Namespace, device: torch.device) -> tuple[Cell | None, dict]:
    """Build a cell and run its warm-up steps; its peak memory is measured over both (what it adds above the
    memory in use before it was built, so the cells alive beside it do not count)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss()
        _cpu_reset()
    info: dict[str, Any] = {"row": row, "precision": precision, "s_per_iter": None, "peak_mib": None}
    try:
        cell = Cell(row, precision, args, device)
        for _ in range(args.warmup):
            cell.step()
        sync(device)
    except torch.OutOfMemoryError:
        gc.collect()
        return None, {**info, "error": "out of memory"}
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _cpu_peak()) - base
    info["peak_mib"] = peak / 2**20
    return cell, info


def run_precision(rows: list[str], precision: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """All rows at one precision: built one after the other (memory), then timed in interleaved rounds (each
    cell one step per round) so that drift of the machine hits every row alike."""
    cells: dict[str, Cell] = {}
    infos: dict[str, dict] = {}
    for row in rows:
        cell, infos[row] = build_cell(row, precision, args, device)
        if cell is not None:
            cells[row] = cell
    times: dict[str, list[float]] = {row: [] for row in cells}
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(args.steps):
        for row, cell in cells.items():
            sync(device)
            t0 = clock()
            cell.step()
            sync(device)
            times[row].append(clock() - t0)
    for row, cell in cells.items():
        infos[row].update(s_per_iter=statistics.median(times[row]), times=times[row])
        if cell.steps_per_batch:
            infos[row]["optimizer_steps_per_batch"] = statistics.median(cell.steps_per_batch)
    cells.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [infos[row] for row in rows]


def table(results: list[dict[str, Any]], precisions: list[str]) -> str:
    head = "| row | " + " | ".join(f"{p} s/iter | {p} peak MiB" for p in precisions) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(precisions))]
    by = {(r["row"], r["precision"]): r for r in results}
    for row in dict.fromkeys(r["row"] for r in results):
        cells = []
        for p in precisions:
            r = by.get((row, p))
            if r is None or r["s_per_iter"] is None:
                cells += ["-", "-"]
                continue
            rel = f" ({r['vs_bare']:.2f}x bare)" if r.get("vs_bare") is not None and row != "bare" else ""
            cells += [f"{r['s_per_iter']:.4f}{rel}", f"{r['peak_mib']:.0f}"]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ and __name__ == "__main__":
        # large CPU blocks from mmap, returned on free: the resident set then follows live tensors
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CPU-size smoke run (micro ViT, 32x48, batch 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--backend", default=None, help="torch.compile backend (default: inductor; aot_eager with --small)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per cell (default 10; 7 with --small)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per cell (default 3; 2 with --small)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu[_small].json); .md beside")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.small:
        args.model, args.size, args.batch, args.model_kw = "micro", (32, 48), 2, {}
        args.backend = args.backend or "aot_eager"
        args.steps, args.warmup = args.steps or 7, args.warmup or 2
        torch.set_num_threads(1)  # CPU time of one thread: other processes on the machine do not add to it
    else:
        args.model, args.size, args.batch, args.model_kw = "base", (448, 576), 8, {}
        args.backend = args.backend or "inductor"
        args.steps, args.warmup = args.steps or 10, args.warmup or 3
    rows = [r for r in args.rows.split(",") if r]
    precisions = [q for q in args.precisions.split(",") if q]
    bad = [r for r in rows if r not in ROWS] + [q for q in precisions if q not in PRECISIONS]
    if bad:
        p.error(f"unknown row / precision {bad}; rows: {', '.join(ROWS)}; precisions: {', '.join(PRECISIONS)}")
    build_cell("bare", "fp32", args, device)  # one-time initialisations (kernels, lazy imports) outside the cells
    results = []
    for q in precisions:
        for r in run_precision(rows, q, args, device):
            results.append(r)
            s = "OOM" if r["s_per_iter"] is None else f"{r['s_per_iter']:.4f} s/iter, {r['peak_mib']:.0f} MiB"
            print(f"{q:>13} {r['row']:>12}: {s}", flush=True)
    by = {(r["row"], r["precision"]): r for r in results}
    for r in results:
        bare, fp32 = by.get(("bare", r["precision"])), by.get((r["row"], "fp32"))
        ok = r["s_per_iter"] is not None
        r["vs_bare"] = r["s_per_iter"] / bare["s_per_iter"] if ok and bare and bare["s_per_iter"] else None
        r["vs_fp32"] = r["s_per_iter"] / fp32["s_per_iter"] if ok and fp32 and fp32["s_per_iter"] else None
        eq = by.get(("equal", r["precision"]))
        r["peak_vs_equal"] = (r["peak_mib"] / eq["peak_mib"] if ok and eq and eq["peak_mib"] else None)
    name = "gpu_small" if args.small else "gpu"
    out = Path(args.out or f"benchmarks/results/{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "setting": {"model": args.model, "image_size": list(args.size), "batch_size": args.batch, "tasks": list(TASKS),
                    "device": str(device), "compile_backend": args.backend, "steps": args.steps,
                    "warmup": args.warmup, "optimizer": "adam", "small": args.small},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_1min": os.getloadavg()[0]},
        "peak_memory": ("CUDA max_memory_allocated" if device.type == "cuda" else "CPU peak RSS (Linux clear_refs)")
        + " over the cell's construction and warm-up, above the memory in use before it",
        "results": results,
    }
    out.write_text(json.dumps(result, indent=2))
    md = table(results, precisions)
    out.with_suffix(".md").write_text(
        f"# {args.model} {args.size[0]}x{args.size[1]}, batch {args.batch}, 4 NYUD tasks, {device}"
        f" ({result['machine']['gpu'] or platform.processor() or 'cpu'})\n\n"
        f"Median s/iter of {args.steps} steps after {args.warmup} warm-up; compile backend {args.backend}. "
        f"Written by `python benchmarks/gpu.py{' --small' if args.small else ''}`.\n\n{md}\n")
    print(md)
    return result


if __name__ == "__main__":
    main()
