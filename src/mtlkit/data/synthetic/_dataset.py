"""The synthetic presets as :class:`MultiTaskDataset` splits, with the knobs of the data-imbalance studies.

Both presets read the same rendered scenes (one cache per split, size, count and seed); they differ only in
the tasks they return and in the edge tolerance they hand to the edge task:

- ``synthetic-nyud``: semseg, depth, normals, edge (``max_dist`` 0.011, as NYUD-v2).
- ``synthetic-pascal``: semseg, parts, saliency, normals, edge (``max_dist`` 0.0075, as PASCAL-Context).

Defaults are sized for CPU training: 64x64 images, 2000 train / 200 val / 200 test.

Imbalance knobs (train split only; val and test stay clean and complete; deterministic from ``seed``):

- ``train_fraction`` in (0, 1]: keep ``round(fraction * num_train)`` (at least 1) training images, chosen by a
  seeded permutation; smaller fractions are subsets of larger ones.
- ``label_noise``: ``{task: spec}``, applied when a sample is read (the same noise for an image every epoch),
  the rules of :mod:`mtlkit.data._knobs` (shared with the real datasets): ``semseg`` / ``parts``:
  ``{"fraction": f, "classes": [..] | k}`` relabels each pixel of those classes (default: all; an integer k:
  k classes drawn per sample, the study's §V.E) with probability f to a uniformly drawn *other* class.
  ``depth``: ``{"std": s}`` adds N(0, s^2) metres to valid pixels (kept > 0). ``normals``: ``{"std": s}``
  adds N(0, s^2) per component, then renormalises. ``edge`` / ``saliency``: ``{"fraction": f}`` flips each
  valid pixel with probability f. ``subsample: {fraction | count}`` (generic knob) also works.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from mtlkit.data._base import IGNORE_INDEX, SPLITS, MultiTaskDataset, normalize_image
from mtlkit.data._knobs import check_label_noise, noisy_label
from mtlkit.data.synthetic._generate import SPLIT_CODE, image_rng, load_split
from mtlkit.data.synthetic._render import image_hw
from mtlkit.data.synthetic._scene import (
    CLASS_NAMES,
    NUM_CLASSES,
    NUM_PARTS,
    OBJECT_CLASSES,
    PART_NAMES,
    Scene,
    sample_scene,
)
from mtlkit.errors import MtlkitError

#: every task the renderer labels, in canonical order
ALL_TASKS = ("semseg", "parts", "saliency", "depth", "normals", "edge")
PRESETS: dict[str, dict[str, Any]] = {
    "synthetic-nyud": {"tasks": ("semseg", "depth", "normals", "edge"), "edge_max_dist": 0.011},
    "synthetic-pascal": {
        "tasks": ("semseg", "parts", "saliency", "normals", "edge"),
        "edge_max_dist": 0.0075,
    },
}
DEFAULT_SIZES = {"image_size": 64, "num_train": 2000, "num_val": 200, "num_test": 200}


def _canonical_tasks(preset: str, tasks: Iterable[str] | str | None) -> tuple[str, ...]:
    valid = PRESETS[preset]["tasks"]
    if tasks is None:
        return valid
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t) for t in tasks]
    for t in names:
        if t not in valid:
            raise MtlkitError(f"dataset {preset!r} has no task {t!r}; valid tasks: {', '.join(valid)}")
    if not names:
        raise MtlkitError(f"no tasks chosen for dataset {preset!r}; valid tasks: {', '.join(valid)}")
    return tuple(t for t in valid if t in names)


def _check_size(image_size: Any) -> tuple[int, int]:
    try:
        if isinstance(image_size, str):  # "64" or "48x64" (from a command line)
            parts = [int(p) for p in image_size.lower().split("x")]
            image_size = parts[0] if len(parts) == 1 else tuple(parts)
        h, w = image_hw(image_size)
    except (TypeError, ValueError):
        raise MtlkitError(f"image_size must be an int or (H, W), got {image_size!r}") from None
    if h < 8 or w < 8:
        raise MtlkitError(f"image_size must be at least 8 pixels per side, got {image_size!r}")
    return h, w


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MtlkitError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_noise(
    preset: str, label_noise: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    return check_label_noise(preset, PRESETS[preset]["tasks"], {"semseg": NUM_CLASSES, "parts": NUM_PARTS},
                             label_noise)


class SyntheticDataset(MultiTaskDataset):
    """One split of a synthetic preset (build it with :func:`mtlkit.data.build_dataset`).

    Samples follow :mod:`mtlkit.data._base`: ``image`` (3, H, W) ImageNet-normalised; ``semseg`` int64
    (:data:`CLASS_NAMES`); ``parts`` int64 (:data:`PART_NAMES`); ``saliency`` / ``edge`` float32 (1, H, W);
    ``depth`` float32 (1, H, W) z-depth in metres (0 = invalid, millimetre precision); ``normals`` float32
    (3, H, W) in the camera frame (x right, y down, z forward; quantised to 1/127, renormalised).
    255 / 0 / all-zero mark pixels whose ray escapes the room (only in rooms without a ceiling).
    """

    class_names = CLASS_NAMES
    part_names = PART_NAMES

    def __init__(
        self,
        name: str,
        split: str,
        arrays: dict[str, np.ndarray],
        indices: np.ndarray,
        tasks: tuple[str, ...],
        seed: int,
        label_noise: dict[str, dict[str, Any]],
    ) -> None:
        self.name = name
        self.split = split
        self.task_names = tasks
        self.seed = seed
        self.label_noise = label_noise
        #: index of each sample in the full split (differs from the position when train_fraction < 1)
        self.indices = indices
        self.image_size = tuple(arrays["image"].shape[1:3])
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.indices)

    def task_params(self) -> dict[str, dict[str, Any]]:
        params = {
            "semseg": {"num_classes": NUM_CLASSES},
            "parts": {"num_classes": NUM_PARTS},
            "edge": {"max_dist": PRESETS[self.name]["edge_max_dist"]},
        }
        return {t: dict(params.get(t, {})) for t in self.task_names}

    def scene(self, i: int) -> Scene:
        """The scene description of sample ``i`` (re-sampled from its seed; ``render_scene`` renders it)."""
        return sample_scene(image_rng(self.seed, self.split, int(self.indices[i])))

    def labels(self, i: int) -> dict[str, np.ndarray]:
        """Clean labels of sample ``i`` as NumPy arrays (H, W) / (H, W, 3), before any label noise."""
        j = int(self.indices[i])
        a = self._arrays
        semseg = a["semseg"][j]
        q = a["normals"][j].astype(np.float32)
        norm = np.linalg.norm(q, axis=-1, keepdims=True)
        saliency = np.isin(semseg, OBJECT_CLASSES).astype(np.uint8)
        saliency[semseg == IGNORE_INDEX] = IGNORE_INDEX
        return {
            "image": a["image"][j],
            "semseg": semseg,
            "parts": a["parts"][j],
            "saliency": saliency,
            "depth": a["depth"][j].astype(np.float32) / 1000.0,
            "normals": np.divide(q, norm, out=np.zeros_like(q), where=norm > 0),
            "edge": a["edge"][j],
        }

    def _noisy(self, task: str, label: np.ndarray, j: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 100 + ALL_TASKS.index(task), j])
        return noisy_label(label, self.label_noise[task], rng)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        lab = self.labels(i)
        j = int(self.indices[i])
        sample = {
            "image": normalize_image(torch.from_numpy(np.ascontiguousarray(lab["image"].transpose(2, 0, 1))))
        }
        for task in self.task_names:
            x = lab[task]
            if task in self.label_noise:
                x = self._noisy(task, x, j)
            if task in ("semseg", "parts"):
                sample[task] = torch.from_numpy(x.astype(np.int64))
            elif task == "normals":
                sample[task] = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))
            else:  # depth, edge, saliency
                sample[task] = torch.from_numpy(x.astype(np.float32))[None]
        return sample

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, {h}x{w}, "
            f"tasks={self.task_names})"
        )


def build_synthetic(
    preset: str,
    split: str,
    *,
    tasks: Iterable[str] | str | None = None,
    image_size: int | tuple[int, int] = DEFAULT_SIZES["image_size"],
    num_train: int = DEFAULT_SIZES["num_train"],
    num_val: int = DEFAULT_SIZES["num_val"],
    num_test: int = DEFAULT_SIZES["num_test"],
    seed: int = 0,
    label_noise: Mapping[str, Mapping[str, Any]] | None = None,
    train_fraction: float = 1.0,
    cache_dir: str | os.PathLike[str] | None = None,
    root: Any = None,
) -> SyntheticDataset:
    """Split ``split`` of synthetic preset ``preset`` (rendered once, then read from the cache).

    ``root`` is accepted for symmetry with the real datasets and ignored. ``cache_dir`` defaults to
    ``$MTLKIT_CACHE`` or ``~/.cache/mtlkit``. ``label_noise`` and ``train_fraction`` act on the train
    split only.
    """
    del root
    if preset not in PRESETS:
        raise MtlkitError(f"unknown synthetic preset {preset!r}; valid: {', '.join(PRESETS)}")
    if split not in SPLITS:
        raise MtlkitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    chosen = _canonical_tasks(preset, tasks)
    size = _check_size(image_size)
    sizes = (num_train, num_val, num_test)
    counts = {s: _check_count(f"num_{s}", n) for s, n in zip(SPLITS, sizes, strict=True)}
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MtlkitError(f"seed must be a non-negative integer, got {seed!r}")
    noise = _check_noise(preset, label_noise)
    try:
        fraction = float(train_fraction)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:
        raise MtlkitError(f"train_fraction must be in (0, 1], got {train_fraction!r}")

    arrays = load_split(split, counts[split], size, int(seed), cache_dir)
    indices = np.arange(counts[split])
    if split == "train" and fraction < 1.0:
        keep = max(1, round(fraction * counts[split]))
        perm = np.random.default_rng([int(seed), 200 + SPLIT_CODE[split]]).permutation(counts[split])
        indices = np.sort(perm[:keep])
    active_noise = {t: s for t, s in noise.items() if t in chosen} if split == "train" else {}
    return SyntheticDataset(preset, split, arrays, indices, chosen, int(seed), active_noise)


def make_builder(preset: str) -> Callable[..., SyntheticDataset]:
    """The registry builder ``(split, **options) -> SyntheticDataset`` of a preset."""

    params = list(inspect.signature(build_synthetic).parameters.values())[1:]
    options_valid = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def builder(split: str, **options: Any) -> SyntheticDataset:
        unknown = sorted(set(options) - set(options_valid))
        if unknown:
            raise MtlkitError(
                f"dataset {preset!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(options_valid)}"
            )
        return build_synthetic(preset, split, **options)

    builder.__signature__ = inspect.Signature(params, return_annotation=SyntheticDataset)  # type: ignore[attr-defined]

    builder.__name__ = builder.__qualname__ = "build_" + preset.replace("-", "_")
    builder.__doc__ = (
        f"Split ``split`` of ``{preset}`` (tasks {', '.join(PRESETS[preset]['tasks'])}); "
        f"options as :func:`build_synthetic`."
    )
    return builder
