"""Cost of the BSDS edge protocol: per image, ours (scipy) against BSDS's C++ ``correspondPixels`` (pyEdgeEval),
and over a whole NYUD-v2 test split (654 images at 480x640), serially and with worker processes.

Ground truth: label boundaries of the real sample frames in ``../shared/data`` (NYUD 480x640 at maxDist
0.011, a PASCAL VOC image at 0.0075), thinned. Predictions: the ground truth blurred and shifted plus noise
("trained"), and a near-uniform map (an untrained model, the slowest case: the thresholded maps cover most
of the image). For each, seconds per image with seism's 99 thresholds (ours), and on 5 thresholds both
backends in the same run (ratio and the matched counts of each).

Whole split: NYUD-v2's 654 test images at 480x640, maxDist 0.011, seism's 99 thresholds, timed with
``bsds_split_counts(workers=0)`` and ``workers=N`` (default 2) in the same run (the counts must be equal).
The real NYUD test predictions are not available here, so the maps are synthetic: ground truth = the thinned
label boundaries of the real sample frames (each also mirrored), cycled over the 654 images (without the
sample data: boundaries of random Voronoi label maps); prediction = the "trained" map above with its own
seed per image.

    python benchmarks/edge_bsds.py [--out benchmarks/results/edge_bsds.json] [--skip-cpp]
        [--split-images 654] [--split-workers 2] [--skip-split] [--skip-images]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mtlkit.metrics import bsds_counts
from mtlkit.metrics._edge_bsds import SEISM_THRESHOLDS, bsds_split_counts, ods_from_counts
from mtlkit.metrics._thin import thin

FEW = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


def find_shared_data() -> Path | None:
    env = os.environ.get("MTLKIT_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [p / "shared" / "data" for p in Path(__file__).resolve().parents]:
        if cand.is_dir():
            return cand
    return None


def shared_data() -> Path:
    data = find_shared_data()
    if data is None:
        raise SystemExit("needs the sample data (../shared/data or $MTLKIT_SHARED_DATA)")
    return data


def boundaries(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Thinned label boundaries of a label PNG (resized to ``shape`` (H, W) with nearest neighbour if given)."""
    im = Image.open(path)
    if shape is not None and im.size != (shape[1], shape[0]):
        im = im.resize((shape[1], shape[0]), Image.NEAREST)
    seg = np.array(im).astype(np.int64)
    b = np.zeros(seg.shape, bool)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1] |= seg[:-1] != seg[1:]
    return thin(b)


