"""Synthetic scenes: geometry of the labels, dataset contract, caching, imbalance knobs, preview."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from mtlkit.data import DATASETS, build_dataset
from mtlkit.data.synthetic import (
    CLASS_NAMES,
    OBJECT_CLASSES,
    Camera,
    Room,
    Scene,
    SceneObject,
    _generate,
    camera_basis,
    preview,
    render_scene,
    sample_scene,
)
from mtlkit.errors import MtlkitError

SMALL = {"image_size": 32, "num_train": 8, "num_val": 4, "num_test": 4}
FLOOR, WALL = CLASS_NAMES.index("floor"), CLASS_NAMES.index("wall")


def _cam_rays(camera: Camera, h: int, w: int) -> np.ndarray:
    """Camera-frame ray directions (H, W, 3), written out independently of the renderer."""
    f = (w / 2) / math.tan(math.radians(camera.hfov) / 2)
    u = (np.arange(w) + 0.5 - w / 2) / f
    v = (np.arange(h) + 0.5 - h / 2) / f
    return np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((h, w))), axis=-1)


def _random_scenes(n: int = 12) -> list[Scene]:
    return [sample_scene(np.random.default_rng([123, i])) for i in range(n)]


def _plain_room(camera: Camera, objects=(), ceiling=True) -> Scene:
    return Scene(
        room=Room(size=(6.0, 6.0), height=3.0, ceiling=ceiling), camera=camera, objects=list(objects)
    )


# ---------------------------------------------------------------- geometry of the labels


def test_sphere_occludes_wall_and_depth_is_z_depth():
    cam = Camera(position=(-2.0, 0.0, 1.0), yaw=0.0, pitch=0.0, hfov=60.0)
    sphere = SceneObject("sphere", 0.0, 0.0, radius=1.0)  # centre at camera height, 2 m ahead
    with_sphere = render_scene(_plain_room(cam, [sphere]), 33)
    empty = render_scene(_plain_room(cam), 33)
    on_sphere = with_sphere["semseg"] == CLASS_NAMES.index("sphere")
    assert 50 < on_sphere.sum() < 33 * 33
    # what the sphere hides (wall and floor) lies behind it
    assert np.all(empty["depth"][on_sphere] > with_sphere["depth"][on_sphere] + 0.1)
    assert set(np.unique(empty["semseg"][on_sphere])) <= {0, 1, 2}  # floor, wall, ceiling
    # the optical axis (centre pixel of an odd-sized image) hits the sphere's front at 2 - 1 = 1 m
    assert with_sphere["depth"][16, 16] == pytest.approx(1.0, abs=1e-4)
    assert with_sphere["normals"][16, 16] == pytest.approx([0.0, 0.0, -1.0], abs=1e-6)
    # the wall straight ahead: z-depth is the same across the wall (not the ray length)
    assert empty["depth"][10, 5] == pytest.approx(5.0, abs=1e-4)
    assert empty["depth"][10, 28] == pytest.approx(5.0, abs=1e-4)
    # the silhouette: every sphere pixel next to a background pixel is an edge, and wall beyond it is deeper
    h, w = on_sphere.shape
    for i in range(h):
        for j in range(w - 1):
            if on_sphere[i, j] and not on_sphere[i, j + 1]:
                assert with_sphere["edge"][i, j] == 1
                assert with_sphere["depth"][i, j + 1] > with_sphere["depth"][i, j]


@pytest.mark.parametrize("yaw", [0.0, 35.0, -120.0])
def test_floor_depth_matches_ray_plane_intersection(yaw):
    height, pitch = 1.5, -30.0
    cam = Camera(position=(0.3, -0.2, height), yaw=yaw, pitch=pitch, hfov=60.0)
    out = render_scene(_plain_room(cam), (24, 40))
    rays = _cam_rays(cam, 24, 40)
    th = math.radians(pitch)
    # world z of a camera-frame ray (x, y, 1): the right axis is horizontal, down has z = -cos(pitch)
    dz = -rays[..., 1] * math.cos(th) + math.sin(th)
    floor = out["semseg"] == FLOOR
    assert floor.sum() > 200
    expected = height / -dz[floor]
    np.testing.assert_allclose(out["depth"][floor], expected, rtol=1e-5)
    # the floor normal is world-up, seen from a camera pitched down by 30 degrees
    up_cam = np.array([0.0, -math.cos(th), math.sin(th)])
    np.testing.assert_allclose(out["normals"][floor], np.broadcast_to(up_cam, (floor.sum(), 3)), atol=1e-6)


def test_normals_unit_and_facing_the_camera():
    for scene in _random_scenes():
        out = render_scene(scene, 32)
        valid = out["semseg"] != 255
        n = out["normals"]
        np.testing.assert_allclose(np.linalg.norm(n[valid], axis=-1), 1.0, atol=1e-5)
        assert np.all(n[~valid] == 0)
        facing = np.sum(n * _cam_rays(scene.camera, 32, 32), axis=-1)
        assert np.all(facing[valid] < 0)
        assert np.all(out["depth"][valid] > 0) and np.all(out["depth"][~valid] == 0)


def test_stored_labels_match_the_renderer_and_normals_still_face_the_camera(tmp_path):
    ds = build_dataset("synthetic-nyud", "train", cache_dir=tmp_path, **SMALL)
    for i in range(len(ds)):
        scene = ds.scene(i)
        ref, lab = render_scene(scene, 32), ds.labels(i)
        np.testing.assert_array_equal(ref["semseg"], lab["semseg"])
        np.testing.assert_array_equal(ref["image"], lab["image"])
        np.testing.assert_allclose(lab["depth"], ref["depth"], atol=5e-4)
        valid = lab["semseg"] != 255
        n = lab["normals"]
        np.testing.assert_allclose(np.linalg.norm(n[valid], axis=-1), 1.0, atol=1e-5)
        assert np.all(np.sum(n * ref["normals"], axis=-1)[valid] > np.cos(np.radians(2.0)))
        assert np.all(np.sum(n * _cam_rays(scene.camera, 32, 32), axis=-1)[valid] < 0)


def test_saliency_and_parts_follow_semseg_and_normals():
    for scene in _random_scenes():
        out = render_scene(scene, 32)
        sem, parts, sal = out["semseg"], out["parts"], out["saliency"]
        valid = sem != 255
        np.testing.assert_array_equal(sal[valid], np.isin(sem[valid], OBJECT_CLASSES))
        assert np.all(sal[~valid] == 255) and np.all(parts[~valid] == 255)
        obj = np.isin(sem, OBJECT_CLASSES)
        assert np.all(parts[valid & ~obj] == 0) and np.all(parts[obj] > 0)
        nz = (out["normals"] @ camera_basis(scene.camera).T)[..., 2]  # world-frame z of the normal
        assert np.all(nz[parts == 1] > 0.7)
        assert np.all(np.abs(nz[parts == 2]) <= 0.7)
        assert np.all(nz[parts == 3] < -0.7)


def test_box_top_is_a_top_part():
    cam = Camera(position=(-2.5, 0.0, 2.0), yaw=0.0, pitch=-35.0, hfov=60.0)
    box = SceneObject("box", 0.0, 0.0, half_size=(0.6, 0.4), height=0.6, yaw=30.0)
    out = render_scene(_plain_room(cam, [box]), 48)
    on_box = out["semseg"] == CLASS_NAMES.index("box")
    assert (out["parts"][on_box] == 1).sum() > 20 and (out["parts"][on_box] == 2).sum() > 20


def test_edges_cover_semantic_boundaries_and_nothing_else():
    for scene in _random_scenes():
        out = render_scene(scene, 32)
        sem, edge, inst = out["semseg"], out["edge"], out["instance"]
        valid = sem != 255
        assert np.all(edge[~valid] == 255) and set(np.unique(edge[valid])) <= {0, 1}
        is_edge = edge == 1
        # every change of class between valid 4-neighbours has an edge on one side
        for a, b in (
            ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
            ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
        ):
            change = valid[a] & valid[b] & (sem[a] != sem[b])
            assert np.all(is_edge[a][change] | is_edge[b][change])
        # every edge pixel touches another class, another object or an invalid pixel
        pad_s = np.pad(sem.astype(int), 1, constant_values=-1)
        pad_i = np.pad(inst.astype(int), 1, constant_values=-2)
        differs = np.zeros_like(is_edge)
        for di, dj in ((0, 1), (1, 0), (1, 2), (2, 1)):
            s_n = pad_s[di : di + 32, dj : dj + 32]
            i_n = pad_i[di : di + 32, dj : dj + 32]
            inside = s_n != -1
            differs |= inside & ((s_n != sem) | (i_n != inst))
        assert np.all(differs[is_edge])


def test_no_edges_inside_a_flat_wall():
    cam = Camera(position=(-2.0, 0.0, 1.5), yaw=0.0, pitch=0.0, hfov=50.0)
    out = render_scene(_plain_room(cam), 32)
    wall_rows = np.all(out["semseg"] == WALL, axis=1)
    assert wall_rows.sum() > 8
    assert np.all(out["edge"][wall_rows] == 0)
    assert out["edge"].sum() > 0  # the floor line


def test_escaping_rays_are_ignored():
    cam = Camera(position=(0.0, 0.0, 1.5), yaw=0.0, pitch=30.0, hfov=70.0)
    out = render_scene(_plain_room(cam, ceiling=False), 32)
    escaped = out["semseg"] == 255
    assert escaped.sum() > 0
    assert np.all(out["depth"][escaped] == 0) and np.all(out["normals"][escaped] == 0)
    assert np.all(out["edge"][escaped] == 255) and np.all(out["saliency"][escaped] == 255)


# ---------------------------------------------------------------- dataset contract


def test_registered_presets_and_sample_contract(tmp_path):
    assert "synthetic-nyud" in DATASETS and "synthetic-pascal" in DATASETS
    ds = build_dataset("synthetic-pascal", "val", cache_dir=tmp_path, **{**SMALL, "image_size": (24, 40)})
    assert len(ds) == 4 and ds.name == "synthetic-pascal"
    assert ds.task_names == ("semseg", "parts", "saliency", "normals", "edge")
    assert ds.task_params() == {
        "semseg": {"num_classes": 7},
        "parts": {"num_classes": 4},
        "saliency": {},
        "normals": {},
        "edge": {"max_dist": 0.0075},
    }
    s = ds[1]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 24, 40)
    assert s["semseg"].dtype == torch.int64 and s["semseg"].shape == (24, 40)
    assert s["parts"].dtype == torch.int64
    for key, shape in (("saliency", (1, 24, 40)), ("edge", (1, 24, 40)), ("normals", (3, 24, 40))):
        assert s[key].dtype == torch.float32 and s[key].shape == shape
    assert -3 < float(s["image"].min()) and float(s["image"].max()) < 3
    n = s["normals"]
    valid = n.abs().sum(0) > 0
    assert torch.allclose(n.norm(dim=0)[valid], torch.ones(()), atol=1e-5)
    nyud = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    d = nyud[0]
    assert set(d) == {"image", "semseg", "depth", "normals", "edge"}
    assert d["depth"].shape == (1, 32, 32) and d["depth"].dtype == torch.float32
    assert nyud.task_params()["edge"] == {"max_dist": 0.011}


def test_task_subsets_and_errors(tmp_path):
    ds = build_dataset("synthetic-nyud", "test", tasks=["edge", "semseg"], cache_dir=tmp_path, **SMALL)
    assert ds.task_names == ("semseg", "edge") and set(ds[0]) == {"image", "semseg", "edge"}
    assert set(ds.task_params()) == {"semseg", "edge"}
    opts = {**SMALL, "image_size": "32x32", "root": "/nowhere", "cache_dir": tmp_path}
    same = build_dataset("synthetic-nyud", "test", tasks="edge,semseg", **opts)
    assert same.task_names == ds.task_names and torch.equal(same[0]["edge"], ds[0]["edge"])
    with pytest.raises(MtlkitError, match="parts.*valid tasks: semseg, depth, normals, edge"):
        build_dataset("synthetic-nyud", "test", tasks=["semseg", "parts"], cache_dir=tmp_path, **SMALL)
    with pytest.raises(MtlkitError, match="no option 'colour'"):
        build_dataset("synthetic-nyud", "test", colour=True, cache_dir=tmp_path)
    with pytest.raises(MtlkitError, match="label_noise.*'depth'"):
        build_dataset("synthetic-pascal", "train", label_noise={"depth": {"std": 0.1}}, cache_dir=tmp_path)
    with pytest.raises(MtlkitError, match="train_fraction"):
        build_dataset("synthetic-pascal", "train", train_fraction=0.0, cache_dir=tmp_path)
    with pytest.raises(MtlkitError, match="image_size"):
        build_dataset("synthetic-pascal", "train", image_size=4, cache_dir=tmp_path)


# ---------------------------------------------------------------- determinism and cache


def _all_arrays(ds) -> dict[str, np.ndarray]:
    return {
        k: np.stack([ds.labels(i)[k] for i in range(len(ds))])
        for k in ("image", "semseg", "depth", "normals")
    }


def test_determinism(tmp_path):
    a = build_dataset("synthetic-nyud", "train", seed=3, cache_dir=tmp_path / "a", **SMALL)
    b = build_dataset("synthetic-nyud", "train", seed=3, cache_dir=tmp_path / "b", **SMALL)
    c = build_dataset("synthetic-nyud", "train", seed=4, cache_dir=tmp_path / "b", **SMALL)
    va = build_dataset("synthetic-nyud", "val", seed=3, cache_dir=tmp_path / "b", **SMALL)
    for k, arr in _all_arrays(a).items():
        np.testing.assert_array_equal(arr, _all_arrays(b)[k])
    assert not np.array_equal(_all_arrays(a)["image"], _all_arrays(c)["image"])
    assert not np.array_equal(_all_arrays(a)["image"][:4], _all_arrays(va)["image"])
    # image i does not depend on the split size
    bigger = build_dataset(
        "synthetic-nyud", "train", seed=3, cache_dir=tmp_path / "b", **{**SMALL, "num_train": 11}
    )
    np.testing.assert_array_equal(_all_arrays(bigger)["depth"][:8], _all_arrays(a)["depth"])


def test_parallel_generation_matches_serial(monkeypatch):
    serial = _generate.render_range(0, "val", 0, 6, (16, 16))
    monkeypatch.setenv("MTLKIT_WORKERS", "2")
    parallel = _generate.generate_split("val", 6, (16, 16), 0)
    for k in _generate.ARRAY_KEYS:
        np.testing.assert_array_equal(serial[k], parallel[k])


def test_cache_hit_does_not_render(tmp_path, monkeypatch):
    first = build_dataset("synthetic-nyud", "train", cache_dir=tmp_path, **SMALL)
    files = list((tmp_path / "synthetic").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    def boom(*args, **kwargs):
        raise AssertionError("rendered although cached")

    monkeypatch.setattr(_generate, "render_scene", boom)
    again = build_dataset("synthetic-nyud", "train", cache_dir=tmp_path, **SMALL)
    other_preset = build_dataset("synthetic-pascal", "train", cache_dir=tmp_path, **SMALL)
    for k, arr in _all_arrays(first).items():
        np.testing.assert_array_equal(arr, _all_arrays(again)[k])
        np.testing.assert_array_equal(arr, _all_arrays(other_preset)[k])
    assert list((tmp_path / "synthetic").iterdir()) == files  # no temp files left behind
    with pytest.raises(AssertionError, match="rendered"):  # another configuration is not cached
        build_dataset("synthetic-nyud", "train", cache_dir=tmp_path, **{**SMALL, "num_train": 9})


def test_cache_location_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLKIT_CACHE", str(tmp_path / "env"))
    build_dataset("synthetic-nyud", "val", **SMALL)
    assert len(os.listdir(tmp_path / "env" / "synthetic")) == 1


def test_corrupt_cache_file_is_regenerated(tmp_path):
    first = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    (path,) = (tmp_path / "synthetic").iterdir()
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="corrupt synthetic-data cache file"):
        again = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    np.testing.assert_array_equal(_all_arrays(first)["image"], _all_arrays(again)["image"])


# ---------------------------------------------------------------- imbalance knobs


def test_semseg_label_noise_on_chosen_classes_of_train_only(tmp_path):
    opts = {**SMALL, "num_train": 16, "cache_dir": tmp_path}
    noise = {"semseg": {"fraction": 0.3, "classes": [0, 1]}}
    clean = build_dataset("synthetic-nyud", "train", **opts)
    noisy = build_dataset("synthetic-nyud", "train", label_noise=noise, **opts)
    before = torch.stack([clean[i]["semseg"] for i in range(len(clean))])
    after = torch.stack([noisy[i]["semseg"] for i in range(len(noisy))])
    chosen = (before == 0) | (before == 1)
    changed = before != after
    assert chosen.sum() > 1000
    assert 0.25 < changed[chosen].float().mean() < 0.35
    assert not changed[~chosen].any()
    assert after[chosen].max() < 7
    # the same noise every time the sample is read; other tasks and other splits untouched
    assert torch.equal(noisy[0]["semseg"], noisy[0]["semseg"])
    assert torch.equal(clean[0]["depth"], noisy[0]["depth"])
    val_noisy = build_dataset("synthetic-nyud", "val", label_noise=noise, **opts)
    val_clean = build_dataset("synthetic-nyud", "val", **opts)
    assert torch.equal(val_noisy[0]["semseg"], val_clean[0]["semseg"])


def test_depth_and_normals_noise(tmp_path):
    opts = {**SMALL, "cache_dir": tmp_path}
    clean = build_dataset("synthetic-nyud", "train", **opts)
    noisy = build_dataset(
        "synthetic-nyud", "train", label_noise={"depth": {"std": 0.1}, "normals": {"std": 0.1}}, **opts
    )
    d0, d1 = clean[2]["depth"], noisy[2]["depth"]
    valid = d0 > 0
    assert torch.equal(d1 > 0, valid)
    assert 0.08 < float((d1 - d0)[valid].std()) < 0.12
    n1 = noisy[2]["normals"]
    valid_n = n1.abs().sum(0) > 0
    assert torch.allclose(n1.norm(dim=0)[valid_n], torch.ones(()), atol=1e-5)
    assert float((n1 - clean[2]["normals"]).abs().mean()) > 0.01


def test_train_fraction_subsamples_train_only(tmp_path):
    opts = {**SMALL, "num_train": 10, "cache_dir": tmp_path}
    half = build_dataset("synthetic-nyud", "train", train_fraction=0.5, **opts)
    fifth = build_dataset("synthetic-nyud", "train", train_fraction=0.2, **opts)
    assert len(half) == 5 and len(fifth) == 2
    assert set(fifth.indices) <= set(half.indices)
    full = build_dataset("synthetic-nyud", "train", **opts)
    j = int(half.indices[3])
    assert torch.equal(half[3]["image"], full[j]["image"])
    assert len(build_dataset("synthetic-nyud", "val", train_fraction=0.5, **opts)) == SMALL["num_val"]


# ---------------------------------------------------------------- preview


def test_preview_writes_png(tmp_path):
    out = preview("synthetic-pascal", tmp_path / "grid.png", n=2, cache_dir=tmp_path, **SMALL)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
