"""Label checks shared by the loaders (on every sample read) and ``mtlkit data check`` (on the whole tree).

Each check returns None or an :class:`Issue` (what is wrong, how to fix it). A loader turns an issue into a
one-line :class:`~mtlkit.errors.MtlkitError` naming the file (:func:`raise_issue`) when the sample is read, so
a bad file stops training before it reaches a loss; ``data check`` lists every issue of the tree. The checks
are cheap enough for the hot path: a maximum, a finiteness test, and the depth-unit and normal-length
heuristics on every ``stride``-th pixel of each axis (loaders pass 4, ``data check`` 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlkit.errors import MtlkitError

#: normals: pixels shorter than this are invalid (all-zero, or the PNG's grey 127/128 "no normal" value)
NORMAL_INVALID_BELOW = 0.1
#: normals: a valid normal may differ from length 1 by this much (8-bit PNG quantisation moves it by < 0.02)
NORMAL_TOLERANCE = 0.1
#: normals: more than this fraction of valid pixels off unit length makes the map wrong
NORMAL_BAD_FRACTION = 0.05
#: depth (metres): a map whose valid values have a median above this is in another unit (NYUD's reach ~10 m)
DEPTH_MAX_MEDIAN_METRES = 100.0


@dataclass(frozen=True)
class Issue:
    """A problem of one label file: what is wrong, what was expected, and how to fix it (when not obvious)."""

    problem: str
    expected: str
    fix: str = ""

    def message(self, path: Path | str) -> str:
        """One line: the file, the problem, what was expected and the fix."""
        return f"{path}: {self.problem}; expected {self.expected}" + (f"; {self.fix}" if self.fix else "")


def raise_issue(path: Path | str, issue: Issue | None) -> None:
    """Raise ``issue`` as a one-line error naming ``path`` (nothing when it is None)."""
    if issue is not None:
        raise MtlkitError(issue.message(path))


def class_map_issue(arr: np.ndarray, max_label: int, ignore: int | None, encoding: str) -> Issue | None:
    """A class-index map (H, W) with values 0..``max_label`` (or ``ignore``); ``encoding`` says what is expected."""
    expected = f"a single-channel PNG of class indices ({encoding})"
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Issue(f"{arr.shape[2]}-channel colour image, not a class-index map", expected,
                     "convert colour-coded masks to class indices")
    if arr.ndim != 2:
        return Issue(f"label map of shape {arr.shape}", expected)
    if not np.issubdtype(arr.dtype, np.integer):
        return Issue(f"label map of dtype {arr.dtype}", expected)
    if arr.size and int(arr.max()) > max_label:
        values = np.unique(arr)
        bad = values[(values > max_label) & (values != (ignore if ignore is not None else -1))]
        if bad.size:
            return Issue(f"label values {bad[:10].tolist()} out of range", expected, "fix or remove this file")
    return None


def depth_issue(arr: np.ndarray, scale: float = 1.0, stride: int = 1, option: str | None = None) -> Issue | None:
    """A depth map in metres (after multiplying by ``scale``): numeric (H, W) / (H, W, 1) / (1, H, W), finite,
    >= 0, and a median of the valid (> 0) values that is plausible in metres. ``option`` names the loader option
    that rescales (e.g. ``depth_scale``), suggested when the values look like millimetres."""
    expected = "a float .npy (H, W) of metres, 0 = invalid"
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        return Issue(f"depth of dtype {arr.dtype}", expected)
    if np.squeeze(arr).ndim != 2:
        return Issue(f"depth array of shape {arr.shape}", expected)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        return Issue("non-finite depth values (NaN or inf)", expected, "write 0 for invalid pixels")
    if arr.size and arr.min() < 0:
        return Issue("negative depth values", expected, "write 0 for invalid pixels")
    sub = np.squeeze(arr)[::stride, ::stride]
    valid = sub[sub > 0]
    # median above the limit <=> more than half of the valid values above it (a comparison, not a sort)
    if valid.size and np.count_nonzero(valid * scale > DEPTH_MAX_MEDIAN_METRES) * 2 > valid.size:
        median = float(np.median(valid)) * scale
        if median > DEPTH_MAX_MEDIAN_METRES:
            how = f" or pass --dataset-opt {option}={0.001 * scale:g}" if option else ""
            return Issue(f"depth looks like millimetres (median {median:.0f} of the valid pixels)", "metres",
                         f"divide the depth files by 1000{how}")
    return None


def normals_issue(n: np.ndarray, stride: int = 1, encoding: str = "n = 2 * v / 255 - 1") -> Issue | None:
    """Surface normals (H, W, 3) decoded to unit vectors (short vectors = invalid pixels)."""
    expected = f"unit normals ({encoding}; all-zero = invalid)"
    if n.ndim != 3 or n.shape[2] != 3:
        return Issue(f"normals of shape {n.shape}", f"{expected} of shape (H, W, 3)")
    if not (np.issubdtype(n.dtype, np.floating) or np.issubdtype(n.dtype, np.integer)):
        return Issue(f"normals of dtype {n.dtype}", expected)
    sub = np.asarray(n[::stride, ::stride], dtype=np.float32).reshape(-1, 3)
    if not np.isfinite(sub).all():
        return Issue("non-finite normal values (NaN or inf)", expected)
    x, y, z = sub[:, 0], sub[:, 1], sub[:, 2]
    length = np.sqrt(x * x + y * y + z * z)
    valid = length >= NORMAL_INVALID_BELOW
    off = np.abs(length[valid] - 1) > NORMAL_TOLERANCE
    if valid.any() and off.mean() > NORMAL_BAD_FRACTION:
        return Issue(f"non-unit normals ({100 * off.mean():.0f}% of the valid pixels have a length off 1 by more "
                     f"than {NORMAL_TOLERANCE:g}; median length {float(np.median(length[valid])):.3g})", expected,
                     "re-encode the file from n / |n|")
    return None


def binary_map_issue(arr: np.ndarray, what: str, encoding: str) -> Issue | None:
    """A single-channel 0 / 255 map (edges): a 3-channel image or a 0 / 1 map (which /255 would erase) is wrong."""
    expected = f"a single-channel PNG {encoding}"
    if arr.ndim != 2:
        return Issue(f"{what} of shape {arr.shape}", expected)
    if arr.size and int(arr.max()) == 1:
        return Issue(f"{what} holds 0 / 1 (it would read as 0 / 0.004)", expected, "multiply the file by 255")
    return None
