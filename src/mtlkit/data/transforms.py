"""Training / evaluation transforms of the dense benchmarks, as the ATRC / InvPT / TaskPrompter code applies them.

A raw sample is a dict of float32 numpy arrays (H, W, C) in label space: ``image`` RGB 0..255, ``semseg`` /
``parts`` class indices (255 = ignore), ``depth`` metres (0 = invalid), ``normals`` unit vectors (all-zero =
invalid), ``edge`` / ``saliency`` in {0, 1}. Training (ATRC's ``get_transformations``, reused by InvPT,
TaskPrompter and the seeds' official code):

1. ``RandomScaling((0.5, 2.0))``: one factor per sample, new size ``int(side * s)``; image bilinear, every
   label nearest neighbour (so depth and normals never mix valid and invalid pixels); depth divided by ``s``.
2. ``RandomCrop(size, cat_max_ratio=0.75)``: up to 10 re-draws while one class covers >= 75 % of the crop.
3. ``RandomHorizontalFlip(0.5)``: the x component of the normals changes sign.
4. ``PhotoMetricDistortion`` (mmseg's colour jitter): brightness ±32, contrast 0.5-1.5, saturation 0.5-1.5,
   hue ±18 (OpenCV 8-bit HSV, hue in [0, 180)), each with probability 0.5, contrast first or last at random.
5. ImageNet normalisation, then centre padding to ``size`` (image 0, class maps / edge / saliency 255,
   depth and normals 0).
6. ``AddIgnoreRegions``: a human-parts map with no part pixel (only 0 / 255) becomes all-ignore.

Evaluation: normalise and pad only. Our one addition: an evaluation image larger than ``size`` is first
downscaled to fit (labels nearest), since the trainer batches fixed-size tensors; with ``size`` at least the
dataset's image size (NYUD 448x576 for 425x560 frames, PASCAL 512x512) this never happens and evaluation is
the reference one.

Differences from the reference, all below one grey level: resizing uses ``torch.nn.functional.interpolate``
(bilinear, half-pixel centres, no antialiasing, the same formula as ``cv2.INTER_LINEAR``; ``nearest`` =
``cv2.INTER_NEAREST``); the HSV conversion re-implements OpenCV's 8-bit fixed-point formulas in numpy.
Randomness comes from a ``numpy.random.Generator`` the dataset seeds from torch's RNG, so runs repeat
under ``torch.manual_seed`` and DataLoader workers get distinct streams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtlkit.data._base import IMAGENET_MEAN, IMAGENET_STD

Sample = dict[str, np.ndarray]
Size = tuple[int, int]

#: fill value of each key when padding (the reference ``PadImage.fill_index``)
PAD_VALUE = {"image": 0.0, "semseg": 255.0, "parts": 255.0, "edge": 255.0, "saliency": 255.0,
             "depth": 0.0, "normals": 0.0}
#: keys holding class indices (int64 tensors (H, W) in the output sample)
CLASS_KEYS = ("semseg", "parts")


def as_size(size: int | Sequence[int]) -> Size:
    """``512`` -> ``(512, 512)``; ``(448, 576)`` stays."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resize(array: np.ndarray, hw: Size, mode: str) -> np.ndarray:
    """Resize an (H, W, C) array to ``hw`` (float32 out).

    ``mode``: ``"bilinear"`` (= ``cv2.INTER_LINEAR``), ``"nearest"`` (= ``cv2.INTER_NEAREST``), or the PIL
    behaviours ``"bilinear-aa"`` (antialiased when shrinking, as ``Image.BILINEAR``) and ``"nearest-exact"``
    (= ``Image.NEAREST``).
    """
    if array.shape[:2] == tuple(hw):
        return array.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    if mode in ("bilinear", "bilinear-aa"):
        out = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=mode == "bilinear-aa")
    elif mode in ("nearest", "nearest-exact"):
        out = F.interpolate(t, size=hw, mode=mode)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    return out[0].permute(1, 2, 0).numpy()


