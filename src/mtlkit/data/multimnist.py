"""MultiMNIST: two overlaid MNIST digits, tasks ``left`` and ``right`` (classify each digit), built from idx files.

Construction as Sener & Koltun (2018, MGDA; ``multi_mnist_loader.py``), after Sabour et al. (2017): for each
MNIST image (the left digit) a random partner image (the right digit) is drawn; on a 36x36 canvas the left
digit fills rows / columns 0..27, the right digit 6..33, the overlap takes the pixel-wise maximum; the canvas
is resized to 28x28 with nearest neighbour (PIL, as ``scipy.misc.imresize(interp='nearest')``). Labels are the
two digits' classes. Partners come from ``numpy.random.default_rng(seed)`` (the reference draws them
unseeded), so a dataset is identical across runs. ``train`` is built from ``train-images-idx3-ubyte``,
``val`` and ``test`` from ``t10k-images-idx3-ubyte`` (the reference has no separate validation set); files
may be gzipped and may sit in ``ROOT``, ``ROOT/MNIST/raw`` or ``ROOT/raw``.

Samples follow the contract: ``image`` (3, S, S) (the grey digit pair repeated on three channels,
ImageNet-normalised; S = ``image_size``, 28 by default, nearest-neighbour resized otherwise) and int64 scalar
targets ``left`` / ``right``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit.data._base import MultiTaskDataset, normalize_image
from mtlkit.data._check import CHECKERS, Problem, ProblemList
from mtlkit.data._dense import check_options, check_split, select_tasks
from mtlkit.data._io import require_root
from mtlkit.data._registry import DATASETS
from mtlkit.errors import MtlkitError

MULTIMNIST_TASKS = ("left", "right")
LAYOUT = """  ROOT/   (or ROOT/MNIST/raw, ROOT/raw)
    train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]   (split train)
    t10k-images-idx3-ubyte[.gz],  t10k-labels-idx1-ubyte[.gz]    (splits val and test)"""
PREFIX = {"train": "train", "val": "t10k", "test": "t10k"}


def find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """An idx1 / idx3 uint8 array (MNIST's format: magic 0x00000801 labels, 0x00000803 images)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MtlkitError(f"unreadable idx file {path}: {e}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] not in (1, 3):
        raise MtlkitError(f"unreadable idx file {path}: bad magic number {data[:4].hex()} (expected 00000801/00000803)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise MtlkitError(f"unreadable idx file {path}: {body.size} bytes of data for shape {dims}")
    return body.reshape(dims)


def overlay(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(N, 28, 28) pairs -> (N, 28, 28) MultiMNIST images (36x36 canvas, nearest-neighbour resize to 28)."""
    n = left.shape[0]
    canvas = np.zeros((n, 36, 36), dtype=np.uint8)
    canvas[:, 0:28, 0:28] = left
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], right)
    # PIL NEAREST: output pixel i samples input floor((i + 0.5) * 36 / 28)
    idx = np.floor((np.arange(28) + 0.5) * 36 / 28).astype(np.int64)
    return canvas[:, idx][:, :, idx]


class MultiMNIST(MultiTaskDataset):
    name = "multimnist"

    def __init__(self, split: str, images: np.ndarray, left: np.ndarray, right: np.ndarray,
                 tasks: tuple[str, ...], image_size: int) -> None:
        self.split = split
        self.images = images
        self.labels = {"left": left.astype(np.int64), "right": right.astype(np.int64)}
        self.task_names = tasks
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        img = torch.from_numpy(self.images[index].copy())[None, None].float()
        if self.image_size != img.shape[-1]:
            img = torch.nn.functional.interpolate(img, size=(self.image_size, self.image_size), mode="nearest-exact")
        out = {"image": normalize_image(img[0].expand(3, -1, -1) / 255.0)}
        for t in self.task_names:
            out[t] = torch.tensor(self.labels[t][index])
        return out


@DATASETS.register("multimnist")
def build_multimnist(
    split: str,
    *,
    root: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    image_size: int | Sequence[int] = 28,
    augment: bool | None = None,
    seed: int = 0,
    **options: Any,
) -> MultiMNIST:
    """MultiMNIST split ``split`` from the MNIST idx files in ``root`` (see module docstring)."""
    check_split(split)
    check_options("multimnist", options, ("seed",))
    chosen = select_tasks("multimnist", MULTIMNIST_TASKS, tasks)
    if not isinstance(image_size, int):
        image_size = int(image_size[0])
    base = require_root("multimnist", root, LAYOUT)
    prefix = PREFIX[split]
    img_path, lab_path = find_idx(base, f"{prefix}-images-idx3-ubyte"), find_idx(base, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lab_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise MtlkitError(f"multimnist: no {missing}[.gz] in {base} (needed for the {split} split); expected the "
                          "MNIST idx files in ROOT, ROOT/MNIST/raw or ROOT/raw (see docs/datasets.md)")
    digits, labels = read_idx(img_path), read_idx(lab_path)
    if digits.ndim != 3 or digits.shape[1:] != (28, 28) or labels.shape != (digits.shape[0],):
        raise MtlkitError(f"multimnist: {img_path} holds {digits.shape} and {lab_path} {labels.shape} "
                          "(expected N x 28 x 28 images and N labels)")
    if labels.size and int(labels.max()) > 9:
        raise MtlkitError(f"{lab_path}: label values up to {int(labels.max())}; expected MNIST digits 0..9 "
                          "(use the official t10k / train label files)")
    # one partner per image; the stream depends only on the seed and the source file (train vs t10k)
    rng = np.random.default_rng([seed, 0 if prefix == "train" else 1])
    partner = rng.integers(0, len(digits), size=len(digits))
    images = overlay(digits, digits[partner])
    return MultiMNIST(split, images, labels, labels[partner], chosen, image_size)


@CHECKERS.register("multimnist")
def check_multimnist(root: Path, max_files: int | None = None) -> list[Problem]:
    problems = ProblemList()
    for prefix in ("train", "t10k"):
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        arrays = []
        for stem in stems:
            path = find_idx(root, stem)
            if path is None:
                problems.add(root / stem, "missing file", f"{stem} or {stem}.gz (MNIST idx format)")
                arrays.append(None)
                continue
            arrays.append(problems.try_read(path, read_idx, "an MNIST idx file"))
        images, labels = arrays
        if images is not None and (images.ndim != 3 or images.shape[1:] != (28, 28)):
            problems.add(find_idx(root, stems[0]), f"images of shape {images.shape}", "N x 28 x 28")
        if labels is not None and labels.size and labels.max() > 9:
            problems.add(find_idx(root, stems[1]), f"label values up to {int(labels.max())}", "digits 0..9")
        if images is not None and labels is not None and len(images) != len(labels):
            problems.add(find_idx(root, stems[1]), f"{len(labels)} labels for {len(images)} images",
                         "one label per image")
    return problems
