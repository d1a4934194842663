"""NYUD-v2 (795 train / 654 val frames, 4 tasks) in the ATRC / InvPT ``NYUDv2/`` layout or MTI-Net's ``NYUD_MT``.

Read exactly as the reference loaders (``data/nyud.py`` of ATRC, InvPT, TaskPrompter; MTI-Net for NYUD_MT):

- ``image``: RGB (``images/<id>.png``; NYUD_MT: ``.jpg``).
- ``semseg``: ``segmentation/<id>.png`` holds 0 = void and classes 1..40; we return ``value - 1`` with void ->
  255 (ignored), i.e. the 40-class task without background, as the reference.
- ``depth``: ``depth/<id>.npy`` float metres, 0 = invalid.
- ``normals``: ``normals/<id>.png`` decoded as ``2 * v / 255 - 1`` (NYUD_MT: ``.npy`` unit vectors as stored).
- ``edge``: ``edge/<id>.png`` divided by 255 (NYUD_MT: ``.npy`` in {0, 1}).
- splits: ``gt_sets/train.txt`` and ``gt_sets/val.txt``; NYUD has no separate test set, so ``test`` reads
  ``gt_sets/test.txt`` when present and ``val.txt`` otherwise (the papers report on val).

The variant is detected from the first image of the split (``.png`` -> ATRC, ``.jpg`` -> NYUD_MT). A label whose
size differs from the image is resized to it with nearest neighbour (the reference uses cubic for normals in
that rare case). Metric defaults (:meth:`NYUDv2.task_params`): 40-class mIoU, edge odsF by the BSDS protocol
with maxDist 0.011 (ATRC / InvPT's seism setting for NYUD).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtlkit.data._check import CHECKERS, Problem, ProblemList
from mtlkit.data._dense import DENSE_OPTIONS, DenseDataset, check_options, select_tasks
from mtlkit.data._io import layout_error, read_image, read_lines, read_npy, read_rgb, require_root
from mtlkit.data._registry import DATASETS
from mtlkit.data._validate import (
    Issue,
    binary_map_issue,
    class_map_issue,
    depth_issue,
    normals_issue,
    raise_issue,
)
from mtlkit.data.transforms import Sample, resize
from mtlkit.errors import MtlkitError

NYUD_TASKS = ("semseg", "depth", "normals", "edge")
NUM_CLASSES = 40
LAYOUT = """  ROOT/                      (the ATRC / InvPT NYUDv2 folder)
    images/<id>.png           RGB
    segmentation/<id>.png     uint8, 0 = void, 1..40 = classes
    depth/<id>.npy            float32 metres, 0 = invalid
    normals/<id>.png          RGB, n = 2 * v / 255 - 1
    edge/<id>.png             0 / 255
    gt_sets/train.txt, gt_sets/val.txt   one id per line
  (MTI-Net's NYUD_MT variant: images/<id>.jpg, normals/<id>.npy, edge/<id>.npy)"""

SEMSEG_ENCODING = "values 0 (void) .. 40"
EDGE_ENCODING = "of 0 / 255"
#: loaders check depth units and normal lengths on every HOT_STRIDE-th pixel per axis (data check: all)
HOT_STRIDE = 4
NORMALS_PNG = "an RGB png (n = 2 * v / 255 - 1)"
EDGE_NPY = "a .npy (H, W) with values in [0, 1]"

# variant -> (image ext, normals ext, edge ext)
VARIANTS = {"atrc": (".png", ".png", ".png"), "nyud_mt": (".jpg", ".npy", ".npy")}


def resolve_root(root: str | Path | None) -> Path:
    """The folder holding ``gt_sets/``: ``root`` itself or its ``NYUDv2`` / ``NYUD_MT`` subfolder."""
    path = require_root("nyud", root, LAYOUT)
    for cand in (path, path / "NYUDv2", path / "NYUD_MT"):
        if (cand / "gt_sets").is_dir():
            return cand
    raise layout_error("nyud", path / "gt_sets", "no gt_sets/ folder (split lists) in the data root", LAYOUT)


def split_file(root: Path, split: str) -> Path:
    if split == "test" and not (root / "gt_sets" / "test.txt").is_file():
        split = "val"
    return root / "gt_sets" / f"{split}.txt"


def detect_variant(root: Path, first_id: str) -> str:
    if (root / "images" / f"{first_id}.png").is_file():
        return "atrc"
    if (root / "images" / f"{first_id}.jpg").is_file():
        return "nyud_mt"
    raise layout_error("nyud", root / "images" / f"{first_id}.png", "image of the first listed id not found", LAYOUT)


def decode_semseg(raw: np.ndarray) -> np.ndarray:
    """0 = void -> 255, classes 1..40 -> 0..39."""
    seg = raw.astype(np.float32) - 1
    seg[seg == -1] = 255
    return seg


class NYUDv2(DenseDataset):
    name = "nyud"

    def __init__(self, split: str, root: Path, ids: list[str], tasks: tuple[str, ...], variant: str,
                 image_size: int | Sequence[int], depth_scale: float = 1.0, **options: Any) -> None:
        super().__init__(split, root, ids, tasks, image_size, **options)
        self.depth_scale = depth_scale
        self.variant = variant
        self.exts = VARIANTS[variant]

    def task_params(self) -> dict[str, dict[str, Any]]:
        return {"semseg": {"num_classes": NUM_CLASSES}, "edge": self.edge_params(0.011)}

    def path(self, folder: str, index: int, ext: str) -> Path:
        return self.root / folder / f"{self.ids[index]}{ext}"

    def load(self, index: int) -> Sample:
        img_ext, nrm_ext, edge_ext = self.exts
        image = read_rgb(self.path("images", index, img_ext)).astype(np.float32)
        hw = image.shape[:2]
        sample: Sample = {"image": image}
        if "semseg" in self.task_names:
            p = self.path("segmentation", index, ".png")
            raw = read_image(p)
            raise_issue(p, class_map_issue(raw, NUM_CLASSES, None, SEMSEG_ENCODING))
            sample["semseg"] = decode_semseg(raw)[..., None]
        if "depth" in self.task_names:
            p = self.path("depth", index, ".npy")
            raw = read_npy(p)
            raise_issue(p, depth_issue(raw, self.depth_scale, stride=HOT_STRIDE, option="depth_scale"))
            depth = np.squeeze(raw).astype(np.float32) * np.float32(self.depth_scale)
            sample["depth"] = depth[..., None]
        if "normals" in self.task_names:
            p = self.path("normals", index, nrm_ext)
            if nrm_ext == ".png":
                raw = read_image(p)
                if raw.ndim != 3 or raw.shape[2] not in (3, 4):
                    raise_issue(p, Issue(f"normals image of shape {raw.shape}", NORMALS_PNG))
                normals = 2.0 * raw[..., :3].astype(np.float32) / 255.0 - 1.0
                raise_issue(p, normals_issue(normals, HOT_STRIDE))
            else:
                normals = read_npy(p)
                raise_issue(p, normals_issue(normals, HOT_STRIDE, "float unit vectors"))
                normals = normals.astype(np.float32)
            sample["normals"] = normals
        if "edge" in self.task_names:
            p = self.path("edge", index, edge_ext)
            if edge_ext == ".png":
                raw = read_image(p)
                raise_issue(p, binary_map_issue(raw, "edge map", EDGE_ENCODING))
                edge = raw.astype(np.float32) / 255.0
            else:
                raw = read_npy(p)
                if raw.ndim != 2 or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
                    raise_issue(p, Issue(f"edge map of shape {raw.shape} and dtype {raw.dtype}", EDGE_NPY))
                if raw.size and raw.max() > 1:
                    raise_issue(p, Issue(f"edge values up to {raw.max():g}", EDGE_NPY, "divide the file by 255"))
                edge = raw.astype(np.float32)
            sample["edge"] = edge[..., None]
        return {k: v if v.shape[:2] == hw else resize(v, hw, "nearest") for k, v in sample.items()}


@DATASETS.register("nyud")
def build_nyud(
    split: str,
    *,
    root: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int | Sequence[int] = (448, 576),
    augment: bool | None = None,
    variant: str = "auto",
    depth_scale: float = 1.0,
    **options: Any,
) -> NYUDv2:
    """NYUD-v2 split ``split`` from ``root`` (see module docstring); ``variant``: auto | atrc | nyud_mt;
    ``depth_scale``: factor from the stored depth to metres (0.001 for depth saved in millimetres)."""
    check_options("nyud", options, (*DENSE_OPTIONS, "variant", "depth_scale"))
    try:
        depth_scale = float(depth_scale)
    except (TypeError, ValueError):
        depth_scale = float("nan")
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise MtlkitError(f"nyud depth_scale must be a positive number (0.001 for millimetres), got {depth_scale!r}")
    chosen = select_tasks("nyud", NYUD_TASKS, tasks)
    base = resolve_root(root)
    listing = split_file(base, split)
    if not listing.exists():
        raise layout_error("nyud", listing, "missing split list", LAYOUT)
    ids = read_lines(listing)
    if not ids:
        raise layout_error("nyud", listing, "empty split list", LAYOUT)
    if variant == "auto":
        variant = detect_variant(base, ids[0])
    elif variant not in VARIANTS:
        raise MtlkitError(f"nyud variant must be auto, atrc or nyud_mt, got {variant!r}")
    return NYUDv2(split, base, ids, chosen, variant, image_size, depth_scale=depth_scale, augment=augment, **options)


# ----------------------------------------------------------------------------------------- check


@CHECKERS.register("nyud")
def check_nyud(root: Path, max_files: int | None = None) -> list[Problem]:
    problems = ProblemList()
    try:
        base = resolve_root(root)
    except MtlkitError:
        problems.add(root / "gt_sets", "missing folder", "gt_sets/ with train.txt and val.txt (ATRC NYUDv2 layout)")
        return problems
    for folder in ("images", "segmentation", "depth", "normals", "edge"):
        if not (base / folder).is_dir():
            problems.add(base / folder, "missing folder", f"{folder}/ of the NYUDv2 layout")
    variant = None
    for split in ("train", "val"):
        listing = base / "gt_sets" / f"{split}.txt"
        ids = problems.try_lines(listing)
        if ids is None:
            continue
        if not ids:
            problems.add(listing, "empty split list", "one image id per line")
            continue
        if variant is None:
            try:
                variant = detect_variant(base, ids[0])
            except MtlkitError:
                variant = "atrc"
        for n, i in enumerate(ids):
            _check_frame(problems, base, i, variant, decode=max_files is None or n < max_files)
    return problems


def _check_frame(problems: ProblemList, base: Path, i: str, variant: str, decode: bool) -> None:
    img_ext, nrm_ext, edge_ext = VARIANTS[variant]
    paths = {
        "image": base / "images" / f"{i}{img_ext}",
        "semseg": base / "segmentation" / f"{i}.png",
        "depth": base / "depth" / f"{i}.npy",
        "normals": base / "normals" / f"{i}{nrm_ext}",
        "edge": base / "edge" / f"{i}{edge_ext}",
    }
    expected = {
        "image": "an RGB image",
        "semseg": "a uint8 png with values 0 (void) .. 40",
        "depth": "a float .npy (H, W) of metres >= 0",
        "normals": "an RGB png" if nrm_ext == ".png" else "a float .npy (H, W, 3)",
        "edge": "a png with values 0 / 255" if edge_ext == ".png" else "a .npy (H, W) with values in [0, 1]",
    }
    if not decode:
        for k, p in paths.items():
            if not p.is_file():
                problems.add(p, "missing file", expected[k])
        return
    image = problems.try_read(paths["image"], read_rgb, expected["image"])
    hw = None if image is None else image.shape[:2]

    def size_ok(k: str, arr: np.ndarray) -> None:
        if hw is not None and arr.shape[:2] != hw:
            problems.add(paths[k], f"size {arr.shape[1]}x{arr.shape[0]} differs from the image's "
                                   f"{hw[1]}x{hw[0]}", "the image's size")

    seg = problems.try_read(paths["semseg"], read_image, expected["semseg"])
    if seg is not None and not problems.add_issue(paths["semseg"],
                                                   class_map_issue(seg, NUM_CLASSES, None, SEMSEG_ENCODING)):
        size_ok("semseg", seg)
    depth = problems.try_read(paths["depth"], read_npy, expected["depth"])
    if depth is not None and not problems.add_issue(paths["depth"], depth_issue(depth, option="depth_scale")):
        size_ok("depth", np.squeeze(depth))
    if nrm_ext == ".png":
        nrm = problems.try_read(paths["normals"], read_image, expected["normals"])
        if nrm is not None and (nrm.ndim != 3 or nrm.shape[2] not in (3, 4)):
            problems.add(paths["normals"], f"normals image of shape {nrm.shape}", NORMALS_PNG)
        elif nrm is not None and not problems.add_issue(
                paths["normals"], normals_issue(2.0 * nrm[..., :3].astype(np.float32) / 255.0 - 1.0)):
            size_ok("normals", nrm)
    else:
        nrm = problems.try_read(paths["normals"], read_npy, expected["normals"])
        if nrm is not None and not problems.add_issue(paths["normals"], normals_issue(nrm, 1, "float unit vectors")):
            size_ok("normals", nrm)
    reader = read_image if edge_ext == ".png" else read_npy
    edge = problems.try_read(paths["edge"], reader, expected["edge"])
    if edge is not None:
        issue = binary_map_issue(edge, "edge map", EDGE_ENCODING) if edge_ext == ".png" else None
        if not problems.add_issue(paths["edge"], issue):
            vals = np.unique(edge)
            ok = set(vals.tolist()) <= {0, 255} if edge_ext == ".png" else bool(((vals >= 0) & (vals <= 1)).all())
            if edge.ndim != 2 or not ok:
                problems.add(paths["edge"], f"values {vals[:10].tolist()} / shape {edge.shape}", expected["edge"])
            else:
                size_ok("edge", edge)
