"""Rendering whole splits into compact arrays, in parallel when it pays, and caching them on disk.

Per-image seeds come from ``(seed, split, index)``, so the splits are disjoint and image ``i`` of a split is
the same whatever the split sizes. A split is stored as one ``.npz`` under ``<cache>/synthetic/`` whose name
holds a hash of everything that determines its content (:func:`generation_config`); it is written to a temp
file and renamed, so a reader never sees a half-written file.

Stored arrays (N images of H x W): ``image`` uint8 (N, H, W, 3); ``semseg``, ``parts``, ``edge`` uint8
(N, H, W) with 255 = invalid; ``depth`` uint16 millimetres (0 = invalid); ``normals`` int8 (N, H, W, 3) =
round(127 n) (all-zero = invalid; renormalised when read). Saliency is derived from ``semseg``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mtlkit.data.synthetic import _render, _scene
from mtlkit.data.synthetic._render import EDGE_DEPTH_JUMP, PART_Z_THRESHOLD, camera_rays, render_scene
from mtlkit.data.synthetic._scene import CLASS_NAMES, SCENE_CONFIG, Camera, sample_scene

#: bump when the renderer or the sampler changes what an image looks like (invalidates every cache); the
#: cache key also hashes the sampler and renderer source, so a forgotten bump cannot serve stale data
GENERATOR_VERSION = 1
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
ARRAY_KEYS = ("image", "semseg", "parts", "edge", "depth", "normals")
#: splits at least this big are rendered by a pool of forked worker processes (when fork is available)
PARALLEL_MIN_IMAGES = 256


def default_cache_dir() -> Path:
    """``$MTLKIT_CACHE`` or ``~/.cache/mtlkit``."""
    return Path(os.environ.get("MTLKIT_CACHE") or Path.home() / ".cache" / "mtlkit").expanduser()


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of ``split`` (independent of the split sizes)."""
    return np.random.default_rng([seed, SPLIT_CODE[split], index])


def _source_digest() -> str:
    """Hash of the sampler and renderer source ("" when the source files cannot be read)."""
    h = hashlib.sha256()
    try:
        for module in (_scene, _render):
            h.update(Path(module.__file__ or "").read_bytes())
    except OSError:
        return ""
    return h.hexdigest()[:16]


def generation_config(split: str, count: int, size: tuple[int, int], seed: int) -> dict[str, Any]:
    """Everything that determines the stored arrays of a split (hashed into the cache key); no preset."""
    return {
        "generator_version": GENERATOR_VERSION,
        "source": _source_digest(),
        "scene": {k: list(v) if isinstance(v, tuple) else v for k, v in SCENE_CONFIG.items()},
        "classes": list(CLASS_NAMES),
        "edge_depth_jump": EDGE_DEPTH_JUMP,
        "part_z_threshold": PART_Z_THRESHOLD,
        "split": split,
        "count": int(count),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
    }


