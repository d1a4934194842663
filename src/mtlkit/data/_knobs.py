"""The imbalance study's data-quality and data-quantity knobs, for every dataset (its §V.E, Tab. V).

Two dataset options, read by :func:`mtlkit.data.build_dataset` for any registered dataset and applied to the
**train split only** (validation and test stay clean and complete, as the study evaluates on them):

- ``label_noise: {task: spec}``: noise on the annotations, never on the images (§V.E "Data Quality"). The same
  noise for a sample every epoch (seeded by the knob seed, the task and the sample's index in the full split).

  - segmentation (``semseg``, ``parts``; any task with ``num_classes``): ``{"rate": r, "classes": C}`` relabels
    each pixel of the chosen classes with probability ``r`` to a uniformly drawn *other* class. ``C`` a list:
    those classes; ``C`` an integer k: per sample, k classes drawn among the classes present in that sample
    ("or keep them all if there are less than five", the study's k = 5); omitted: every class.
  - ``depth``: ``{"std": s}`` adds N(0, s²) (the label's unit) to valid pixels, kept > 0.
  - ``normals``: ``{"std": s}`` adds N(0, s²) per component to valid pixels, then renormalises.
  - binary maps (``edge``, ``saliency``): ``{"rate": r}`` flips each valid pixel with probability ``r``.

  ``fraction`` is accepted for ``rate`` and ``gaussian_std`` for ``std`` (the recipes' spelling). The study
  does not print its Gaussian std: a spec without one is refused rather than guessed.
- ``subsample: {...}``: less training data (§V.E "Data Quantity"). ``fraction`` (or ``count``): a random subset
  of the samples; on datasets made of scenes (Replica, Taskonomy: :meth:`MultiTaskDataset.groups`) also
  ``scenes`` (keep some scenes, all their scans) and ``scans_per_scene`` (keep some scans of every scene), as
  Replica's Tab. V rows do ("instead of randomly sampling ... we randomly sample various number of scans per
  scene or different scenes"). A value in (0, 1) is a fraction, an integer >= 1 a count (``scenes: 1`` is one
  scene, ``scans_per_scene: 12`` twelve scans). Smaller fractions are subsets of larger ones (one seeded
  permutation). ``seed`` (default 0) picks the subset; our choice: the subset does not follow the run seed, so
  every method and its single-task baselines see the same data.

The built-in synthetic presets apply ``label_noise`` natively (same rules, same code) and also accept
``train_fraction``; they have no scenes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mtlkit.data._base import IGNORE_INDEX, MultiTaskDataset
from mtlkit.errors import MtlkitError

KNOB_OPTIONS = ("label_noise", "subsample")
#: task name -> the kind of noise it takes
NOISE_KINDS = {"semseg": "segmentation", "parts": "segmentation", "depth": "depth", "normals": "normals",
               "edge": "binary", "saliency": "binary"}
_KEYS = {"segmentation": {"rate", "fraction", "classes"}, "binary": {"rate", "fraction"},
         "depth": {"std", "gaussian_std"}, "normals": {"std", "gaussian_std"}}
_SUBSAMPLE_KEYS = ("fraction", "count", "scenes", "scans_per_scene", "seed")


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MtlkitError(f"{where} must be a number, got {value!r}")
    return float(value)


def check_label_noise(
    dataset: str, tasks: Sequence[str], num_classes: Mapping[str, int], label_noise: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Validate ``label_noise`` for a dataset with ``tasks`` and return it normalised:
    ``{task: {"kind", "rate" | "std", "classes": list | None, "per_sample": int | None}}``."""
    if not label_noise:
        return {}
    if not isinstance(label_noise, Mapping):
        raise MtlkitError(f"label_noise must be a mapping task -> spec, got {label_noise!r}")
    out: dict[str, dict[str, Any]] = {}
    for task, spec in label_noise.items():
        if task not in tasks:
            raise MtlkitError(f"label_noise: dataset {dataset!r} has no task {task!r}; valid tasks: "
                              f"{', '.join(tasks)}")
        kind = NOISE_KINDS.get(task) or ("segmentation" if task in num_classes else None)
        if kind is None:
            raise MtlkitError(f"label_noise: no noise model for task {task!r}; noise applies to "
                              f"{', '.join(NOISE_KINDS)} and segmentation tasks")
        if not isinstance(spec, Mapping):
            raise MtlkitError(f"label_noise[{task!r}] must be a dict, got {spec!r}")
        unknown = set(spec) - _KEYS[kind]
        if unknown:
            raise MtlkitError(f"label_noise[{task!r}]: unknown keys {sorted(unknown)}; valid: {sorted(_KEYS[kind])}")
        norm: dict[str, Any] = {"kind": kind}
        if kind in ("segmentation", "binary"):
            rate = spec.get("rate", spec.get("fraction", 0.0))
            rate = _number(f"label_noise[{task!r}]['rate']", rate)
            if not 0.0 <= rate <= 1.0:
                raise MtlkitError(f"label_noise[{task!r}]['rate'] must be in [0, 1], got {rate!r}")
            norm["rate"] = rate
        else:
            std = spec.get("std", spec.get("gaussian_std"))
            if std is None:
                raise MtlkitError(f"label_noise[{task!r}] needs a Gaussian std ('std': s, in the label's unit); "
                                  "the imbalance study does not print one, so it must be chosen")
            std = _number(f"label_noise[{task!r}]['std']", std)
            if not std >= 0.0:
                raise MtlkitError(f"label_noise[{task!r}]['std'] must be >= 0, got {std!r}")
            norm["std"] = std
        if kind == "segmentation":
            n = int(num_classes.get(task, 0))
            classes = spec.get("classes")
            norm["classes"], norm["per_sample"], norm["num_classes"] = None, None, n
            if n < 2:
                raise MtlkitError(f"label_noise[{task!r}]: the dataset does not say how many classes it has")
            if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
                if classes < 1:
                    raise MtlkitError(f"label_noise[{task!r}]['classes'] as a count must be >= 1, got {classes}")
                norm["per_sample"] = int(classes)
            elif classes is not None:
                try:
                    chosen = [int(c) for c in classes]
                except (TypeError, ValueError):
                    raise MtlkitError(f"label_noise[{task!r}]['classes'] must be a list of class ids or a "
                                      f"count, got {classes!r}") from None
                if any(not 0 <= c < n for c in chosen):
                    raise MtlkitError(f"label_noise[{task!r}]['classes'] must be in 0..{n - 1}, got {chosen}")
                norm["classes"] = chosen
        out[task] = norm
    return out


