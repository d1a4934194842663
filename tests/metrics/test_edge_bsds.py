"""BSDS edge odsF: thinning, one-to-one correspondence within maxDist, split-level pooling, best threshold."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from mtlkit.errors import MtlkitError
from mtlkit.metrics import BSDSEdgeMeter, _edge_bsds, bsds_counts, correspond_count
from mtlkit.metrics._edge_bsds import bsds_split_counts, ods_from_counts
from mtlkit.metrics._thin import thin, thin_many


def shared_data() -> Path:
    env = os.environ.get("MTLKIT_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [p / "shared" / "data" for p in Path(__file__).resolve().parents[2:]]:
        if cand.is_dir():
            return cand
    pytest.skip("real sample data (../shared/data) not available")


def pyedgeeval_module(name: str):
    """A module of the optional pyEdgeEval package, loaded by path (its package init needs OpenCV)."""
    spec = importlib.util.find_spec("pyEdgeEval")
    if spec is None:
        pytest.skip("pyEdgeEval not installed (pip install 'mtlkit[edges]')")
    path = Path(spec.origin).parent / "preprocess" / "thin" / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"_pee_{name}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    if not hasattr(np, "in1d"):
        np.in1d = np.isin  # pyEdgeEval predates numpy 2.4
    return mod


def sample_edges() -> np.ndarray:
    from PIL import Image

    seg = np.array(Image.open(shared_data() / "nyud" / "000464_segm40.png")).astype(int)
    b = np.zeros(seg.shape, bool)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1] |= seg[:-1] != seg[1:]
    return thin(b)


def blurred_prediction(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(gt.astype(float) + 0.3 * ndimage.shift(gt.astype(float), (3, -2)), 2.0)
    return np.clip(p / p.max() + 0.1 * rng.random(p.shape) - 0.05, 0, 1)


# ------------------------------------------------------------------------------------------ thinning


def test_thin_bar_becomes_its_middle_line() -> None:
    bw = np.zeros((7, 16), bool)
    bw[2:5, 2:14] = True  # a 3-pixel-wide bar
    out = thin(bw)
    assert out[3].sum() >= 8 and not out[[0, 1, 5, 6]].any()
    assert (out <= bw).all() and np.array_equal(thin(out), out)


def test_thin_keeps_one_pixel_curves_and_components() -> None:
    rng = np.random.default_rng(0)
    bw = ndimage.gaussian_filter(rng.random((60, 80)), 2) > 0.52
    out = thin(bw)
    assert (out <= bw).all()
    assert ndimage.label(out, np.ones((3, 3)))[1] == ndimage.label(bw, np.ones((3, 3)))[1]
    windows = out[:-1, :-1] & out[1:, :-1] & out[:-1, 1:] & out[1:, 1:]
    assert not windows.any()  # no 2x2 block survives


def test_thin_equals_matlab_bwmorph_port() -> None:
    ref = pyedgeeval_module("bwmorph_thin").bwmorph_thin
    rng = np.random.default_rng(1)
    for sigma, level in ((0.8, 0.5), (2.0, 0.45), (4.0, 0.5)):
        bw = ndimage.gaussian_filter(rng.random((90, 120)), sigma) > level
        assert np.array_equal(thin(bw), ref(bw))


def test_thin_many_equals_thin_map_by_map(monkeypatch) -> None:
    rng = np.random.default_rng(4)
    maps = np.stack([ndimage.gaussian_filter(rng.random((50, 70)), s) > lv
                     for s, lv in ((0.7, 0.5), (2.0, 0.45), (3.0, 0.5), (1.0, 0.9))] + [np.zeros((50, 70), bool)])
    one_by_one = np.stack([thin(m) for m in maps])
    assert np.array_equal(thin_many(maps), one_by_one)
    monkeypatch.setattr("mtlkit.metrics._thin.CHUNK_PIXELS", 500)  # several groups
    assert np.array_equal(thin_many(maps), one_by_one)


# ---------------------------------------------------------------------------------- correspondence


def test_correspondence_distance_limit() -> None:
    gt = np.zeros((100, 100), bool)
    gt[10:30, 10] = True
    # 0.0075 * diag = 1.06 px: a line one pixel away matches fully, two pixels away not at all
    for dx, expected in ((0, 20), (1, 20), (2, 0)):
        pred = np.zeros_like(gt)
        pred[10:30, 10 + dx] = True
        assert correspond_count(pred, gt, 0.0075) == expected
    diag = np.zeros_like(gt)
    diag[11:31, 11] = True  # shifted by (1, 1)
    # rows 11..29 pair horizontally (1 px); row 30 only reaches (29, 10), 1.41 px away: beyond 1.06 px ...
    assert correspond_count(diag, gt, 0.0075) == 19
    assert correspond_count(diag, gt, 0.011) == 20  # ... within 0.011 * diag = 1.56 px (a diagonal chain)


def test_correspondence_is_one_to_one_and_maximum() -> None:
    gt = np.zeros((50, 50), bool)
    pred = np.zeros_like(gt)
    gt[5, 5] = True
    pred[5, 4:7] = True  # three predictions around one ground-truth pixel
    assert correspond_count(pred, gt, 0.02) == 1
    # greedy nearest-first would pair p1-g1 (distance 0) and strand p2 and g2; the maximum pairs both
    gt = np.zeros((100, 100), bool)
    pred = np.zeros_like(gt)
    gt[50, 50] = gt[50, 49] = True  # g1, g2
    pred[50, 50] = pred[50, 51] = True  # p1 (on g1), p2 (next to g1 only)
    assert correspond_count(pred, gt, 0.0075) == 2


def test_correspondence_matches_dense_assignment() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        pred = rng.random((24, 24)) < 0.15
        gt = rng.random((24, 24)) < 0.1
        r = 0.05 * np.hypot(24, 24)
        p, g = np.argwhere(pred), np.argwhere(gt)
        d = np.hypot(*(p[:, None, :] - g[None, :, :]).transpose(2, 0, 1))
        rows, cols = linear_sum_assignment(-(d <= r).astype(float))
        assert correspond_count(pred, gt, 0.05) == int((d[rows, cols] <= r).sum())


def test_counts_match_bsds_cpp_on_real_edges() -> None:
    """Against the BSDS C++ correspondPixels (pyEdgeEval): ours is the exact maximum, CSA at most a hair below."""
    if importlib.util.find_spec("pyEdgeEval") is None:
        pytest.skip("pyEdgeEval not installed (pip install 'mtlkit[edges]')")
    gt = sample_edges()[100:300, 150:400]
    prob = blurred_prediction(gt)
    ours = bsds_counts(prob, gt, np.array([0.3, 0.5, 0.7]), max_dist=0.011)
    cpp = bsds_counts(prob, gt, np.array([0.3, 0.5, 0.7]), max_dist=0.011, backend="pyedgeeval")
    assert np.array_equal(ours[:, [1, 3]], cpp[:, [1, 3]])  # same thinned maps, same ground truth
    assert (ours[:, 0] >= cpp[:, 0]).all()
    assert np.all(ours[:, 0] - cpp[:, 0] <= 0.002 * ours[:, 1] + 2)


# ------------------------------------------------------------------------------------------- meter


def logits(p: np.ndarray) -> torch.Tensor:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return torch.from_numpy(np.log(p / (1 - p))).float()[None, None]


def two_lines(width: int = 60) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((40, width), bool)
    gt[20, 5:-5] = True
    prob = np.zeros(gt.shape)
    prob[gt] = 0.9
    prob[5, 5:-5] = 0.3  # a false edge far from the ground truth
    return prob, gt


def test_meter_best_threshold_on_constructed_maps() -> None:
    prob, gt = two_lines()
    meter = BSDSEdgeMeter(max_dist=0.0075)
    meter.update(logits(prob), torch.from_numpy(gt.astype(np.float32))[None, None])
    out = meter.compute()
    assert out["odsF"] == pytest.approx(100.0)
    assert 0.295 < out["threshold"] < 0.895
    c = meter.state()[0].numpy()
    t = meter.thresholds
    # seism reads floor(255 p) / 255 > t: the 0.3 line is 76/255 = 0.298, the 0.9 line 229/255 = 0.898
    low = t < 0.295
    assert np.all(c[low, 1] == 2 * gt.sum()) and np.all(c[low, 0] == gt.sum())  # P = 0.5, R = 1
    assert np.all(c[(t > 0.3) & (t < 0.895), 1] == gt.sum()) and np.all(c[t >= 0.9, 1] == 0)
    plain = BSDSEdgeMeter(max_dist=0.0075, quantize=False)  # prob >= t
    plain.update(logits(prob), torch.from_numpy(gt.astype(np.float32))[None, None])
    c = plain.state()[0].numpy()
    assert np.all(c[t < 0.295, 1] == 2 * gt.sum()) and np.all(c[(t > 0.305) & (t < 0.895), 1] == gt.sum())


def test_meter_pools_counts_over_the_split() -> None:
    prob, gt = two_lines()
    meter = BSDSEdgeMeter()
    target = torch.from_numpy(gt.astype(np.float32))[None, None]
    meter.update(logits(np.where(gt, 0.9, 0.0)), target)  # perfect image
    meter.update(logits(np.zeros_like(prob)), target)  # nothing predicted
    # pooled: P = 1, R = 0.5 -> F = 2/3 (a per-image average would give 0.5)
    assert meter.compute()["odsF"] == pytest.approx(200 / 3)


def test_meter_ignores_padding_and_uses_the_original_diagonal() -> None:
    prob, gt = two_lines()
    shifted = np.zeros_like(gt)
    shifted[21, 5:-5] = True  # one pixel off the ground truth
    plain = BSDSEdgeMeter(max_dist=0.02)
    plain.update(logits(np.where(shifted, 0.9, 0.0)), torch.from_numpy(gt.astype(np.float32))[None, None])
    padded_gt = np.full((80, 100), 255.0)
    padded_gt[20:60, 20:80] = gt
    padded_p = np.zeros((80, 100))
    padded_p[20:60, 20:80] = np.where(shifted, 0.9, 0.0)
    padded_p[0, :] = 0.95  # predictions on padding do not count
    padded = BSDSEdgeMeter(max_dist=0.02)
    padded.update(logits(padded_p), torch.from_numpy(padded_gt).float()[None, None])
    assert padded.compute() == plain.compute()
    assert plain.compute()["odsF"] == pytest.approx(100.0)  # 0.02 * 72 = 1.44 px reaches the shift


def test_vectorised_thresholds_equal_one_threshold_at_a_time() -> None:
    """bsds_counts binarises and thins all thresholds at once and reuses repeated maps: same counts as the
    protocol written out per threshold."""
    rng = np.random.default_rng(5)
    gt = thin(ndimage.gaussian_filter(rng.random((60, 80)), 3) > 0.5) & (rng.random((60, 80)) < 0.9)
    prob = np.clip(ndimage.gaussian_filter(gt.astype(float), 1.5) * 3 + 0.2 * rng.random(gt.shape) - 0.1, 0, 1)
    t = np.array([0.01, 0.02, 0.1, 0.1, 0.3, 0.05, 0.5, 0.9, 0.99])  # unsorted, repeated, empty maps at the top
    q = np.floor(255 * prob) / 255
    expected = []
    for x in t:
        m = thin(q > x)
        k = correspond_count(m, gt, 0.02)
        expected.append((k, m.sum(), k, gt.sum()))
    assert np.array_equal(bsds_counts(prob, gt, t, max_dist=0.02), np.array(expected, dtype=float))


def split_images(n: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A handful of differently shaped images: blurred-and-shifted ground truth plus noise, or near uniform."""
    rng = np.random.default_rng(7)
    probs, gts = [], []
    for i in range(n):
        shape = (40 + 7 * i, 64 - 3 * i)
        gt = thin(ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.5)
        if i % 2:
            p = np.clip(0.5 + 0.05 * rng.standard_normal(shape), 0, 1)
        else:
            p = np.clip(ndimage.gaussian_filter(np.roll(gt, 1, 1).astype(float), 1.0) * 4
                        + 0.1 * rng.random(shape) - 0.05, 0, 1)
        probs.append(p)
        gts.append(gt)
    return probs, gts


