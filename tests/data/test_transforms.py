"""ATRC training / evaluation transforms: scaling, crop, flip, colour jitter, padding, ignore regions."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkit.data.transforms import (
    add_ignore_regions,
    eval_transform,
    hsv_to_rgb_u8,
    pad,
    photometric_distortion,
    random_crop,
    random_hflip,
    random_scale,
    resize,
    rgb_to_hsv_u8,
    train_transform,
)


def make_sample(h: int = 20, w: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    seg = np.zeros((h, w, 1), np.float32)
    seg[:, w // 2:] = 3
    seg[: h // 4] = 255
    depth = rng.uniform(1, 5, (h, w, 1)).astype(np.float32)
    depth[0, 0] = 0
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return {"image": rng.uniform(0, 255, (h, w, 3)).astype(np.float32), "semseg": seg, "depth": depth,
            "normals": n, "edge": (rng.random((h, w, 1)) > 0.9).astype(np.float32)}


class FixedRng:
    """A stand-in generator returning chosen values (uniform -> scale, random -> flip decision)."""

    def __init__(self, uniform: float = 1.0, random: float = 0.0, integers: int = 0) -> None:
        self.u, self.r, self.i = uniform, random, integers

    def uniform(self, *_):
        return self.u

    def random(self):
        return self.r

    def integers(self, *_):
        return self.i


def test_random_scale_divides_depth_and_keeps_labels_discrete() -> None:
    s = make_sample()
    out = random_scale(s, FixedRng(uniform=2.0))
    assert out["image"].shape == (40, 60, 3) and out["semseg"].shape == (40, 60, 1)
    assert set(np.unique(out["semseg"])) == {0.0, 3.0, 255.0}
    # nearest neighbour: pixel (2y, 2x) of the zoomed map is pixel (y, x), depth divided by the zoom
    assert np.allclose(out["depth"][::2, ::2], s["depth"] / 2.0)
    assert np.array_equal(out["normals"][::2, ::2], s["normals"])
    shrunk = random_scale(s, FixedRng(uniform=0.5))
    assert shrunk["depth"].shape == (10, 15, 1) and np.allclose(shrunk["depth"], s["depth"][::2, ::2] * 2)


def test_flip_negates_normal_x_only() -> None:
    s = make_sample()
    out = random_hflip(s, FixedRng(random=0.1))
    assert np.array_equal(out["semseg"], s["semseg"][:, ::-1])
    assert np.array_equal(out["normals"][..., 0], -s["normals"][:, ::-1, 0])
    assert np.array_equal(out["normals"][..., 1:], s["normals"][:, ::-1, 1:])
    assert random_hflip(s, FixedRng(random=0.9)) is s


def test_crop_redraws_while_one_class_dominates() -> None:
    s = make_sample(20, 40)
    calls = iter([0, 0, 0, 10])  # first crop: the left half (only class 0), then the centre (0 and 3)

    class Seq(FixedRng):
        def integers(self, lo, hi=None):
            return next(calls)

    out = random_crop(s, (10, 20), Seq())
    labels = set(np.unique(out["semseg"])) - {255.0}
    assert labels == {0.0, 3.0}
    small = random_crop(make_sample(8, 8), (10, 20), FixedRng())
    assert small["image"].shape == (8, 8, 3)  # smaller images stay, padding comes later


def test_pad_values_and_centering() -> None:
    s = make_sample(10, 10)
    out = pad(s, (14, 16))
    assert out["semseg"].shape == (14, 16, 1)
    assert (out["semseg"][:2] == 255).all() and (out["depth"][:2] == 0).all() and (out["image"][:, :3] == 0).all()
    assert np.array_equal(out["depth"][2:12, 3:13], s["depth"])


def test_parts_without_annotation_are_ignored() -> None:
    parts = np.zeros((4, 4, 1), np.float32)
    parts[0] = 255
    assert (add_ignore_regions({"parts": parts})["parts"] == 255).all()
    parts[2, 2] = 3
    assert add_ignore_regions({"parts": parts})["parts"][2, 2, 0] == 3


def test_hsv_conversions_follow_opencv() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [128, 64, 32]]], np.uint8)
    hsv = rgb_to_hsv_u8(rgb)
    # OpenCV 8-bit: red 0, green 60, blue 120 (degrees / 2); S = 255 (max - min) / max; V = max
    assert hsv[0, :3].tolist() == [[0, 255, 255], [60, 255, 255], [120, 255, 255]]
    assert hsv[0, 3].tolist() == [0, 0, 255] and hsv[0, 4].tolist() == [0, 0, 0]
    assert hsv[0, 5].tolist() == [10, 191, 128]  # cv2.cvtColor gives (10, 191, 128)
    colours = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = hsv_to_rgb_u8(rgb_to_hsv_u8(colours)).astype(int)
    # hue has 180 levels in 8 bits: a round trip is off by up to ~4% of V, as in OpenCV
    assert np.abs(back - colours).max() <= 8 and np.abs(back - colours).mean() < 1.0


def test_photometric_distortion_changes_only_colours() -> None:
    img = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    out = photometric_distortion(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    draws = iter([0.1, 0.9, 0.9, 0.9, 0.9])  # brightness yes; contrast last; no saturation, hue, contrast

    class Seq(FixedRng):
        def random(self):
            return next(draws)

    out = photometric_distortion(img, Seq(uniform=10.0))
    assert np.array_equal(out, np.clip(img.astype(np.uint8).astype(np.float32) + 10, 0, 255).astype(np.uint8))


def test_train_and_eval_pipelines_produce_the_contract() -> None:
    s = make_sample(20, 30)
    out = train_transform(s, (16, 24), np.random.default_rng(0))
    assert out["image"].shape == (3, 16, 24) and out["semseg"].shape == (16, 24) and out["depth"].shape == (1, 16, 24)
    ev = eval_transform(s, 40)
    assert ev["semseg"].shape == (40, 40) and (ev["semseg"][:10] == 255).all()
    fit = eval_transform(s, (10, 30))  # larger than the target size: shrunk to fit, then padded
    assert fit["image"].shape == (3, 10, 30) and (fit["semseg"][:, :7] == 255).all()


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bilinear-aa", "nearest-exact"])
def test_resize_modes(mode: str) -> None:
    a = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    out = resize(a, (8, 8), mode)
    assert out.shape == (8, 8, 1)
    if mode.startswith("nearest"):
        assert set(np.unique(out)) <= set(np.unique(a))
