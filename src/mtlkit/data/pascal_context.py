"""PASCAL-Context (4998 train / 5105 val, 5 tasks) in the PASCAL-MT layout of ASTMT / MTI-Net / ATRC / InvPT.

Read as the reference ``data/pascal_context.py``:

- ``image``: ``JPEGImages/<id>.jpg``.
- ``semseg``: ``semseg/VOC12/<id>.png`` if present, else ``semseg/pascal-context/<id>.png``; 21 classes
  (0 = background), 255 = ignore.
- ``parts``: PASCAL-Part ``human_parts/<id>.mat``: for every person object (class 15) with part annotations,
  its part masks painted with the 6-part grouping (head, torso, upper arms, lower arms + hands, upper legs,
  lower legs + feet; ``num_human_parts`` 1, 4, 6 or 14 as the reference). Background 0. An image without
  annotated human parts is entirely ignored (255), as ``AddIgnoreRegions`` does. When ``parts`` is the only
  task, images without human parts are dropped (as the reference).
- ``normals``: ``normals_distill/<id>.png`` decoded ``2 * v / 255 - 1``, kept only on pixels whose
  PASCAL-Context label (``pascal-context/trainval/<id>.mat``, ``LabelMap``) is one of the classes shared with
  NYUD (the reference's ``normals_valid_classes``: context classes whose name is an NYU class, plus
  ``tvmonitor``); elsewhere zero (invalid).
- ``saliency``: ``sal_distill/<id>.png / 255 > 0.5``.
- ``edge``: from the ``LabelMap``: ``thin(|Laplacian(LabelMap)| > 0)`` with OpenCV's 3x3 Laplacian
  (``[[0,1,0],[1,-4,1],[0,1,0]]``, reflect-101 border) and MATLAB/skimage thinning, as the loaders train on.
  Evaluation splits instead return what seism scores against, ``seg2bmap(LabelMap)`` (BSDS's boundary map of
  the label map), so the BSDS odsF is the reference one; ``edge_eval_gt="train"`` keeps the training edges.
- splits: ``ImageSets/Context/{train,val}.txt``; ``test`` reads ``val.txt`` (the papers report on val).

The valid normal classes are computed from the reference's ``nyu_classes.json`` / ``context_classes.json``;
their ids are stored below (:data:`NORMALS_VALID_CLASSES`) so no class file is needed at run time; pass
``db_info=FOLDER`` to recompute them from those two files. Metric defaults: 21-class mIoU, 7-class parts
mIoU, edge odsF by the BSDS protocol with maxDist 0.0075 (seism's default used for PASCAL).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mtlkit.data._check import CHECKERS, Problem, ProblemList
from mtlkit.data._dense import DENSE_OPTIONS, DenseDataset, check_options, select_tasks
from mtlkit.data._io import layout_error, read_image, read_lines, read_mat, read_rgb, require_root
from mtlkit.data._registry import DATASETS
from mtlkit.data._validate import Issue, class_map_issue, normals_issue, raise_issue
from mtlkit.data.transforms import Sample, resize
from mtlkit.errors import MtlkitError
from mtlkit.metrics._edge_bsds import seg2bmap
from mtlkit.metrics._thin import thin

PASCAL_TASKS = ("semseg", "parts", "saliency", "normals", "edge")
NUM_CLASSES = 21
PERSON = 15
SEMSEG_ENCODING = "values 0..20, 255 = ignore"
NORMALS_PNG = "an RGB png (n = 2 * v / 255 - 1)"
#: loaders check normal lengths on every HOT_STRIDE-th pixel per axis (data check: all)
HOT_STRIDE = 4
LAYOUT = """  ROOT/                               (the PASCAL_MT folder)
    JPEGImages/<id>.jpg
    semseg/VOC12/<id>.png, semseg/pascal-context/<id>.png   0..20, 255 = ignore
    human_parts/<id>.mat               PASCAL-Part annotation ('anno')
    normals_distill/<id>.png           RGB, n = 2 * v / 255 - 1
    sal_distill/<id>.png               grey, salient where v / 255 > 0.5
    pascal-context/trainval/<id>.mat   'LabelMap' (459 PASCAL-Context classes)
    ImageSets/Context/train.txt, ImageSets/Context/val.txt"""

#: PASCAL-Context class ids whose distilled normals the reference keeps (names shared with NYUD + tvmonitor)
NORMALS_VALID_CLASSES = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55,
    56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115,
    122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195,
    197, 199, 202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251,
    252, 255, 260, 261, 263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295,
    304, 307, 309, 310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368,
    370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423,
    427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454, 457,
))

_HEAD = ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye")
#: PASCAL-Part person part name -> group id, for the reference's 1 / 4 / 6 / 14-part settings
HUMAN_PARTS: dict[int, dict[str, int]] = {
    1: {p: 1 for p in (*_HEAD, "neck", "torso", "luarm", "ruarm", "llarm", "rlarm", "lhand", "rhand",
                       "luleg", "ruleg", "llleg", "rlleg", "lfoot", "rfoot")},
    4: {**{p: 1 for p in _HEAD}, "neck": 2, "torso": 2,
        **{p: 3 for p in ("luarm", "ruarm", "llarm", "rlarm", "lhand", "rhand")},
        **{p: 4 for p in ("luleg", "ruleg", "llleg", "rlleg", "lfoot", "rfoot")}},
    6: {**{p: 1 for p in _HEAD}, "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3,
        **{p: 4 for p in ("llarm", "rlarm", "lhand", "rhand")}, "luleg": 5, "ruleg": 5,
        **{p: 6 for p in ("llleg", "rlleg", "lfoot", "rfoot")}},
    14: {**{p: 1 for p in _HEAD}, "neck": 2, "torso": 2, "ruarm": 3, "rlarm": 4, "rhand": 5, "luarm": 6,
         "llarm": 7, "lhand": 8, "ruleg": 9, "rlleg": 10, "rfoot": 11, "luleg": 12, "llleg": 13, "lfoot": 14},
}


def normals_valid_classes(db_info: str | Path | None = None) -> frozenset[int]:
    """The stored ids, or recomputed from ``nyu_classes.json`` and ``context_classes.json`` in ``db_info``."""
    if db_info is None:
        return NORMALS_VALID_CLASSES
    folder = Path(db_info)
    try:
        nyu = json.loads((folder / "nyu_classes.json").read_text())
        context = json.loads((folder / "context_classes.json").read_text())
    except (OSError, ValueError) as e:
        raise MtlkitError(f"db_info {folder}: cannot read nyu_classes.json / context_classes.json ({e})") from None
    ids = {context[c] for c in nyu if c in context and c != "unknown"}
    ids.add(context["tvmonitor"])
    return frozenset(int(i) for i in ids)


def resolve_root(root: str | Path | None) -> Path:
    path = require_root("pascal-context", root, LAYOUT)
    for cand in (path, path / "PASCAL_MT"):
        if (cand / "ImageSets" / "Context").is_dir():
            return cand
    raise layout_error("pascal-context", path / "ImageSets" / "Context", "no split lists in the data root", LAYOUT)


def split_file(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Context" / f"{'val' if split == 'test' else split}.txt"


def semseg_path(root: Path, i: str) -> Path:
    voc = root / "semseg" / "VOC12" / f"{i}.png"
    return voc if voc.is_file() else root / "semseg" / "pascal-context" / f"{i}.png"


def _field(struct: np.ndarray, name: str, position: int) -> Any:
    """A field of a loadmat struct element, by name (or by position, as the reference indexes it)."""
    names = struct.dtype.names
    return struct[name] if names and name in names else struct[position]


def person_objects(path: Path) -> list[tuple[np.ndarray, list[tuple[str, np.ndarray]]]]:
    """(mask, [(part name, part mask)]) of every person object with part annotations in a PASCAL-Part .mat."""
    mat = read_mat(path)
    try:
        anno = mat["anno"][0][0]
        objects = _field(anno, "objects", 1)[0]
        out = []
        for obj in objects:
            cls = int(np.asarray(_field(obj, "class_ind", 1)).ravel()[0])
            parts = _field(obj, "parts", 3)
            if cls != PERSON or len(parts) == 0:
                continue
            named = []
            for part in parts[0]:
                name = str(np.asarray(_field(part, "part_name", 0)).ravel()[0])
                named.append((name, np.asarray(_field(part, "mask", 1)).astype(bool)))
            out.append((np.asarray(_field(obj, "mask", 2)), named))
        return out
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise MtlkitError(f"unreadable PASCAL-Part annotation {path}: {e!r} (expected an 'anno' struct with "
                          "objects(class, class_ind, mask, parts(part_name, mask)))") from None


def decode_parts(path: Path, shape: tuple[int, int], num_parts: int = 6) -> np.ndarray:
    """Human-part label map (0 background, 1..num_parts); all zero when the image has no annotated person."""
    mapping = HUMAN_PARTS[num_parts]
    target = np.zeros(shape, dtype=np.float32)
    for _, parts in person_objects(path):
        for name, mask in parts:
            if name not in mapping:
                raise MtlkitError(f"{path}: unknown person part {name!r} (expected one of {sorted(mapping)})")
            if mask.shape != shape:
                raise MtlkitError(f"{path}: part mask of size {mask.shape} for an image of size {shape}")
            target[mask] = mapping[name]
    return target


def label_map(path: Path) -> np.ndarray:
    mat = read_mat(path)
    if "LabelMap" not in mat:
        raise MtlkitError(f"unreadable PASCAL-Context label file {path}: no 'LabelMap' (keys: {sorted(mat)})")
    return np.asarray(mat["LabelMap"])


def edges_from_labels(labels: np.ndarray) -> np.ndarray:
    """``thin(|cv2.Laplacian(LabelMap, CV_64F)| > 0)``: one-pixel-wide boundaries between label regions."""
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    lap = ndimage.convolve(labels.astype(np.float64), kernel, mode="mirror")  # mirror = OpenCV reflect-101
    return thin(np.abs(lap) > 0).astype(np.float32)


class PascalContext(DenseDataset):
    name = "pascal-context"

    def __init__(self, split: str, root: Path, ids: list[str], tasks: tuple[str, ...],
                 image_size: int | Sequence[int], num_human_parts: int = 6, db_info: str | Path | None = None,
                 edge_eval_gt: str = "seism", **options: Any) -> None:
        super().__init__(split, root, ids, tasks, image_size, **options)
        if edge_eval_gt not in ("seism", "train"):
            raise MtlkitError(f"edge_eval_gt must be 'seism' or 'train', got {edge_eval_gt!r}")
        self.seism_edges = edge_eval_gt == "seism" and not self.augment
        self.num_human_parts = num_human_parts
        self.valid_normal_classes = np.array(sorted(normals_valid_classes(db_info)))

    def task_params(self) -> dict[str, dict[str, Any]]:
        return {
            "semseg": {"num_classes": NUM_CLASSES},
            "parts": {"num_classes": self.num_human_parts + 1},
            "edge": self.edge_params(0.0075),
        }

    def load(self, index: int) -> Sample:
        i = self.ids[index]
        r = self.root
        image = read_rgb(r / "JPEGImages" / f"{i}.jpg").astype(np.float32)
        hw = image.shape[:2]
        sample: Sample = {"image": image}
        labels = None
        if "edge" in self.task_names or "normals" in self.task_names:
            labels = label_map(r / "pascal-context" / "trainval" / f"{i}.mat")
        if "semseg" in self.task_names:
            p = semseg_path(r, i)
            raw = read_image(p)
            raise_issue(p, class_map_issue(raw, NUM_CLASSES - 1, 255, SEMSEG_ENCODING))
            sample["semseg"] = raw.astype(np.float32)[..., None]
        if "parts" in self.task_names:
            sample["parts"] = decode_parts(r / "human_parts" / f"{i}.mat", hw, self.num_human_parts)[..., None]
        if "saliency" in self.task_names:
            sal = read_image(r / "sal_distill" / f"{i}.png").astype(np.float32)
            sal = sal[..., 0] if sal.ndim == 3 else sal
            sample["saliency"] = (sal / 255.0 > 0.5).astype(np.float32)[..., None]
        if "normals" in self.task_names:
            p = r / "normals_distill" / f"{i}.png"
            raw = read_image(p)
            if raw.ndim != 3 or raw.shape[2] not in (3, 4):
                raise_issue(p, Issue(f"normals image of shape {raw.shape}", NORMALS_PNG))
            raw = 2.0 * raw[..., :3].astype(np.float32) / 255.0 - 1.0
            raise_issue(p, normals_issue(raw, HOT_STRIDE))
            keep = np.isin(labels, self.valid_normal_classes)
            if keep.shape != raw.shape[:2]:
                keep = resize(keep[..., None].astype(np.float32), raw.shape[:2], "nearest")[..., 0] > 0.5
            sample["normals"] = raw * keep[..., None]
        if "edge" in self.task_names:
            edge = seg2bmap(labels).astype(np.float32) if self.seism_edges else edges_from_labels(labels)
            sample["edge"] = edge[..., None]
        return {k: v if v.shape[:2] == hw else resize(v, hw, "nearest") for k, v in sample.items()}


def _has_human_parts(root: Path, split: str, ids: list[str]) -> list[bool]:
    """Per id, whether it has a person object; from ``ImageSets/Parts/<split>.txt`` (JSON) when present."""
    listing = root / "ImageSets" / "Parts" / f"{'val' if split == 'test' else split}.txt"
    if listing.is_file():
        try:
            cats = json.loads(listing.read_text())
            return [PERSON in cats.get(i, []) for i in ids]
        except (OSError, ValueError, AttributeError, TypeError):  # unreadable or not {id: [classes]}
            pass
    return [bool(person_objects(root / "human_parts" / f"{i}.mat")) for i in ids]


@DATASETS.register("pascal-context")
def build_pascal_context(
    split: str,
    *,
    root: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int | Sequence[int] = (512, 512),
    augment: bool | None = None,
    num_human_parts: int = 6,
    db_info: str | Path | None = None,
    edge_eval_gt: str = "seism",
    **options: Any,
) -> PascalContext:
    """PASCAL-Context split ``split`` from ``root`` (see module docstring)."""
    check_options("pascal-context", options, (*DENSE_OPTIONS, "num_human_parts", "db_info", "edge_eval_gt"))
    chosen = select_tasks("pascal-context", PASCAL_TASKS, tasks)
    if num_human_parts not in HUMAN_PARTS:
        raise MtlkitError(f"num_human_parts must be one of {sorted(HUMAN_PARTS)}, got {num_human_parts!r}")
    base = resolve_root(root)
    listing = split_file(base, split)
    if not listing.exists():
        raise layout_error("pascal-context", listing, "missing split list", LAYOUT)
    ids = read_lines(listing)
    if chosen == ("parts",):
        ids = [i for i, keep in zip(ids, _has_human_parts(base, split, ids), strict=True) if keep]
    if not ids:
        raise layout_error("pascal-context", listing, "no images in the split", LAYOUT)
    return PascalContext(split, base, ids, chosen, image_size, num_human_parts=num_human_parts, db_info=db_info,
                         edge_eval_gt=edge_eval_gt, augment=augment, **options)


# ----------------------------------------------------------------------------------------- check


@CHECKERS.register("pascal-context")
def check_pascal_context(root: Path, max_files: int | None = None) -> list[Problem]:
    problems = ProblemList()
    try:
        base = resolve_root(root)
    except MtlkitError:
        problems.add(root / "ImageSets" / "Context", "missing folder", "train.txt and val.txt (PASCAL-MT layout)")
        return problems
    for folder in ("JPEGImages", "semseg", "human_parts", "normals_distill", "sal_distill", "pascal-context/trainval"):
        if not (base / folder).is_dir():
            problems.add(base / folder, "missing folder", f"{folder}/ of the PASCAL-MT layout")
    for split in ("train", "val"):
        listing = split_file(base, split)
        ids = problems.try_lines(listing)
        if ids is None:
            continue
        for n, i in enumerate(ids):
            _check_image(problems, base, i, decode=max_files is None or n < max_files)
    return problems


def _check_image(problems: ProblemList, base: Path, i: str, decode: bool) -> None:
    paths = {
        "image": base / "JPEGImages" / f"{i}.jpg",
        "semseg": semseg_path(base, i),
        "parts": base / "human_parts" / f"{i}.mat",
        "normals": base / "normals_distill" / f"{i}.png",
        "saliency": base / "sal_distill" / f"{i}.png",
        "labels": base / "pascal-context" / "trainval" / f"{i}.mat",
    }
    expected = {
        "image": "an RGB jpeg",
        "semseg": "a png in semseg/VOC12 or semseg/pascal-context with values 0..20 or 255",
        "parts": "a PASCAL-Part .mat with an 'anno' struct",
        "normals": "an RGB png",
        "saliency": "a grey png",
        "labels": "a .mat with the 'LabelMap' of the image",
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
            problems.add(paths[k], f"size {arr.shape[1]}x{arr.shape[0]} differs from the image's {hw[1]}x{hw[0]}",
                         "the image's size")

    seg = problems.try_read(paths["semseg"], read_image, expected["semseg"])
    if seg is not None and not problems.add_issue(paths["semseg"],
                                                   class_map_issue(seg, NUM_CLASSES - 1, 255, SEMSEG_ENCODING)):
        size_ok("semseg", seg)
    labels = problems.try_read(paths["labels"], label_map, expected["labels"])
    if labels is not None:
        size_ok("labels", labels)
    if hw is not None:
        problems.try_read(paths["parts"], lambda p: decode_parts(p, hw), expected["parts"])
    for k in ("normals", "saliency"):
        arr = problems.try_read(paths[k], read_image, expected[k])
        if arr is None:
            continue
        if k == "normals":
            if arr.ndim != 3 or arr.shape[2] not in (3, 4):
                problems.add(paths[k], f"normals image of shape {arr.shape}", NORMALS_PNG)
                continue
            if problems.add_issue(paths[k], normals_issue(2.0 * arr[..., :3].astype(np.float32) / 255.0 - 1.0)):
                continue
        size_ok(k, arr)