def cache_path(cache_dir: str | os.PathLike[str] | None, config: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    h, w = config["size"]
    name = f"{config['split']}-{h}x{w}-n{config['count']}-seed{config['seed']}-{digest}.npz"
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "synthetic" / name


def _quantise_normals(normals: np.ndarray, camera: Camera) -> np.ndarray:
    """round(127 n) as int8, keeping every normal facing the camera after rounding.

    Rounding moves n . ray by at most 0.007 (unit ray); at grazing pixels where that flips the sign, the
    normal is first tilted towards the camera by 0.02 (about 1 degree).
    """
    h, w = normals.shape[:2]
    _, dirs, basis = camera_rays(camera, h, w)
    rays = (dirs @ basis).reshape(h, w, 3)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    q = np.rint(normals * 127.0)
    valid = np.any(normals != 0, axis=-1)
    bad = valid & (np.sum(q * rays, axis=-1) >= 0)
    if bad.any():
        tilted = normals[bad] - 0.02 * rays[bad]
        q[bad] = np.rint(tilted / np.linalg.norm(tilted, axis=-1, keepdims=True) * 127.0)
    return q.astype(np.int8)


def _compact(out: dict[str, np.ndarray], camera: Camera) -> dict[str, np.ndarray]:
    depth = np.where(out["depth"] > 0, np.clip(np.rint(out["depth"] * 1000.0), 1, 65535), 0)
    return {
        "image": out["image"],
        "semseg": out["semseg"],
        "parts": out["parts"],
        "edge": out["edge"],
        "depth": depth.astype(np.uint16),
        "normals": _quantise_normals(out["normals"], camera),
    }


def render_range(
    seed: int, split: str, start: int, stop: int, size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Render images ``start..stop-1`` of a split into stacked compact arrays."""
    outs = []
    for i in range(start, stop):
        scene = sample_scene(image_rng(seed, split, i))
        outs.append(_compact(render_scene(scene, size), scene.camera))
    return {k: np.stack([o[k] for o in outs]) for k in ARRAY_KEYS}


def _render_chunk(args: tuple[int, str, int, int, tuple[int, int]]) -> dict[str, np.ndarray]:
    return render_range(*args)


def _workers(count: int) -> int:
    env = os.environ.get("MTLKIT_WORKERS")
    if env is not None:
        return max(1, int(env))
    if count < PARALLEL_MIN_IMAGES or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if multiprocessing.current_process().daemon:  # e.g. inside a DataLoader worker: no children allowed
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def generate_split(split: str, count: int, size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Render a split (identical arrays whatever the number of worker processes)."""
    workers = _workers(count)
    if workers <= 1:
        return render_range(seed, split, 0, count, size)
    bounds = np.linspace(0, count, workers * 4 + 1).astype(int)
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    chunks = [(seed, split, int(a), int(b), size) for a, b in pairs if b > a]
    try:
        ctx = multiprocessing.get_context("fork")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork in a threaded process (py>=3.12)
            with ctx.Pool(workers) as pool:
                parts = pool.map(_render_chunk, chunks)
    except (OSError, RuntimeError, AssertionError):  # no processes available here: render serially
        return render_range(seed, split, 0, count, size)
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAY_KEYS}


#: temp files of interrupted writes (e.g. kill -9) older than this are removed by the next write
STALE_TEMP_SECONDS = 3600


def _write_npz(path: Path, arrays: dict[str, np.ndarray], meta: str) -> None:
    """Atomically write a (fast, level-1) compressed ``.npz``: temp file in the same folder, flushed to disk,
    then renamed over ``path`` (a reader sees the old file or the whole new one, never a partial one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for key, arr in {**arrays, "meta": np.array(meta)}.items():
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(arr, order="C"), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every file system lets a folder be opened)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _remove_stale_temps(path: Path) -> None:
    now = time.time()
    for tmp in path.parent.glob(f".{path.stem}-*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def _expected_shapes(count: int, size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    h, w = size
    return {"image": (count, h, w, 3), "semseg": (count, h, w), "parts": (count, h, w), "edge": (count, h, w),
            "depth": (count, h, w), "normals": (count, h, w, 3)}


def _read_npz(path: Path, meta: str, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is missing or for another configuration. A corrupt file
    (truncated, bad zip or zlib data, bad CRC, missing or misshapen arrays) is removed with a one-line warning,
    so the caller regenerates it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["meta"]) != meta:
                return None
            arrays = {k: z[k] for k in ARRAY_KEYS}
        for k, shape in (shapes or {}).items():
            if arrays[k].shape != shape:
                raise ValueError(f"{k} has shape {arrays[k].shape}, expected {shape}")
        return arrays
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        try:
            path.unlink(missing_ok=True)
            action = "removed it; regenerating"
        except OSError:
            action = "regenerating (could not remove it)"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        warnings.warn(f"corrupt synthetic-data cache file {path} ({reason}); {action}", stacklevel=3)
        return None


def load_split(
    split: str, count: int, size: tuple[int, int], seed: int, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray]:
    """The compact arrays of a split: from the cache when present, else rendered and cached."""
    config = generation_config(split, count, size, seed)
    meta = json.dumps(config, sort_keys=True)
    path = cache_path(cache_dir, config)
    arrays = _read_npz(path, meta, _expected_shapes(count, size))
    if arrays is not None:
        return arrays
    arrays = generate_split(split, count, size, seed)
    try:
        _write_npz(path, arrays, meta)
    except OSError as err:
        warnings.warn(f"could not cache synthetic data at {path}: {err}", stacklevel=2)
    return arrays
