"""Taskonomy and Omnidata Replica loaders on Omnidata trees built from the real sample views; ``data check``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.data import build_dataset, check_dataset, denormalize_image
from mtlkit.data.taskonomy import TASKONOMY_TASKS, omnidata_valid_mask
from mtlkit.errors import MtlkitError
from mtlkit.tasks import make_task

VIEW = "point_202_view_5"
BUILDINGS = {"train": "hanson", "val": "wiconisco", "test": "ihlen"}  # from the tiny split CSV


def build_taskonomy(shared: Path, root: Path, nested: bool = False) -> None:
    for b in BUILDINGS.values():
        for task in ("rgb", *TASKONOMY_TASKS):
            src = shared / "taskonomy" / f"{VIEW}_domain_{task}.png"
            if not src.is_file():  # the Taskonomy sample has no unsupervised segmentations: use Replica's
                src = shared / "replica" / f"point_47_view_25_domain_{task}.png"
            folder = root / task / ("taskonomy" if nested else "") / b
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / f"{VIEW}_domain_{task}.png")
    # the tiny split restricted to the three buildings of the tree (its \r line ends kept)
    lines = (shared / "taskonomy" / "taskonomy_train_val_test_tiny.csv").read_bytes().split(b"\r")
    keep = [ln for ln in lines if ln.split(b",")[0].decode() in ("id", *BUILDINGS.values())]
    (root / "train_val_test_tiny.csv").write_bytes(b"\r".join(keep))


@pytest.fixture
def taskonomy_root(shared_data: Path, tmp_path: Path) -> Path:
    build_taskonomy(shared_data, tmp_path / "taskonomy")
    return tmp_path / "taskonomy"


def pil_resize_crop(path: Path, size: int = 256, crop: int = 224) -> np.ndarray:
    """The reference geometry done with PIL: resize (NEAREST for labels) and centre crop."""
    im = Image.open(path)
    im = im.resize((size, size), Image.NEAREST)
    x = (size - crop + 1) // 2
    return np.array(im.crop((x, x, x + crop, x + crop))).astype(np.float64)


def test_eval_targets_follow_the_reference_normalisation(taskonomy_root: Path, shared_data: Path) -> None:
    ds = build_dataset("taskonomy", "val", root=taskonomy_root)
    assert len(ds) == 1 and ds.task_names == TASKONOMY_TASKS
    s = ds[0]
    assert s["image"].shape == (3, 224, 224)
    shapes = {t: s[t].shape[0] for t in TASKONOMY_TASKS}
    assert shapes == {t: make_task(t).channels for t in TASKONOMY_TASKS}
    path = taskonomy_root / "{}" / BUILDINGS["val"] / f"{VIEW}_domain_{{}}.png"
    for task in ("depth_euclidean", "depth_zbuffer"):
        raw = pil_resize_crop(Path(str(path).format(task, task)))
        expected = np.where(raw == 65535, 0.0, np.log1p(raw) / np.log(2.0**16))
        assert (raw == 65535).any() and np.allclose(s[task][0].numpy(), expected, atol=1e-6)
        valid = s[task][0][raw != 65535]
        assert valid.min() > 0.5 and valid.max() < 1.0  # 607 .. 65534 -> (0.58, 1)
    raw = pil_resize_crop(Path(str(path).format("edge_texture", "edge_texture")))
    assert np.allclose(s["edge_texture"][0].numpy(), np.clip(raw, 0, 5242.88) / 5242.88 * 2 - 1, atol=1e-6)
    raw = pil_resize_crop(Path(str(path).format("keypoints2d", "keypoints2d")))
    assert np.allclose(s["keypoints2d"][0].numpy(), np.clip(raw, 0, 327.68) / 327.68 * 2 - 1, atol=1e-6)
    raw = pil_resize_crop(Path(str(path).format("normal", "normal")))
    assert np.allclose(s["normal"].permute(1, 2, 0).numpy(), raw / 255 * 2 - 1, atol=1e-6)
    raw = pil_resize_crop(Path(str(path).format("principal_curvature", "principal_curvature")))
    curv = (raw[..., :2] - [123.572, 120.1]) / [31.922, 21.658]
    assert np.allclose(s["principal_curvature"].permute(1, 2, 0).numpy(), curv, atol=1e-5)
    raw = pil_resize_crop(Path(str(path).format("reshading", "reshading")))
    assert np.allclose(s["reshading"][0].numpy(), raw[..., 0] / 255 * 2 - 1, atol=1e-6)
    for task in ("segment_unsup2d", "segment_unsup25d", "keypoints3d", "edge_texture", "normal", "reshading"):
        assert s[task].min() >= -1 and s[task].max() <= 1, task
    # occlusion edges: unclipped rescale then a sigma-4 blur; blurred values stay within the raw range
    raw = pil_resize_crop(Path(str(path).format("edge_occlusion", "edge_occlusion"))) / 409.6 * 2 - 1
    eo = s["edge_occlusion"][0].numpy()
    assert raw.min() - 1e-6 <= eo.min() and eo.max() <= raw.max() and eo.std() < raw.std()
    # image: bilinear (antialiased) resize of the rgb, centre crop, ImageNet normalisation
    rgb = Image.open(str(path).format("rgb", "rgb")).convert("RGB").resize((256, 256), Image.BILINEAR)
    rgb = np.array(rgb.crop((16, 16, 240, 240))).astype(np.float64)
    got = denormalize_image(s["image"]).permute(1, 2, 0).numpy() * 255
    assert np.abs(got - rgb).mean() < 1.0


def test_training_crops_and_flips_keep_labels_aligned(taskonomy_root: Path) -> None:
    ds = build_dataset("taskonomy", "train", root=taskonomy_root, tasks=["normal", "depth_zbuffer"])
    ref = build_dataset("taskonomy", "train", root=taskonomy_root, tasks=["normal", "depth_zbuffer"],
                        image_size=256, augment=False)[0]
    flips = set()
    for seed in range(6):
        torch.manual_seed(seed)
        s = ds[0]
        depth = s["depth_zbuffer"][0]
        found = None
        for flip in (False, True):
            full = ref["depth_zbuffer"][0].flip(-1) if flip else ref["depth_zbuffer"][0]
            windows = full.unfold(0, 224, 1).unfold(1, 224, 1)  # (33, 33, 224, 224) views
            patch = depth[100:116, 100:116]
            close = (windows[:, :, 100:116, 100:116] == patch).all(-1).all(-1)
            for y, x in close.nonzero().tolist():
                if torch.equal(windows[y, x], depth):
                    found = (flip, y, x)
        assert found is not None
        flip, y, x = found
        flips.add(flip)
        n = ref["normal"][:, y: y + 224, :]
        n = n.flip(-1)[:, :, x: x + 224] if flip else n[:, :, x: x + 224]
        if flip:
            n = n * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
        assert torch.allclose(s["normal"], n)
    assert flips == {False, True}


def test_nested_layout_missing_views_and_strict(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "omni"
    build_taskonomy(shared_data, root, nested=True)
    assert len(build_dataset("taskonomy", "test", root=root, tasks=["reshading"])) == 1
    (root / "reshading" / "taskonomy" / BUILDINGS["test"] / f"{VIEW}_domain_reshading.png").unlink()
    with pytest.warns(UserWarning, match="dropped 1 view"), pytest.raises(MtlkitError, match="no complete view"):
        build_dataset("taskonomy", "test", root=root, tasks=["reshading"])
    assert len(build_dataset("taskonomy", "test", root=root, tasks=["normal"])) == 1
    with pytest.raises(MtlkitError, match="incomplete view"):
        build_dataset("taskonomy", "test", root=root, strict=True)
    problems = check_dataset("taskonomy", root)
    assert [Path(p.path).name for p in problems] == [f"{VIEW}_domain_reshading.png"]
    assert problems[0].problem == "missing file"


def test_split_file_choice(taskonomy_root: Path, shared_data: Path) -> None:
    shutil.copy(taskonomy_root / "train_val_test_tiny.csv", taskonomy_root / "train_val_test_medium.csv")
    with pytest.raises(MtlkitError, match="split_size"):
        build_dataset("taskonomy", "train", root=taskonomy_root)
    assert len(build_dataset("taskonomy", "train", root=taskonomy_root, split_size="tiny")) == 1
    merged = build_dataset("taskonomy", "train", root=taskonomy_root, split_size="tiny", merge_train_val=True)
    assert sorted(b for b, _ in merged.items) == ["hanson", "wiconisco"]


def test_taskonomy_tasks_mask_invalid_depth() -> None:
    task = make_task("depth_zbuffer")
    target = torch.tensor([[[[0.0, 0.6], [0.7, 0.0]]]])
    pred = torch.full_like(target, 0.65, requires_grad=True)
    loss = task.loss(pred, target)
    assert loss.item() == pytest.approx(0.05)
    loss.backward()
    assert pred.grad[0, 0, 0, 0] == 0 and pred.grad[0, 0, 1, 1] == 0
    meter = task.meter()
    meter.update(pred.detach(), target)
    assert meter.compute()["l1"] == pytest.approx(0.05)
    curv = make_task("principal_curvature")
    assert curv.primary == "rmse" and curv.channels == 2 and not curv.higher_is_better
    assert curv.loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)).item() == pytest.approx(1.0)


def test_data_check_reports_wrong_bit_depth(taskonomy_root: Path) -> None:
    assert check_dataset("taskonomy", taskonomy_root) == []
    bad = taskonomy_root / "keypoints3d" / BUILDINGS["train"] / f"{VIEW}_domain_keypoints3d.png"
    Image.new("RGB", (512, 512)).save(bad)
    problems = check_dataset("taskonomy", taskonomy_root)
    assert len(problems) == 1 and problems[0].path == str(bad) and "16-bit" in problems[0].expected


# ------------------------------------------------------------------------------------------ Replica


def build_replica(shared: Path, root: Path) -> None:
    views = {"frl_apartment_0": ("point_156_view_10", ("rgb", "depth_zbuffer", "mask_valid", "semantic")),
             "apartment_2": ("point_47_view_25", ("rgb", "depth_zbuffer", "normal"))}
    for scene, (view, domains) in views.items():
        for d in domains:
            (root / d / scene).mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / "replica" / f"{view}_domain_{d}.png", root / d / scene / f"{view}_domain_{d}.png")
    lines = (shared / "replica" / "replica_train_val_test_replica.csv").read_text().splitlines()
    keep = [ln for ln in lines if ln.split(",")[0] in ("id", *views)]
    (root / "train_val_test_replica.csv").write_text("\n".join(keep) + "\n")


def test_replica_depth_normals_semseg(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "replica"
    build_replica(shared_data, root)
    ds = build_dataset("replica", "train", root=root, tasks=["semseg", "depth"], augment=False)
    s = ds[0]
    scene = root / "depth_zbuffer" / "frl_apartment_0"
    raw = np.array(Image.open(scene / "point_156_view_10_domain_depth_zbuffer.png"))
    assert np.allclose(s["depth"][0].numpy(), raw / 512.0)  # all valid in this view (mask 255, no 65535)
    sem = np.array(Image.open(root / "semantic" / "frl_apartment_0" / "point_156_view_10_domain_semantic.png"))[..., 0]
    expected = np.where(sem >= 102, 255, sem)
    assert np.array_equal(s["semseg"].numpy(), expected) and ds.make_tasks()["semseg"].channels == 102
    val = build_dataset("replica", "val", root=root, tasks=["depth", "normals"], augment=False)[0]
    raw = np.array(Image.open(root / "depth_zbuffer" / "apartment_2" / "point_47_view_25_domain_depth_zbuffer.png"))
    invalid = raw == 65535
    assert invalid.any() and (val["depth"][0].numpy()[invalid] == 0).all()
    assert np.allclose(val["depth"][0].numpy()[~invalid], raw[~invalid] / 512.0)
    assert (val["normals"][:, torch.from_numpy(invalid)] == 0).all()
    nrm = val["normals"].permute(1, 2, 0).numpy()[~invalid]
    assert np.allclose(np.linalg.norm(nrm, axis=1).mean(), 1.0, atol=0.02)
    # train samples: ATRC transforms at 512
    torch.manual_seed(0)
    t = build_dataset("replica", "train", root=root, tasks=["semseg", "depth"])[0]
    assert t["image"].shape == (3, 512, 512) and (t["depth"] >= 0).all()


def test_omnidata_valid_mask_grows_invalid_blocks() -> None:
    mask = np.full((8, 8), 255, dtype=np.uint8)
    mask[5, 2] = 0
    valid = omnidata_valid_mask(mask)
    assert not valid[4:8, 0:4].any() and valid[:4].all() and valid[:, 4:].all()


def test_replica_check_flags_colour_coded_semantics(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "replica"
    build_replica(shared_data, root)
    problems = check_dataset("replica", root)
    semantic = [p for p in problems if "class ids" in p.problem]
    assert len(semantic) == 1 and semantic[0].path.endswith("point_156_view_10_domain_semantic.png")
    missing = {Path(p.path).name for p in problems if p.problem == "missing file"}
    assert missing == {"point_156_view_10_domain_normal.png", "point_47_view_25_domain_semantic.png"}
