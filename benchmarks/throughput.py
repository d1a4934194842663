"""Throughput of the model presets and of synthetic-data generation, written as JSON and printed as a table.

Per preset: seconds per training iteration (forward + summed loss of 4 dense tasks + backward + Adam step) on
a fixed random batch (default 8 images of 64x64). Every preset uses patch 8 at 64x64 (an 8x8 token grid):
``micro``'s own patch size; for tiny/small/base/large (timm's ViT-Ti/S/B/L, patch 16) it is an override so
that all presets see the same 64 tokens. Every preset is timm's ``VisionTransformer`` (see ``mtlkit models``).
``large`` runs only with ``--all``.

If the ``synthetic-nyud`` dataset is registered: images/s of rendering a fresh train split (into a temporary
cache folder, so nothing is reused) in one process and with the generator's default worker processes, and
samples/s of reading items from the rendered split.

    python benchmarks/throughput.py [--threads 2] [--all] [--omp-passive] [--out benchmarks/results/throughput.json]

Wall-clock numbers are only meaningful on an otherwise idle machine: the JSON records the 1-minute load
average and, per preset, the process CPU time as well.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "--omp-passive" in sys.argv:
    # must be set before the OpenMP runtime starts, i.e. before torch is imported
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402

from mtlkit.data import DATASETS, build_dataset  # noqa: E402
from mtlkit.models import build_model  # noqa: E402
from mtlkit.tasks import make_task  # noqa: E402

DEFAULT_PRESETS = ("micro", "tiny", "small", "base")
TASKS = ("semseg", "depth", "normals", "edge")


def make_batch(tasks: dict[str, Any], batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed random batch in the dataset contract's encodings (some ignored / invalid pixels)."""
    g = torch.Generator().manual_seed(0)
    out = {"image": torch.randn(batch, 3, size, size, generator=g)}
    semseg = torch.randint(0, tasks["semseg"].channels, (batch, size, size), generator=g)
    semseg[:, :2] = 255
    out["semseg"] = semseg
    depth = torch.rand(batch, 1, size, size, generator=g) * 10
    depth[..., :2, :] = 0
    out["depth"] = depth
    out["normals"] = torch.nn.functional.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1)
    out["edge"] = (torch.rand(batch, 1, size, size, generator=g) > 0.9).float()
    return {k: v.to(device) for k, v in out.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_preset(
    preset: str, size: int, patch: int, batch: int, iters: int, warmup: int, budget_s: float, device: torch.device
) -> dict[str, Any]:
    """Seconds per training iteration of one preset (at least one timed iteration, then up to ``budget_s``)."""
    torch.manual_seed(0)
    tasks = {t: make_task(t) for t in TASKS}
    model = build_model(preset, tasks, img_size=size, patch_size=patch).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = make_batch(tasks, batch, size, device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = model(data["image"])
        loss = sum(tasks[t].loss(out[t], data[t]) for t in TASKS)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    sync(device)
    times: list[float] = []
    cpu_times: list[float] = []  # process CPU time: less sensitive than wall time to other load on the machine
    start = time.perf_counter()
    while len(times) < iters and (not times or time.perf_counter() - start < budget_s):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    bb = model.backbone  # a ViTBackbone: timm's VisionTransformer in bb.vit
    return {
        "preset": preset,
        "embed_dim": bb.embed_dim,
        "depth": len(bb.blocks),
        "num_heads": bb.blocks[0].attn.num_heads,
        "patch_size": bb.vit.patch_embed.patch_size[0],
        "tokens": bb.grid[0] * bb.grid[1],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "iters": len(times),
        "s_per_iter": statistics.median(times),
        "s_per_iter_min": min(times),
        "images_per_s": batch / statistics.median(times),
        "cpu_s_per_iter": statistics.median(cpu_times),
    }


def time_generation(size: int, count: int, workers: int | None) -> dict[str, Any] | None:
    """Images/s of rendering ``count`` fresh synthetic-nyud images, and samples/s of reading them back.

    ``workers``: rendering processes (``MTLKIT_WORKERS``); None = the generator's own choice (serial below
    its parallel threshold, else up to one process per core).
    """
    if "synthetic-nyud" not in DATASETS:
        return None
    wanted = {"image_size": size, "num_train": count, "num_val": 1, "num_test": 1}
    accepted = inspect.signature(DATASETS.get("synthetic-nyud")).parameters
    saved = os.environ.get("MTLKIT_WORKERS")
    if workers is not None:
        os.environ["MTLKIT_WORKERS"] = str(workers)
    try:
        with tempfile.TemporaryDirectory(prefix="mtlkit-bench-") as cache:
            options = {k: v for k, v in {**wanted, "cache_dir": cache}.items() if k in accepted}
            t0 = time.perf_counter()
            ds = build_dataset("synthetic-nyud", "train", **options)
            render_s = time.perf_counter() - t0
            n = len(ds)
            t0 = time.perf_counter()
            for i in range(n):
                ds[i]
            read_s = time.perf_counter() - t0
    finally:
        if saved is None:
            os.environ.pop("MTLKIT_WORKERS", None)
        else:
            os.environ["MTLKIT_WORKERS"] = saved
    return {
        "dataset": "synthetic-nyud",
        "image_size": size,
        "images": n,
        "workers": "auto" if workers is None else workers,
        "options": {k: v for k, v in options.items() if k != "cache_dir"},
        "render_s": render_s,
        "images_per_s": n / render_s,
        "read_samples_per_s": n / read_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated model presets")
    ap.add_argument("--all", action="store_true", help="also time 'large' (slow on CPU)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=8, help="patch size for every preset (default 8)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per preset (at most)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of timed iterations per preset (at most)")
    ap.add_argument("--gen-images", type=int, default=128, help="images to render in one process (0 = skip)")
    ap.add_argument(
        "--gen-images-parallel", type=int, default=512, help="images to render with the default workers (0 = skip)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning at barriers; on a CPU shared with "
        "other busy processes, spinning threads can make small models many times slower",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.json"))
    args = ap.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if args.all and "large" not in presets:
        presets.append("large")

    rows = []
    for preset in presets:
        row = time_preset(
            preset, args.image_size, args.patch_size, args.batch_size, args.iters, args.warmup, args.budget, device
        )
        rows.append(row)
        print(f"  {preset}: {row['s_per_iter']:.3f} s/iter", file=sys.stderr, flush=True)
    generation = [
        g
        for n, workers in ((args.gen_images, 1), (args.gen_images_parallel, None))
        if n > 0 and (g := time_generation(args.image_size, n, workers)) is not None
    ]

    result = {
        "benchmark": "throughput",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": str(device),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "config": {
            "tasks": list(TASKS),
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "batch_size": args.batch_size,
            "optimizer": "adam",
            "warmup": args.warmup,
        },
        "models": rows,
        "generation": generation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"training iteration, {len(TASKS)} dense tasks, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"patch {args.patch_size}, {torch.get_num_threads()} threads, {device}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load {result['machine']['load_avg_1m']}"
    )
    print(
        f"{'preset':<8} {'dim':>5} {'depth':>5} {'heads':>5} {'params M':>9} {'iters':>5} {'s/iter':>8} "
        f"{'img/s':>7} {'cpu s/iter':>10}"
    )
    for r in rows:
        print(
            f"{r['preset']:<8} {r['embed_dim']:>5} {r['depth']:>5} {r['num_heads']:>5} {r['params_m']:>9.2f} "
            f"{r['iters']:>5} {r['s_per_iter']:>8.3f} {r['images_per_s']:>7.1f} {r['cpu_s_per_iter']:>10.3f}"
        )
    if not generation:
        print("synthetic generation: skipped" + ("" if "synthetic-nyud" in DATASETS else " (not registered)"))
    for g in generation:
        print(
            f"synthetic-nyud {g['image_size']}x{g['image_size']}, workers {g['workers']}: rendered {g['images']} "
            f"images in {g['render_s']:.2f} s = {g['images_per_s']:.1f} images/s; "
            f"read back {g['read_samples_per_s']:.0f} samples/s"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
