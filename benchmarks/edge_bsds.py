"""Cost of the BSDS edge protocol per image, ours (scipy) against BSDS's C++ ``correspondPixels`` (pyEdgeEval).

Ground truth: label boundaries of the real sample frames in ``../shared/data`` (NYUD 480x640 at maxDist
0.011, a PASCAL VOC image at 0.0075), thinned. Predictions: the ground truth blurred and shifted plus noise
("trained"), and a near-uniform map (an untrained model, the slowest case: the thresholded maps cover most
of the image). For each, seconds per image with seism's 99 thresholds (ours), and on 5 thresholds both
backends in the same run (ratio and the matched counts of each).

    python benchmarks/edge_bsds.py [--out benchmarks/results/edge_bsds.json] [--skip-cpp]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mtlkit.metrics import bsds_counts
from mtlkit.metrics._edge_bsds import SEISM_THRESHOLDS
from mtlkit.metrics._thin import thin

FEW = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


def shared_data() -> Path:
    env = os.environ.get("MTLKIT_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [p / "shared" / "data" for p in Path(__file__).resolve().parents]:
        if cand.is_dir():
            return cand
    raise SystemExit("needs the sample data (../shared/data or $MTLKIT_SHARED_DATA)")


def boundaries(path: Path) -> np.ndarray:
    seg = np.array(Image.open(path)).astype(np.int64)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/edge_bsds.json")
    ap.add_argument("--skip-cpp", action="store_true", help="do not time pyEdgeEval's C++ matching")
    args = ap.parse_args()
    data = shared_data()
    cases = {
        "nyud 480x640 maxDist 0.011": (boundaries(data / "nyud" / "000464_segm40.png"), 0.011),
        "pascal 319x500 maxDist 0.0075": (boundaries(data / "pascal" / "VOC_2008_002536.png"), 0.0075),
    }
    cpp = not args.skip_cpp and importlib.util.find_spec("pyEdgeEval") is not None
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
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg_1min": os.getloadavg()[0]}, "thresholds_few": FEW.tolist(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'case':32s} {'prediction':10s} {'ours 99 thr':>12s} {'ours 5 thr':>11s} {'C++ 5 thr':>10s} {'ratio':>6s}  "
          "matched (ours / C++)")
    for r in rows:
        cpp_s = f"{r['cpp_5_s']:9.2f}s" if "cpp_5_s" in r else f"{'-':>10s}"
        ratio = f"{r['speedup_5']:5.1f}x" if "speedup_5" in r else f"{'-':>6s}"
        print(f"{r['case']:32s} {r['prediction']:10s} {r['ours_99_s']:11.2f}s {r['ours_5_s']:10.2f}s {cpp_s} {ratio}  "
              f"{r['ours_matched_5']} / {r.get('cpp_matched_5', '-')}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