def noisy_label(label: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """``label`` (segmentation / binary (H, W), depth (H, W), normals (H, W, 3)) with the noise of ``spec``
    (a normalised entry of :func:`check_label_noise`), drawn from ``rng``."""
    kind = spec["kind"]
    if kind == "segmentation":
        n = int(spec["num_classes"])
        if spec.get("per_sample"):
            present = np.unique(label[label != IGNORE_INDEX])
            k = min(int(spec["per_sample"]), len(present))
            classes = rng.choice(present, size=k, replace=False) if k else present
        else:
            classes = spec["classes"] if spec.get("classes") is not None else range(n)
        hit = np.isin(label, list(classes)) & (rng.random(label.shape) < float(spec["rate"]))
        other = (label.astype(np.int64) + rng.integers(1, n, label.shape)) % n
        return np.where(hit, other, label).astype(label.dtype)
    if kind == "binary":
        flip = (label != IGNORE_INDEX) & (rng.random(label.shape) < float(spec["rate"]))
        return np.where(flip, 1 - label, label).astype(label.dtype)
    std = float(spec["std"])
    if kind == "depth":
        valid = label > 0
        noisy = label + rng.normal(0.0, std, label.shape).astype(np.float32)
        return np.where(valid, np.maximum(noisy, 1e-3), 0.0).astype(np.float32)
    valid = np.any(label != 0, axis=-1, keepdims=True)  # normals
    noisy = label + rng.normal(0.0, std, label.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=-1, keepdims=True) + 1e-12
    return np.where(valid, noisy, 0.0).astype(np.float32)


def _amount(where: str, value: Any, total: int) -> int:
    """A fraction in (0, 1] or an integer count >= 1 -> how many of ``total`` to keep (at least 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise MtlkitError(f"subsample.{where} must be a fraction in (0, 1) or a count >= 1, got {value!r}")
    if isinstance(value, (int, np.integer)) or (float(value) >= 1.0 and float(value).is_integer()):
        if value < 1:
            raise MtlkitError(f"subsample.{where} must be a fraction in (0, 1) or a count >= 1, got {value!r}")
        return min(int(value), total)
    if not 0.0 < float(value) < 1.0:
        raise MtlkitError(f"subsample.{where} must be a fraction in (0, 1) or a count >= 1, got {value!r}")
    return max(1, round(float(value) * total))


def subsample_indices(n: int, spec: Mapping[str, Any], groups: Sequence[str] | None, dataset: str) -> np.ndarray:
    """Sorted indices of the ``n`` samples that ``subsample`` keeps (``groups[i]``: the scene of sample i)."""
    if not isinstance(spec, Mapping):
        raise MtlkitError(f"subsample must be a mapping, e.g. {{fraction: 0.5}}, got {spec!r}")
    unknown = set(spec) - set(_SUBSAMPLE_KEYS)
    if unknown:
        raise MtlkitError(f"subsample: unknown keys {sorted(unknown)}; valid: {', '.join(_SUBSAMPLE_KEYS)}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MtlkitError(f"subsample.seed must be a non-negative integer, got {seed!r}")
    keep = np.arange(n)
    if ("scenes" in spec or "scans_per_scene" in spec) and groups is None:
        raise MtlkitError(f"subsample: dataset {dataset!r} is not made of scenes; use subsample.fraction or .count")
    if "scenes" in spec:
        assert groups is not None
        scenes = sorted(set(groups))
        order = np.random.default_rng([int(seed), 1]).permutation(len(scenes))
        chosen = {scenes[i] for i in order[: _amount("scenes", spec["scenes"], len(scenes))]}
        keep = np.array([i for i in keep if groups[i] in chosen], dtype=np.int64)
    if "scans_per_scene" in spec:
        assert groups is not None
        by_scene: dict[str, list[int]] = {}
        for i in keep:
            by_scene.setdefault(groups[i], []).append(int(i))
        kept: list[int] = []
        for scene in sorted(by_scene):
            members = by_scene[scene]
            rng = np.random.default_rng([int(seed), 2, zlib.crc32(scene.encode())])
            order = rng.permutation(len(members))
            kept += [members[j] for j in order[: _amount("scans_per_scene", spec["scans_per_scene"], len(members))]]
        keep = np.array(sorted(kept), dtype=np.int64)
    for key in ("fraction", "count"):
        if key in spec:
            order = np.random.default_rng([int(seed), 3]).permutation(len(keep))
            amount = spec[key]
            if key == "count" and (isinstance(amount, bool) or not isinstance(amount, (int, np.integer))):
                raise MtlkitError(f"subsample.count must be an integer >= 1, got {amount!r}")
            if key == "fraction" and not (isinstance(amount, (int, float)) and 0.0 < float(amount) <= 1.0):
                raise MtlkitError(f"subsample.fraction must be in (0, 1], got {amount!r}")
            keep = np.sort(keep[order[: _amount(key, amount, len(keep))]]) if amount != 1.0 else keep
    return keep


def _to_numpy(task: str, x: torch.Tensor) -> np.ndarray:
    kind = NOISE_KINDS.get(task, "segmentation")
    a = x.numpy()
    if kind == "normals":
        return np.ascontiguousarray(a.transpose(1, 2, 0))
    return a[0] if a.ndim == 3 else a


def _from_numpy(task: str, a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    kind = NOISE_KINDS.get(task, "segmentation")
    if kind == "normals":
        a = a.transpose(2, 0, 1)
    elif like.dim() == 3:
        a = a[None]
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.dtype)


class Degraded(MultiTaskDataset):
    """A train split with the knobs applied: a subset of its samples, noisy labels (module docstring)."""

    def __init__(self, base: MultiTaskDataset, indices: np.ndarray, noise: dict[str, dict[str, Any]],
                 seed: int = 0) -> None:
        self.base = base
        self.indices = indices
        self.noise = noise
        self.seed = seed
        self.name = base.name
        self.task_names = base.task_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, item: str) -> Any:  # split, image_size, class_names, ... of the wrapped split
        if item.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(item)
        return getattr(self.__dict__["base"], item)

    def task_params(self) -> dict[str, dict[str, Any]]:
        return self.base.task_params()

    def groups(self) -> list[str] | None:
        g = self.base.groups()
        return None if g is None else [g[int(i)] for i in self.indices]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        j = int(self.indices[i % len(self)])
        sample = dict(self.base[j])
        for task, spec in self.noise.items():
            if task in sample:
                rng = np.random.default_rng([self.seed, 100 + zlib.crc32(task.encode()) % 10_000, j])
                sample[task] = _from_numpy(task, noisy_label(_to_numpy(task, sample[task]), spec, rng), sample[task])
        return sample

    def __repr__(self) -> str:
        return f"Degraded({self.base!r}, n={len(self)}, noise={sorted(self.noise)})"


def apply_knobs(ds: MultiTaskDataset, split: str, label_noise: Mapping[str, Any] | None = None,
                subsample: Mapping[str, Any] | None = None) -> MultiTaskDataset:
    """``ds`` with the knobs applied when ``split`` is the train split (validated on every split)."""
    params = ds.task_params()
    classes = {t: int(p["num_classes"]) for t, p in params.items() if "num_classes" in p}
    noise = check_label_noise(ds.name, ds.task_names, classes, label_noise)
    groups = ds.groups() if subsample and ("scenes" in subsample or "scans_per_scene" in subsample) else None
    keep = subsample_indices(len(ds), subsample, groups, ds.name) if subsample else np.arange(len(ds))
    if split != "train" or (not noise and len(keep) == len(ds)):
        return ds
    seed = int((subsample or {}).get("seed", 0))
    return Degraded(ds, keep, noise, seed)