def predictions(gt: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = gt.astype(float)
    p = ndimage.gaussian_filter(g + 0.3 * ndimage.shift(g, (3, -2)), 2.0)
    trained = np.clip(p / p.max() + 0.1 * rng.random(p.shape) - 0.05, 0, 1)
    untrained = np.clip(0.5 + 0.05 * ndimage.gaussian_filter(rng.standard_normal(gt.shape), 3), 0, 1)
    return {"trained": trained, "untrained": untrained}


def timed(fn, *args, **kw) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def split_ground_truths(shape: tuple[int, int] = (480, 640)) -> tuple[list[np.ndarray], str]:
    """Distinct ground-truth edge maps for the split benchmark, and where they come from."""
    data = find_shared_data()
    files = sorted((data / "nyud").glob("*_segm40.png")) if data is not None else []
    gts = []
    for f in files:
        b = boundaries(f, shape)
        gts += [b, np.ascontiguousarray(b[:, ::-1])]
    if gts:
        return gts, (f"label boundaries of the {len(files)} real NYUD sample frames (625x468 ones resized, "
                     "nearest) and their mirror images, cycled")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(8):
        seeds = rng.random((40, 2)) * np.array(shape)
        d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        seg = d.argmin(-1)
        b = np.zeros(shape, bool)
        b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
        b[:-1] |= seg[:-1] != seg[1:]
        gts.append(thin(b))
    return gts, "boundaries of 8 random Voronoi label maps (no sample data found)"


def split_maps(gts: list[np.ndarray], n: int) -> tuple:
    """Predictions and ground truths of images 0..n-1 as generators (made on the fly: memory stays small)."""
    probs = (predictions(gts[i % len(gts)], seed=1000 + i)["trained"] for i in range(n))
    return probs, (gts[i % len(gts)] for i in range(n))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the pool's workers once joined)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_split(n: int, workers: int) -> dict:
    """Seconds for the whole split serially and with ``workers`` processes (same run), and equality."""
    gts, source = split_ground_truths()
    row: dict = {"images": n, "size": "480x640", "max_dist": 0.011, "thresholds": len(SEISM_THRESHOLDS),
                 "ground_truth": source, "prediction": "synthetic 'trained' maps, one seed per image"}
    counts = {}
    for w in (0, workers):
        probs, truths = split_maps(gts, n)
        cpu = cpu_seconds()
        t = time.perf_counter()  # includes making the maps (about 0.05 s per image, in this process)
        counts[w] = bsds_split_counts(probs, truths, SEISM_THRESHOLDS, 0.011, workers=w)
        row[f"workers_{w}_s"] = time.perf_counter() - t
        row[f"workers_{w}_cpu_s"] = cpu_seconds() - cpu  # this process + the (joined) workers
        row[f"load_avg_1min_after_workers_{w}"] = os.getloadavg()[0]
        # the split at NYUD's size from the per-image cost measured here (equal to the run itself when n = 654)
        row[f"workers_{w}_s_for_654"] = row[f"workers_{w}_s"] * 654 / n
    row["workers"] = workers
    row["speedup"] = row["workers_0_s"] / row[f"workers_{workers}_s"]
    # on an otherwise idle machine the serial split costs about its CPU time
    row["serial_cpu_s_per_image"] = row["workers_0_cpu_s"] / n
    row["equal"] = bool(np.array_equal(counts[0], counts[workers]))
    row["ods"] = ods_from_counts(counts[0], SEISM_THRESHOLDS)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/edge_bsds.json")
    ap.add_argument("--skip-cpp", action="store_true", help="do not time pyEdgeEval's C++ matching")
    ap.add_argument("--skip-images", action="store_true", help="skip the per-image timings")
    ap.add_argument("--skip-split", action="store_true", help="skip the whole-split timing")
    ap.add_argument("--split-images", type=int, default=654, help="images in the split (NYUD-v2 test: 654)")
    ap.add_argument("--split-workers", type=int, default=2, help="processes of the parallel run")
    args = ap.parse_args()
    rows = [] if args.skip_images else per_image(args.skip_cpp)
    split = None if args.skip_split else time_split(args.split_images, args.split_workers)
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                          "load_avg_1min": os.getloadavg()[0]},
              "thresholds_few": FEW.tolist(), "rows": rows, "split": split}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if rows:
        print(f"{'case':32s} {'prediction':10s} {'ours 99 thr':>12s} {'ours 5 thr':>11s} {'C++ 5 thr':>10s} "
              f"{'ratio':>6s}  matched (ours / C++)")
    for r in rows:
        cpp_s = f"{r['cpp_5_s']:9.2f}s" if "cpp_5_s" in r else f"{'-':>10s}"
        ratio = f"{r['speedup_5']:5.1f}x" if "speedup_5" in r else f"{'-':>6s}"
        print(f"{r['case']:32s} {r['prediction']:10s} {r['ours_99_s']:11.2f}s {r['ours_5_s']:10.2f}s {cpp_s} {ratio}  "
              f"{r['ours_matched_5']} / {r.get('cpp_matched_5', '-')}")
    if split is not None:
        w = split["workers"]
        print(f"\nwhole split: {split['images']} images {split['size']}, maxDist 0.011, 99 thresholds "
              f"(ground truth: {split['ground_truth']}; {split['prediction']})")
        print(f"{'':24s} {'serial (workers=0)':>19s} {f'workers={w}':>12s}")
        print(f"{'wall seconds':24s} {split['workers_0_s']:18.1f}s {split[f'workers_{w}_s']:11.1f}s"
              f"   speedup {split['speedup']:.2f}x, counts equal: {split['equal']}, odsF {split['ods']['odsF']:.2f}")
        print(f"{'CPU seconds':24s} {split['workers_0_cpu_s']:18.1f}s {split[f'workers_{w}_cpu_s']:11.1f}s")
        print(f"{'wall seconds for 654':24s} {split['workers_0_s_for_654']:18.1f}s "
              f"{split[f'workers_{w}_s_for_654']:11.1f}s   (x 654 / {split['images']} images)")
        print(f"machine: {result['machine']['usable_cpus']} usable CPUs, 1-min load average "
              f"{result['machine']['load_avg_1min']:.1f} at the start")
    print(f"written {args.out}")


def per_image(skip_cpp: bool) -> list[dict]:
    data = shared_data()
    cases = {
        "nyud 480x640 maxDist 0.011": (boundaries(data / "nyud" / "000464_segm40.png"), 0.011),
        "pascal 319x500 maxDist 0.0075": (boundaries(data / "pascal" / "VOC_2008_002536.png"), 0.0075),
    }
    cpp = not skip_cpp and importlib.util.find_spec("pyEdgeEval") is not None
    rows = []
    for name, (gt, max_dist) in cases.items():
        for kind, prob in predictions(gt).items():
            row = {"case": name, "prediction": kind}
            row["ours_99_s"], _ = timed(bsds_counts, prob, gt, SEISM_THRESHOLDS, max_dist)
            row["ours_5_s"], ours = timed(bsds_counts, prob, gt, FEW, max_dist)
            row["ours_matched_5"] = ours[:, 0].astype(int).tolist()
            if cpp:
                row["cpp_5_s"], ref = timed(bsds_counts, prob, gt, FEW, max_dist, backend="pyedgeeval")
                row["cpp_matched_5"] = ref[:, 0].astype(int).tolist()
                row["speedup_5"] = row["cpp_5_s"] / row["ours_5_s"]
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