def test_split_counts_in_worker_processes_equal_serial_bit_for_bit() -> None:
    probs, gts = split_images()
    serial = bsds_split_counts(probs, gts, max_dist=0.011, workers=0)
    per_image = sum(bsds_counts(p, g, max_dist=0.011) for p, g in zip(probs, gts, strict=True))
    assert np.array_equal(serial, per_image)
    parallel = bsds_split_counts(iter(probs), iter(gts), max_dist=0.011, workers=2)  # generators work too
    assert np.array_equal(parallel, serial)
    t = _edge_bsds.SEISM_THRESHOLDS
    assert ods_from_counts(parallel, t) == ods_from_counts(serial, t)


def test_meter_auto_workers_pools_only_large_images(monkeypatch) -> None:
    probs, gts = split_images(3)
    batches = [(logits(p), torch.from_numpy(g.astype(np.float32))[None, None]) for p, g in zip(probs, gts, strict=True)]
    serial = BSDSEdgeMeter(max_dist=0.011, workers=0)
    small = BSDSEdgeMeter(max_dist=0.011)  # auto: these images are far below AUTO_MIN_PIXELS -> in-process
    for b in batches:
        serial.update(*b)
        small.update(*b)
    assert small._pool is None and torch.equal(small.state()[0], serial.state()[0])

    def no_pool(*_):
        raise AssertionError("a worker pool was started for small images")

    with monkeypatch.context() as m:
        m.setattr(_edge_bsds, "_ImagePool", no_pool)
        auto = bsds_split_counts(probs, gts, max_dist=0.011)  # auto, small images: in-process
    assert torch.equal(torch.from_numpy(auto), serial.state()[0])
    monkeypatch.setattr(_edge_bsds, "AUTO_MIN_PIXELS", 100)
    monkeypatch.setattr(_edge_bsds, "default_workers", lambda: 2)
    pooled = BSDSEdgeMeter(max_dist=0.011)
    for b in batches:
        pooled.update(*b)
    assert pooled._pool is not None and pooled._pool.workers == 2
    assert torch.equal(pooled.state()[0], serial.state()[0]) and pooled.compute() == serial.compute()


def test_workers_must_be_a_count() -> None:
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(MtlkitError, match="workers must be an integer >= 0"):
            BSDSEdgeMeter(workers=bad)
    with pytest.raises(MtlkitError, match="workers must be an integer >= 0"):
        bsds_split_counts([], [], workers=-2)
    assert _edge_bsds.default_workers() <= _edge_bsds.AUTO_MAX_WORKERS


def test_quantized_thresholding_follows_seism() -> None:
    gt = np.zeros((20, 30), bool)
    gt[10, 3:-3] = True
    prob = np.where(gt, 0.5, 0.0)  # seism reads floor(127.5) / 255 = 0.498: not above 0.5; 0.5 >= 0.5 is
    t = np.array([0.49, 0.5])
    assert bsds_counts(prob, gt, t)[:, 1].tolist() == [gt.sum(), 0]
    assert bsds_counts(prob, gt, t, quantize=False)[:, 1].tolist() == [gt.sum(), gt.sum()]