def resize_sample(sample: Sample, hw: Size, depth_scale: float = 1.0) -> Sample:
    """Image bilinear, labels nearest; depth divided by ``depth_scale`` (the zoom factor)."""
    out = {}
    for k, v in sample.items():
        out[k] = resize(v, hw, "bilinear" if k == "image" else "nearest")
        if k == "depth" and depth_scale != 1.0:
            out[k] = out[k] / depth_scale
    return out


def random_scale(sample: Sample, rng: np.random.Generator, scale_range: tuple[float, float] = (0.5, 2.0)) -> Sample:
    s = float(rng.uniform(*scale_range))
    if s == 1.0:
        return sample
    h, w = sample["image"].shape[:2]
    return resize_sample(sample, (int(h * s), int(w * s)), depth_scale=s)


def _crop_loc(shape: tuple[int, ...], size: Size, rng: np.random.Generator) -> tuple[int, int] | None:
    h, w = shape[:2]
    if (h, w) == size:
        return None
    return int(rng.integers(0, max(h - size[0], 0) + 1)), int(rng.integers(0, max(w - size[1], 0) + 1))


def random_crop(sample: Sample, size: Size, rng: np.random.Generator, cat_max_ratio: float = 0.75) -> Sample:
    """Crop to at most ``size`` (smaller images stay smaller and are padded later), as ``RandomCrop``."""
    loc = _crop_loc(sample["image"].shape, size, rng)

    def crop(v: np.ndarray, at: tuple[int, int] | None) -> np.ndarray:
        return v if at is None else v[at[0]: at[0] + size[0], at[1]: at[1] + size[1]]

    if cat_max_ratio < 1.0 and "semseg" in sample:
        for _ in range(10):
            labels, counts = np.unique(crop(sample["semseg"], loc), return_counts=True)
            counts = counts[labels != 255]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            loc = _crop_loc(sample["image"].shape, size, rng)
    return {k: crop(v, loc) for k, v in sample.items()}


def random_hflip(sample: Sample, rng: np.random.Generator, p: float = 0.5) -> Sample:
    if rng.random() >= p:
        return sample
    out = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in sample.items()}
    if "normals" in out:
        out["normals"][..., 0] *= -1
    return out


# ------------------------------------------------------------------------------------ colour jitter

_HSV_SHIFT = 12


def rgb_to_hsv_u8(rgb: np.ndarray) -> np.ndarray:
    """OpenCV ``COLOR_RGB2HSV`` for uint8 (H in [0, 180), S and V in [0, 255]), fixed-point as OpenCV."""
    c = rgb.astype(np.int64)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    v = c.max(-1)
    diff = v - c.min(-1)
    sdiv = np.where(v > 0, np.rint((255 << _HSV_SHIFT) / np.maximum(v, 1)), 0).astype(np.int64)
    s = (diff * sdiv + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    hdiv = np.where(diff > 0, np.rint((180 << _HSV_SHIFT) / (6.0 * np.maximum(diff, 1))), 0).astype(np.int64)
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], -1).astype(np.uint8)


