"""NYUD-v2 loader on miniature ATRC / NYUD_MT trees built from the real sample frames; ``data check``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.data import build_dataset, check_dataset, denormalize_image, format_problems
from mtlkit.errors import MtlkitError
from mtlkit.metrics import BSDSEdgeMeter

FRAMES = ("000433", "000464")


def source(shared: Path, frame: str) -> dict[str, np.ndarray]:
    """The sample frame decoded from its source encodings (data/README.md)."""
    d = shared / "nyud"
    out = {
        "rgb": np.array(Image.open(d / f"{frame}_rgb.png").convert("RGB")),
        "segm40": np.array(Image.open(d / f"{frame}_segm40.png")),
        "depth": np.array(Image.open(d / f"{frame}_depth.png")).astype(np.float64) / 5000.0,
    }
    normals = d / f"{frame}_normals.png"
    # only 000433 has normals; the tree reuses them for the other frame (same size)
    out["normals_png"] = np.array(Image.open(normals if normals.is_file() else d / "000433_normals.png"))
    return out


def boundaries(seg: np.ndarray) -> np.ndarray:
    b = np.zeros(seg.shape, dtype=bool)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1, :] |= seg[:-1, :] != seg[1:, :]
    return b


def build_tree(shared: Path, root: Path, variant: str = "atrc") -> dict[str, dict[str, np.ndarray]]:
    """An ATRC ``NYUDv2`` (or NYUD_MT) tree of the two frames; returns what was written, decoded."""
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    written = {}
    for f in FRAMES:
        s = source(shared, f)
        seg = s["segm40"].astype(np.int64)
        atrc_seg = np.where(seg == 255, 0, seg + 1).astype(np.uint8)  # 0 = void, classes 1..40
        png = s["normals_png"].copy()
        png[..., 2] = 255 - png[..., 2]  # undo the source's z flip: v = (n + 1) / 2 * 255 on every axis
        edge = boundaries(seg)
        if variant == "atrc":
            Image.fromarray(s["rgb"]).save(root / "images" / f"{f}.png")
            Image.fromarray(png).save(root / "normals" / f"{f}.png")
            Image.fromarray((edge * 255).astype(np.uint8)).save(root / "edge" / f"{f}.png")
            image = s["rgb"]
        else:
            Image.fromarray(s["rgb"]).save(root / "images" / f"{f}.jpg", quality=95)
            np.save(root / "normals" / f"{f}.npy", (2 * png.astype(np.float32) / 255 - 1))
            np.save(root / "edge" / f"{f}.npy", edge.astype(np.float32))
            image = np.array(Image.open(root / "images" / f"{f}.jpg").convert("RGB"))
        Image.fromarray(atrc_seg).save(root / "segmentation" / f"{f}.png")
        np.save(root / "depth" / f"{f}.npy", s["depth"].astype(np.float32))
        written[f] = {"rgb": image, "segm40": seg, "depth": s["depth"], "png": png, "edge": edge}
    (root / "gt_sets" / "train.txt").write_text(FRAMES[0] + "\n")
    (root / "gt_sets" / "val.txt").write_text(FRAMES[1] + "\n")
    return written


@pytest.fixture
def tree(shared_data: Path, tmp_path: Path):
    root = tmp_path / "NYUDv2"
    return root, build_tree(shared_data, root)


def test_eval_sample_matches_source_pixels(tree) -> None:
    root, written = tree
    ds = build_dataset("nyud", "val", root=root, image_size=(480, 640))
    assert ds.variant == "atrc" and len(ds) == 1 and ds.task_names == ("semseg", "depth", "normals", "edge")
    s = ds[0]
    w = written[FRAMES[1]]
    rgb = (denormalize_image(s["image"]) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(rgb - w["rgb"]).max() <= 1
    assert s["semseg"].dtype == torch.int64 and s["semseg"].shape == (480, 640)
    assert np.array_equal(s["semseg"].numpy(), w["segm40"])  # 255 stays ignore, classes 0..39 unchanged
    depth = s["depth"][0].numpy()
    assert np.allclose(depth, w["depth"], atol=1e-6)
    assert (depth[w["depth"] == 0] == 0).all() and (w["depth"] == 0).any()
    # normals: 2v/255 - 1 of the ATRC png equals the source decoding (z = 1 - 2 B / 255 of the flipped png)
    n = s["normals"].permute(1, 2, 0).numpy()
    assert np.allclose(n, 2 * w["png"].astype(np.float64) / 255.0 - 1, atol=1e-6)
    assert np.allclose(n[..., 2], 1 - 2 * (255 - w["png"][..., 2].astype(np.float64)) / 255.0, atol=1e-6)
    assert np.array_equal(s["edge"][0].numpy(), w["edge"].astype(np.float32))


def test_padding_uses_the_ignore_values(tree) -> None:
    root, written = tree
    s = build_dataset("nyud", "test", root=root, image_size=(496, 660))  # test reads val.txt
    x = s[0]
    assert x["image"].shape == (3, 496, 660)
    assert (x["semseg"][:8] == 255).all() and (x["semseg"][-8:] == 255).all() and (x["semseg"][:, :10] == 255).all()
    assert (x["edge"][0, :8] == 255).all() and (x["depth"][0, :8] == 0).all() and (x["normals"][:, :8] == 0).all()
    assert (x["image"][:, :8] == 0).all()
    assert np.array_equal(x["semseg"][8:488, 10:650].numpy(), written[FRAMES[1]]["segm40"])


def test_training_samples_respect_the_label_encodings(tree) -> None:
    root, written = tree
    ds = build_dataset("nyud", "train", root=root, image_size=(448, 576))
    assert ds.augment
    torch.manual_seed(0)
    valid_classes = set(np.unique(written[FRAMES[0]]["segm40"]).tolist()) | {255}
    png = written[FRAMES[0]]["png"].reshape(-1, 3).astype(np.int64)

    def packed(v: np.ndarray) -> set[int]:
        return set((v[:, 0] * 65536 + v[:, 1] * 256 + v[:, 2]).tolist())

    # the source normals with x as stored or mirrored (a flip negates n_x, i.e. v_x -> 255 - v_x)
    stored = packed(png) | packed(np.stack([255 - png[:, 0], png[:, 1], png[:, 2]], 1))
    for _ in range(3):
        s = ds[0]
        assert s["image"].shape == (3, 448, 576) and s["semseg"].shape == (448, 576)
        assert set(np.unique(s["semseg"].numpy()).tolist()) <= valid_classes  # nearest: no new labels
        assert set(np.unique(s["edge"].numpy()).tolist()) <= {0.0, 1.0, 255.0}
        n = s["normals"].permute(1, 2, 0).reshape(-1, 3).numpy().astype(np.float64)
        v = np.rint((n + 1) * 255 / 2).astype(np.int64)
        assert np.allclose(2 * v / 255.0 - 1, n, atol=1e-5)  # no interpolated normal
        assert packed(v[(n != 0).any(1)]) <= stored  # every normal is a source normal (nearest) or padding
        assert (s["depth"] >= 0).all()
    torch.manual_seed(3)
    a = ds[0]
    torch.manual_seed(3)
    b = ds[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nyud_mt_variant_is_detected(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "NYUD_MT"
    written = build_tree(shared_data, root, variant="nyud_mt")
    ds = build_dataset("nyud", "train", root=tmp_path, image_size=(480, 640), augment=False)  # parent folder
    assert ds.variant == "nyud_mt"
    s = ds[0]
    w = written[FRAMES[0]]
    assert np.allclose(s["normals"].permute(1, 2, 0).numpy(), 2 * w["png"].astype(np.float64) / 255.0 - 1, atol=1e-6)
    assert np.array_equal(s["edge"][0].numpy(), w["edge"].astype(np.float32))
    assert np.array_equal(s["semseg"].numpy(), w["segm40"])


def test_task_defaults_and_subsets(tree) -> None:
    root, _ = tree
    ds = build_dataset("nyud", "val", root=root, tasks=["edge", "semseg"], image_size=(480, 640))
    assert ds.task_names == ("semseg", "edge") and set(ds[0]) == {"image", "semseg", "edge"}
    tasks = ds.make_tasks()
    assert tasks["semseg"].channels == 40
    meter = tasks["edge"].meter()
    assert isinstance(meter, BSDSEdgeMeter) and meter.max_dist == 0.011 and len(meter.thresholds) == 99
    fast = build_dataset("nyud", "val", root=root, tasks=["edge"], edge_protocol="tolerance", edge_thresholds=9)
    assert type(fast.make_tasks()["edge"].meter()).__name__ == "EdgeMeter"
    with pytest.raises(MtlkitError, match="its tasks: semseg, depth, normals, edge"):
        build_dataset("nyud", "val", root=root, tasks=["parts"])


def test_missing_root_or_files_name_the_path_and_layout(tree, tmp_path: Path) -> None:
    root, _ = tree
    with pytest.raises(MtlkitError, match="--data-root"):
        build_dataset("nyud", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MtlkitError, match=r"gt_sets(.|\n)*docs/datasets.md"):
        build_dataset("nyud", "train", root=tmp_path / "empty")
    (root / "depth" / f"{FRAMES[1]}.npy").unlink()
    ds = build_dataset("nyud", "val", root=root)
    with pytest.raises(MtlkitError, match=f"missing file: .*depth/{FRAMES[1]}.npy"):
        ds[0]


def test_data_check_reports_deleted_and_corrupted_files(tree) -> None:
    root, _ = tree
    assert check_dataset("nyud", root) == []
    (root / "depth" / f"{FRAMES[0]}.npy").unlink()
    seg = np.array(Image.open(root / "segmentation" / f"{FRAMES[1]}.png"))
    seg[0, 0] = 77
    Image.fromarray(seg).save(root / "segmentation" / f"{FRAMES[1]}.png")
    (root / "normals" / f"{FRAMES[1]}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    shutil.rmtree(root / "edge")
    problems = check_dataset("nyud", root)
    by_path = {Path(p.path).relative_to(root).as_posix(): p for p in problems}
    assert by_path[f"depth/{FRAMES[0]}.npy"].problem == "missing file"
    assert "77" in by_path[f"segmentation/{FRAMES[1]}.png"].problem
    assert "0 (void) .. 40" in by_path[f"segmentation/{FRAMES[1]}.png"].expected
    assert by_path[f"normals/{FRAMES[1]}.png"].problem.startswith("unreadable")
    assert by_path["edge"].problem == "missing folder"
    assert {f"edge/{f}.png" for f in FRAMES} <= set(by_path)
    report = format_problems("nyud", root, problems)
    assert f"depth/{FRAMES[0]}.npy: missing file" in report and report.endswith("for the expected layout")


def test_cli_data_check(tree, capsys) -> None:
    from mtlkit.cli import main

    root, _ = tree
    assert main(["data", "check", "--dataset", "nyud", "--data-root", str(root)]) == 0
    assert "no problems found" in capsys.readouterr().out
    (root / "edge" / f"{FRAMES[1]}.png").unlink()
    assert main(["data", "check", "--dataset", "nyud", "--data-root", str(root), "--max-files", "1"]) == 1
    out = capsys.readouterr().out
    assert f"edge/{FRAMES[1]}.png: missing file" in out and "1 problem(s)" in out
    assert main(["data", "check", "--dataset", "nope", "--data-root", str(root)]) == 2


def test_unknown_option_is_a_user_error(tree) -> None:
    root, _ = tree
    with pytest.raises(MtlkitError, match="nyud has no option colour; its options: cat_max_ratio, colour_jitter"):
        build_dataset("nyud", "train", root=root, colour=False)
