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
                 image_size: int | Sequence[int], **options: Any) -> None:
        super().__init__(split, root, ids, tasks, image_size, **options)
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
            sample["semseg"] = decode_semseg(read_image(self.path("segmentation", index, ".png")))[..., None]
        if "depth" in self.task_names:
            depth = read_npy(self.path("depth", index, ".npy")).astype(np.float32)
            sample["depth"] = depth.reshape(depth.shape[0], depth.shape[1], 1)
        if "normals" in self.task_names:
            p = self.path("normals", index, nrm_ext)
            if nrm_ext == ".png":
                sample["normals"] = 2.0 * read_rgb(p).astype(np.float32) / 255.0 - 1.0
            else:
                sample["normals"] = read_npy(p).astype(np.float32)
        if "edge" in self.task_names:
            p = self.path("edge", index, edge_ext)
            edge = read_image(p).astype(np.float32) / 255.0 if edge_ext == ".png" else read_npy(p).astype(np.float32)
            sample["edge"] = edge.reshape(edge.shape[0], edge.shape[1], 1)
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
    **options: Any,
) -> NYUDv2:
    """NYUD-v2 split ``split`` from ``root`` (see module docstring); ``variant``: auto | atrc | nyud_mt."""
    check_options("nyud", options, (*DENSE_OPTIONS, "variant"))
    chosen = select_tasks("nyud", NYUD_TASKS, tasks)
    base = resolve_root(root)
    listing = split_file(base, split)
    if not listing.is_file():
        raise layout_error("nyud", listing, "missing split list", LAYOUT)
    ids = read_lines(listing)
    if not ids:
        raise layout_error("nyud", listing, "empty split list", LAYOUT)
    if variant == "auto":
        variant = detect_variant(base, ids[0])
    elif variant not in VARIANTS:
        raise MtlkitError(f"nyud variant must be auto, atrc or nyud_mt, got {variant!r}")
    return NYUDv2(split, base, ids, chosen, variant, image_size, augment=augment, **options)


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
        if not listing.is_file():
            problems.add(listing, "missing split list", "one image id per line")
            continue
        ids = read_lines(listing)
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
    if seg is not None:
        if seg.ndim != 2:
            problems.add(paths["semseg"], f"{seg.ndim}-D label map of shape {seg.shape}", expected["semseg"])
        elif seg.max() > NUM_CLASSES:
            bad = sorted(int(v) for v in np.unique(seg) if v > NUM_CLASSES)
            problems.add(paths["semseg"], f"label values {bad[:10]} out of range", expected["semseg"])
        size_ok("semseg", seg)
    depth = problems.try_read(paths["depth"], read_npy, expected["depth"])
    if depth is not None:
        d = np.squeeze(depth)
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.number):
            problems.add(paths["depth"], f"array of shape {depth.shape} and dtype {depth.dtype}", expected["depth"])
        elif not np.isfinite(d).all() or (d < 0).any():
            problems.add(paths["depth"], "negative or non-finite depth values", expected["depth"])
        else:
            size_ok("depth", d)
    reader = read_image if nrm_ext == ".png" else read_npy
    nrm = problems.try_read(paths["normals"], reader, expected["normals"])
    if nrm is not None:
        if nrm.ndim != 3 or nrm.shape[2] != 3:
            problems.add(paths["normals"], f"array of shape {nrm.shape}", expected["normals"])
        else:
            size_ok("normals", nrm)
    reader = read_image if edge_ext == ".png" else read_npy
    edge = problems.try_read(paths["edge"], reader, expected["edge"])
    if edge is not None:
        vals = np.unique(edge)
        ok = set(vals.tolist()) <= {0, 255} if edge_ext == ".png" else bool(((vals >= 0) & (vals <= 1)).all())
        if edge.ndim != 2 or not ok:
            problems.add(paths["edge"], f"values {vals[:10].tolist()} / shape {edge.shape}", expected["edge"])
        else:
            size_ok("edge", edge)