def hsv_to_rgb_u8(hsv: np.ndarray) -> np.ndarray:
    """OpenCV ``COLOR_HSV2RGB`` for uint8 (float formula, rounded to nearest)."""
    h = hsv[..., 0].astype(np.float32) * np.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) / np.float32(255.0)
    v = hsv[..., 2].astype(np.float32) / np.float32(255.0)
    h = np.where(h < 0, h + 6, h)
    h = np.where(h >= 6, h - 6, h)
    sector = np.floor(h).astype(np.int64)
    f = h - sector
    bad = (sector < 0) | (sector >= 6)
    sector = np.where(bad, 0, sector)
    f = np.where(bad, 0, f)
    tab = np.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))], -1)
    # (r, g, b) taken from tab per sector: standard HSV sectors
    order = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])
    idx = order[sector]
    rgb = np.take_along_axis(tab, idx, axis=-1)
    rgb = np.where((s == 0)[..., None], v[..., None], rgb)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg / ATRC ``PhotoMetricDistortion`` on an RGB image (float 0..255 in, float 0..255 out)."""
    img = image.astype(np.uint8)
    if rng.random() < 0.5:
        img = _convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = rng.random() < 0.5

    def contrast(x: np.ndarray) -> np.ndarray:
        return _convert(x, alpha=rng.uniform(*contrast_range)) if rng.random() < 0.5 else x

    if contrast_first:
        img = contrast(img)
    if rng.random() < 0.5:
        hsv = rgb_to_hsv_u8(img)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        img = hsv_to_rgb_u8(hsv)
    if rng.random() < 0.5:
        hsv = rgb_to_hsv_u8(img)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + int(rng.integers(-hue_delta, hue_delta))) % 180
        img = hsv_to_rgb_u8(hsv)
    if not contrast_first:
        img = contrast(img)
    return img.astype(np.float32)


# ------------------------------------------------------------------------------------ finishing


def normalize(image: np.ndarray) -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return (image.astype(np.float32) / 255.0 - mean) / std


def pad(sample: Sample, size: Size) -> Sample:
    """Centre-pad every array to at least ``size`` with :data:`PAD_VALUE` (the reference ``PadImage``)."""
    out = {}
    for k, v in sample.items():
        h, w = v.shape[:2]
        dh, dw = max(size[0] - h, 0), max(size[1] - w, 0)
        if dh == 0 and dw == 0:
            out[k] = v
            continue
        p = np.full((h + dh, w + dw, v.shape[2]), PAD_VALUE.get(k, 0.0), dtype=np.float32)
        p[dh // 2: dh // 2 + h, dw // 2: dw // 2 + w] = v
        out[k] = p
    return out


def add_ignore_regions(sample: Sample) -> Sample:
    """A parts map without any part pixel (only background / ignore) is ignored entirely (``AddIgnoreRegions``)."""
    if "parts" in sample:
        p = sample["parts"]
        if ((p == 0) | (p == 255)).all():
            sample = {**sample, "parts": np.full_like(p, 255)}
    return sample


def to_tensors(sample: Sample) -> dict[str, torch.Tensor]:
    """(H, W, C) arrays -> the sample contract of :mod:`mtlkit.data._base`."""
    out = {}
    for k, v in sample.items():
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).permute(2, 0, 1).contiguous()
        out[k] = t[0].long() if k in CLASS_KEYS else t
    return out


def train_transform(
    sample: Sample,
    size: int | Sequence[int],
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip: bool = True,
    colour: bool = True,
) -> dict[str, torch.Tensor]:
    """The reference training pipeline (module docstring, steps 1-6)."""
    size = as_size(size)
    sample = random_scale(sample, rng, scale_range)
    sample = random_crop(sample, size, rng, cat_max_ratio)
    if flip:
        sample = random_hflip(sample, rng)
    if colour:
        sample = {**sample, "image": photometric_distortion(sample["image"], rng)}
    sample = {**sample, "image": normalize(sample["image"])}
    sample = add_ignore_regions(pad(sample, size))
    return to_tensors(sample)


def eval_transform(sample: Sample, size: int | Sequence[int]) -> dict[str, torch.Tensor]:
    """Normalise and centre-pad (after fitting into ``size`` when the image is larger)."""
    size = as_size(size)
    h, w = sample["image"].shape[:2]
    if h > size[0] or w > size[1]:
        f = min(size[0] / h, size[1] / w)
        sample = resize_sample(sample, (max(1, int(h * f)), max(1, int(w * f))))
    sample = {**sample, "image": normalize(sample["image"])}
    sample = add_ignore_regions(pad(sample, size))
    return to_tensors(sample)


def sample_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's RNG (reproducible under ``torch.manual_seed``, distinct per worker)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
