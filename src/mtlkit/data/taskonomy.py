"""Taskonomy (11 tasks of the seeds' Table 3) and Omnidata Replica (3 tasks of AvgNorm), both in the Omnidata layout.

**Taskonomy** follows the loader of Chen et al. (2023, Mod-Squad, ``util/dataset_taskonomy.py``), which the
selective-update paper uses ("we use the dataloader from the open-access code provided by Chen et al."):
buildings from the split CSV (tiny / medium / full / fullplus), every image resized to ``resize`` (256) and
cropped to ``image_size`` (224; random in training, centred otherwise; other sizes keep the 256 / 224
ratio), random horizontal flips in training, then per task (``v`` = the stored 8- or 16-bit value):

=====================  =========================================================================
depth_euclidean,       ``log(1 + v) / log(2^16)``; ``v = 65535`` (no surface) -> 0 = invalid, masked
depth_zbuffer          in loss and metric (Chen et al. keep it as 1.0; the mask is our addition)
edge_occlusion         ``v / (0.00625 * 2^16) * 2 - 1``, unclipped, then Gaussian blur sigma 4
edge_texture           ``clip(v, 0, 0.08 * 2^16) / (0.08 * 2^16) * 2 - 1``
keypoints2d            ``clip(v, 0, 0.005 * 2^16) / (0.005 * 2^16) * 2 - 1``
keypoints3d            ``v / 2^16 * 2 - 1``
normal                 ``v / 255 * 2 - 1`` (3 channels; x changes sign under flips)
principal_curvature    first two channels, ``(v - (123.572, 120.1)) / (31.922, 21.658)``
reshading              ``v / 255 * 2 - 1`` (one channel: the PNG's three channels are equal)
segment_unsup2d/25d    ``v / 255 * 2 - 1``
=====================  =========================================================================

Metrics: L1 on these values, RMSE for principal curvature (the seeds, after Chen et al.). Our changes to
Chen's loader: labels are resized with nearest neighbour (Chen et al. resize every map bilinearly, mixing
invalid depth into valid pixels), the image is ImageNet-normalised (the sample contract; Chen: [-1, 1]),
flips also flip the x component of the normals, random crops stay inside the image, and the splits are the
CSV's own (``merge_train_val=True`` trains on train + val buildings as Chen et al. do).

**Replica** (Omnidata's renders; AvgNorm's Replica benchmark: semseg, depth, normals) uses the ATRC transforms
of the other dense datasets (random scaling, crop / pad to ``image_size`` = 512, flips, colour jitter):
``depth`` = ``depth_zbuffer / 512`` metres, invalid where ``v = 65535`` or where Omnidata's ``mask_valid``
(enlarged by its 4x4 max-pooling) is 0; ``normals`` = ``2 * normal / 255 - 1``, zero where depth is invalid;
``semseg`` = the red channel of ``semantic`` (Omnidata's ``OmnidataSegm.get_class``), 255 or values
``>= num_classes`` (default 102, Omnidata's Replica class list) ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mtlkit.data._base import MultiTaskDataset
from mtlkit.data._check import CHECKERS, Problem, ProblemList
from mtlkit.data._dense import DENSE_OPTIONS, DenseDataset, check_options, check_split, select_tasks
from mtlkit.data._io import read_image, read_rgb, require_root
from mtlkit.data._omnidata import View, find_split_csv, index_views, list_views, read_split_csv, task_dir, view_file
from mtlkit.data._registry import DATASETS
from mtlkit.data._validate import Issue, normals_issue, raise_issue
from mtlkit.data.transforms import Sample, normalize, resize, sample_rng
from mtlkit.errors import MtlkitError

TASKONOMY_TASKS = (
    "depth_euclidean", "depth_zbuffer", "edge_occlusion", "edge_texture", "keypoints2d", "keypoints3d",
    "normal", "principal_curvature", "reshading", "segment_unsup2d", "segment_unsup25d",
)
SIXTEEN_BIT = ("depth_euclidean", "depth_zbuffer", "edge_occlusion", "edge_texture", "keypoints2d", "keypoints3d")
INVALID_DEPTH = 65535
TASKONOMY_LAYOUT = """  ROOT/
    rgb/<building>/point_<p>_view_<v>_domain_rgb.png        (or rgb/taskonomy/<building>/...)
    <task>/<building>/point_<p>_view_<v>_domain_<task>.png  one folder per task:
        depth_euclidean depth_zbuffer edge_occlusion edge_texture keypoints2d keypoints3d
        normal principal_curvature reshading segment_unsup2d segment_unsup25d
    train_val_test_<size>.csv   (or splits_taskonomy/...; header id,train,val,test; size tiny/medium/full/...)"""
REPLICA_TASKS = ("semseg", "depth", "normals")
REPLICA_DOMAINS = {"semseg": "semantic", "depth": "depth_zbuffer", "normals": "normal"}
REPLICA_CLASSES = 102
REPLICA_LAYOUT = """  ROOT/
    rgb/<scene>/point_<p>_view_<v>_domain_rgb.png            (or rgb/replica/<scene>/...)
    semantic/, depth_zbuffer/, normal/ (and optionally mask_valid/) likewise
    train_val_test_replica.csv  (header id,train,val,test)"""

_LOG16 = float(np.log(2.0**16))
#: loaders check normal lengths on every HOT_STRIDE-th pixel per axis (data check: all)
HOT_STRIDE = 4
#: channels each RGB domain needs (the rest are single-channel or read from their first channel)
MIN_CHANNELS = {"normal": 3, "principal_curvature": 2}


def domain_issue(domain: str, arr: np.ndarray, stride: int = 1) -> Issue | None:
    """What is wrong with the decoded PNG of an Omnidata ``domain`` (None when it is usable)."""
    if domain in SIXTEEN_BIT:
        if arr.dtype != np.uint16 or arr.ndim != 2:
            return Issue(f"{arr.dtype} array of shape {arr.shape}", _expected(domain),
                         "re-export the file as a 16-bit single-channel PNG")
        return None
    if arr.dtype != np.uint8:
        return Issue(f"{arr.dtype} array of shape {arr.shape}", _expected(domain))
    need = MIN_CHANNELS.get(domain, 0)
    if need > 1 and (arr.ndim != 3 or arr.shape[2] < need):
        return Issue(f"array of shape {arr.shape}", _expected(domain))
    if domain == "normal":
        return normals_issue(2.0 * arr[..., :3].astype(np.float32) / 255.0 - 1.0, stride)
    return None


def taskonomy_target(task: str, raw: np.ndarray) -> np.ndarray:
    """Stored values (H, W) or (H, W, C) -> the normalised target (C, H, W) float32 (module table)."""
    v = raw.astype(np.float64)
    if v.ndim == 2:
        v = v[..., None]
    if task in ("depth_euclidean", "depth_zbuffer"):
        out = np.where(v == INVALID_DEPTH, 0.0, np.log1p(v) / _LOG16)
    elif task == "edge_occlusion":
        out = v / (0.00625 * 2**16) * 2 - 1
        out = ndimage.gaussian_filter(out[..., 0], sigma=4)[..., None]
    elif task == "edge_texture":
        out = _rescale(v, 0.08 * 2**16)
    elif task == "keypoints2d":
        out = _rescale(v, 0.005 * 2**16)
    elif task == "keypoints3d":
        out = _rescale(v, 2.0**16)
    elif task == "normal":
        out = v[..., :3] / 255.0 * 2 - 1
    elif task == "principal_curvature":
        out = (v[..., :2] - np.array([123.572, 120.1])) / np.array([31.922, 21.658])
    elif task in ("reshading", "segment_unsup2d", "segment_unsup25d"):
        out = v[..., :1] / 255.0 * 2 - 1
    else:
        raise MtlkitError(f"unknown Taskonomy task {task!r}; tasks: {', '.join(TASKONOMY_TASKS)}")
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def _rescale(v: np.ndarray, max_value: float) -> np.ndarray:
    return np.clip(v, 0, max_value) / max_value * 2 - 1


def _buildings(csv: Path, split: str, merge_train_val: bool) -> list[str]:
    splits = read_split_csv(csv)
    if merge_train_val:
        return splits["train"] + splits["val"] if split == "train" else splits["test"]
    return splits[split]


class Taskonomy(MultiTaskDataset):
    """A split of Taskonomy; samples are ``{"image": (3, S, S), task: (C, S, S)}`` (module docstring)."""

    name = "taskonomy"

    def __init__(self, split: str, root: Path, component: str, items: list[tuple[str, View]],
                 tasks: tuple[str, ...], image_size: int, resize: int, augment: bool) -> None:
        self.split = split
        self.root = root
        self.component = component
        self.items = items
        self.task_names = tasks
        self.crop = int(image_size)
        self.resize = max(int(resize), self.crop)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def groups(self) -> list[str]:
        return [building for building, _ in self.items]

    def path(self, domain: str, index: int) -> Path:
        building, view = self.items[index]
        return view_file(self.root, domain, self.component, building, view)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = (self.resize, self.resize)
        image = resize(read_rgb(self.path("rgb", index)), size, "bilinear-aa")
        labels = {}
        for t in self.task_names:
            p = self.path(t, index)
            labels[t] = read_image(p)
            raise_issue(p, domain_issue(t, labels[t], HOT_STRIDE))
        labels = {t: resize(v if v.ndim == 3 else v[..., None], size, "nearest-exact") for t, v in labels.items()}
        rng = sample_rng() if self.augment else None
        if rng is not None:
            y, x = (int(rng.integers(0, self.resize - self.crop + 1)) for _ in range(2))
        else:
            y = x = (self.resize - self.crop + 1) // 2
        flip = rng is not None and rng.random() < 0.5

        def geometry(a: np.ndarray) -> np.ndarray:
            a = a[y: y + self.crop, x: x + self.crop]
            return a[:, ::-1] if flip else a

        out = {"image": torch.from_numpy(normalize(geometry(np.clip(image, 0, 255))).transpose(2, 0, 1).copy())}
        for t, v in labels.items():
            target = taskonomy_target(t, geometry(v))
            if flip and t == "normal":
                target[0] *= -1
            out[t] = torch.from_numpy(target)
        return out


@DATASETS.register("taskonomy")
def build_taskonomy(
    split: str,
    *,
    root: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int = 224,
    augment: bool | None = None,
    split_size: str | None = None,
    resize: int | None = None,
    merge_train_val: bool = False,
    strict: bool = False,
    **options: Any,
) -> Taskonomy:
    """Taskonomy split ``split`` (see module docstring). ``split_size``: which ``train_val_test_<size>.csv``
    (default: the only one present); ``resize``: the side images are resized to before cropping
    ``image_size`` (default ``round(image_size * 256 / 224)``, Chen et al.'s 256 for 224); ``strict``: fail
    instead of dropping views with a missing task file."""
    check_split(split)
    check_options("taskonomy", options, ("split_size", "resize", "merge_train_val", "strict"))
    chosen = select_tasks("taskonomy", TASKONOMY_TASKS, tasks)
    if not isinstance(image_size, int):
        h, w = image_size
        if h != w:
            raise MtlkitError(f"taskonomy uses square crops; got image_size={image_size!r}")
        image_size = int(h)
    base = require_root("taskonomy", root, TASKONOMY_LAYOUT)
    csv = find_split_csv(base, "taskonomy", split_size, TASKONOMY_LAYOUT)
    buildings = _buildings(csv, split, merge_train_val)
    items = index_views(base, "taskonomy", buildings, list(chosen), strict, TASKONOMY_LAYOUT)
    resize = round(image_size * 256 / 224) if resize is None else int(resize)
    return Taskonomy(split, base, "taskonomy", items, chosen, image_size, resize,
                     split == "train" if augment is None else bool(augment))


# ----------------------------------------------------------------------------------------- Replica


def omnidata_valid_mask(mask: np.ndarray) -> np.ndarray:
    """Omnidata's ``make_valid_mask``: invalid pixels grown by a 4x4 max-pool (stride 4), then upsampled."""
    m = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    h, w = mask.shape[:2]
    invalid = F.interpolate(F.max_pool2d(1 - m, kernel_size=4), (h, w), mode="nearest")
    return (invalid == 0)[0, 0].numpy()


class Replica(DenseDataset):
    name = "replica"

    def __init__(self, split: str, root: Path, component: str, items: list[tuple[str, View]],
                 tasks: tuple[str, ...], image_size: int | Sequence[int], num_classes: int = REPLICA_CLASSES,
                 **options: Any) -> None:
        ids = [f"{b}/point_{v[0]}_view_{v[1]}" for b, v in items]
        super().__init__(split, root, ids, tasks, image_size, **options)
        self.component = component
        self.items = items
        self.num_classes = num_classes

    def task_params(self) -> dict[str, dict[str, Any]]:
        return {"semseg": {"num_classes": self.num_classes}}

    def groups(self) -> list[str]:
        return [building for building, _ in self.items]

    def path(self, domain: str, index: int) -> Path:
        building, view = self.items[index]
        return view_file(self.root, domain, self.component, building, view)

    def valid(self, index: int, depth_raw: np.ndarray | None) -> np.ndarray | None:
        valid = None
        mask_path = self.path("mask_valid", index)
        if mask_path.is_file():
            mask = read_image(mask_path)
            valid = omnidata_valid_mask(mask[..., 0] if mask.ndim == 3 else mask)
        if depth_raw is not None:
            valid = (depth_raw != INVALID_DEPTH) if valid is None else valid & (depth_raw != INVALID_DEPTH)
        return valid

    def load(self, index: int) -> Sample:
        image = read_rgb(self.path("rgb", index)).astype(np.float32)
        hw = image.shape[:2]
        sample: Sample = {"image": image}
        depth_raw = None
        if "depth" in self.task_names or "normals" in self.task_names:
            p = self.path("depth_zbuffer", index)
            if "depth" in self.task_names or p.is_file():
                depth_raw = read_image(p)
                raise_issue(p, domain_issue("depth_zbuffer", depth_raw))
        valid = self.valid(index, depth_raw)
        if "semseg" in self.task_names:
            p = self.path("semantic", index)
            sem = read_image(p)
            raise_issue(p, domain_issue("semantic", sem))
            cls = (sem[..., 0] if sem.ndim == 3 else sem).astype(np.float32)
            cls[(cls == 255) | (cls >= self.num_classes)] = 255
            sample["semseg"] = cls[..., None]
        if "depth" in self.task_names:
            depth = depth_raw.astype(np.float32) / 512.0
            if valid is not None:
                depth = np.where(valid, depth, 0.0)
            sample["depth"] = depth[..., None].astype(np.float32)
        if "normals" in self.task_names:
            p = self.path("normal", index)
            raw = read_image(p)
            raise_issue(p, domain_issue("normal", raw, HOT_STRIDE))
            nrm = 2.0 * raw[..., :3].astype(np.float32) / 255.0 - 1.0
            if valid is not None:
                nrm = nrm * valid[..., None]
            sample["normals"] = nrm
        return {k: v if v.shape[:2] == hw else resize(v, hw, "nearest") for k, v in sample.items()}


@DATASETS.register("replica")
def build_replica(
    split: str,
    *,
    root: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int | Sequence[int] = 512,
    augment: bool | None = None,
    split_size: str | None = None,
    num_classes: int = REPLICA_CLASSES,
    strict: bool = False,
    **options: Any,
) -> Replica:
    """Omnidata Replica split ``split`` (see module docstring)."""
    check_split(split)
    check_options("replica", options, (*DENSE_OPTIONS, "split_size", "num_classes", "strict"))
    chosen = select_tasks("replica", REPLICA_TASKS, tasks)
    base = require_root("replica", root, REPLICA_LAYOUT)
    csv = find_split_csv(base, "replica", split_size, REPLICA_LAYOUT)
    buildings = read_split_csv(csv)[split]
    items = index_views(base, "replica", buildings, [REPLICA_DOMAINS[t] for t in chosen], strict, REPLICA_LAYOUT)
    return Replica(split, base, "replica", items, chosen, image_size, num_classes=num_classes, augment=augment,
                   **options)


# ----------------------------------------------------------------------------------------- check


def _expected(domain: str) -> str:
    if domain in SIXTEEN_BIT:
        return "a 16-bit single-channel png"
    if domain in ("segment_unsup2d", "segment_unsup25d", "mask_valid"):
        return "an 8-bit single-channel png"
    return "an 8-bit RGB png"


def _check_omnidata(root: Path, component: str, domains: list[str], layout: str, max_files: int | None,
                    num_classes: int | None = None) -> list[Problem]:
    problems = ProblemList()
    try:
        csv = find_split_csv(root, component, None, layout)
        splits = read_split_csv(csv)
    except MtlkitError as e:
        problems.add(root, str(e).split("\n")[0], "one train_val_test_<size>.csv split file (id,train,val,test)")
        return problems
    for d in ["rgb", *domains]:
        if not task_dir(root, d, component).is_dir():
            problems.add(task_dir(root, d, component), "missing folder", f"one folder per building with {d} files")
    for split, buildings in splits.items():
        decoded = 0
        for b in buildings:
            rgb_dir = task_dir(root, "rgb", component) / b
            rgb = list_views(rgb_dir, "rgb")
            if not rgb:
                problems.add(rgb_dir, "missing or empty building folder", f"rgb views of {b} ({split} split)")
                continue
            for d in domains:
                have = list_views(task_dir(root, d, component) / b, d)
                for v in sorted(rgb - have):
                    problems.add(view_file(root, d, component, b, v), "missing file", f"the {d} of this rgb view")
            for v in sorted(rgb):
                if max_files is not None and decoded >= max_files:
                    break
                decoded += 1
                _check_view(problems, root, component, b, v, domains, num_classes)
    return problems


def _check_view(problems: ProblemList, root: Path, component: str, b: str, v: View, domains: list[str],
                num_classes: int | None) -> None:
    rgb = problems.try_read(view_file(root, "rgb", component, b, v), read_rgb, "an RGB png")
    for d in domains:
        p = view_file(root, d, component, b, v)
        if not p.is_file():
            continue
        arr = problems.try_read(p, read_image, _expected(d))
        if arr is None:
            continue
        if problems.add_issue(p, domain_issue(d, arr)):
            continue
        if d in ("reshading", "semantic") and (arr.ndim != 3 or arr.shape[2] < 3):
            problems.add(p, f"array of shape {arr.shape}", _expected(d))
        elif rgb is not None and arr.shape[:2] != rgb.shape[:2]:
            problems.add(p, f"size {arr.shape[1]}x{arr.shape[0]} differs from the rgb's {rgb.shape[1]}x{rgb.shape[0]}",
                         "the rgb view's size")
        elif d == "semantic" and num_classes is not None:
            cls = arr[..., 0]
            bad = np.unique(cls[(cls != 255) & (cls >= num_classes)])
            if bad.size:
                problems.add(p, f"class ids {bad[:10].tolist()} >= {num_classes} in the red channel",
                             f"class ids 0..{num_classes - 1} (or 255) in the red channel; "
                             "set --dataset-opt num_classes=N, or supply class-coded semantic PNGs")


@CHECKERS.register("taskonomy")
def check_taskonomy(root: Path, max_files: int | None = None) -> list[Problem]:
    return _check_omnidata(root, "taskonomy", list(TASKONOMY_TASKS), TASKONOMY_LAYOUT, max_files)


@CHECKERS.register("replica")
def check_replica(root: Path, max_files: int | None = None) -> list[Problem]:
    return _check_omnidata(root, "replica", list(REPLICA_DOMAINS.values()), REPLICA_LAYOUT, max_files,
                           num_classes=REPLICA_CLASSES)
