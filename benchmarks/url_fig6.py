"""The imbalance study's Fig. 6 at tiny scale: feature distance to the single-task networks per task, for
equal, pcgrad, url (equal + URL distillation) and url+pcgrad, every run probed with ``--feature-distance``.

The single-task teachers are trained first (the Δm baseline cache, one set per seed), then each method runs
with the probe; the JSON holds, per method and seed, the probe's final distance per task (mean of the last
50 probed steps), URL's own distillation distance where it distils, the primary metrics and Δm, and the
per-method means. CPU, synthetic NYUD-v2 (semseg, depth, normals: URL's official λ = 1, 1, 2)::

    PYTHONPATH=src python benchmarks/url_fig6.py                    # ~8 minutes on 2 busy cores
    PYTHONPATH=src python benchmarks/url_fig6.py --iters 600 --seeds 0,1,2

Writes benchmarks/results/url_fig6.json and url_fig6.png. Tiny scale: the numbers check that the pipeline
measures what Fig. 6 measures, not the paper's values (ResNet-50 on NYUD-v2, 200 epochs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mtlkit.distill import plot_feature_distance
from mtlkit.engine import Config, Trainer, train_teachers

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"equal": ("equal", None), "pcgrad": ("pcgrad", None), "url": ("equal", "url"),
           "url+pcgrad": ("pcgrad", "url")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tasks", default="semseg,depth,normals")
    ap.add_argument("--work", help="run folder (default: a temporary one)")
    ap.add_argument("--out", default=str(RESULTS / "url_fig6.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = args.tasks.split(",")
    work = Path(args.work or tempfile.mkdtemp(prefix="url_fig6-"))
    base = Config(dataset="synthetic-nyud", tasks=tasks, image_size=args.image_size, model="micro",
                  iters=args.iters, batch_size=args.batch_size, eval_every=0, progress=False,
                  feature_distance=True, baseline_cache=str(work / "baselines"), device="cpu")
    runs: dict[str, dict[str, dict]] = {m: {} for m in METHODS}
    t0 = time.perf_counter()
    for seed in seeds:
        train_teachers(base.replace(seed=seed, distill="url"))
    teacher_s = time.perf_counter() - t0
    for label, (method, distill) in METHODS.items():
        for seed in seeds:
            cfg = base.replace(method=method, distill=distill, seed=seed, out=str(work / f"{label}-s{seed}"))
            m = Trainer(cfg).fit()
            runs[label][str(seed)] = {
                "feature_distance": m["feature_distance"],
                "distill_distance": (m.get("distill") or {}).get("distance"),
                "primary": m["primary"],
                "delta_m": m["delta_m"],
                "seconds_per_iter": m["seconds_per_iter"],
            }
            print(f"{label:11s} seed {seed}: distance {m['feature_distance']}  Δm {m['delta_m']:+.2f}")
    mean = {
        label: {
            "feature_distance": {t: statistics.fmean(r["feature_distance"][t] for r in per.values()) for t in tasks},
            "delta_m": statistics.fmean(r["delta_m"] for r in per.values()),
        }
        for label, per in runs.items()
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "what": "imbalance study Fig. 6 at tiny scale: probe distance to single-task features per task (lower: "
                "closer), mean of the last 50 probed steps; url = equal + URL distillation (official λ)",
        "setting": {"dataset": "synthetic-nyud", "tasks": tasks, "model": "micro", "image_size": args.image_size,
                    "batch_size": args.batch_size, "iters": args.iters, "seeds": seeds, "device": "cpu"},
        "teacher_training_seconds": round(teacher_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "mean": mean,
        "runs": runs,
    }
    out.write_text(json.dumps(result, indent=2))
    plot_feature_distance([{label: {t: r["feature_distance"][t] for t in tasks}} for label, per in runs.items()
                           for r in per.values()], out.with_suffix(".png"),
                          title=f"Fig. 6, tiny scale ({args.iters} iterations, {len(seeds)} seeds)")
    print(json.dumps(mean, indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
