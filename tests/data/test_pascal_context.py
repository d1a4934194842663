"""PASCAL-Context loader on a miniature PASCAL-MT tree built from the real VOC / Person samples; ``data check``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from mtlkit.data import build_dataset, check_dataset
from mtlkit.data.pascal_context import NORMALS_VALID_CLASSES, edges_from_labels, normals_valid_classes
from mtlkit.errors import MtlkitError
from mtlkit.metrics._edge_bsds import seg2bmap

VOC = ("2007_004189", "2008_002536")
PERSON = ("2008_002176", "2009_001521")
# VOC class -> PASCAL-Context label id (the reference's CONTEXT_CATEGORY_LABELS)
CONTEXT_ID = np.array([0, 2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427])
PART_NAME = {1: "head", 2: "torso", 3: "luarm", 4: "rlarm", 5: "ruleg", 6: "lfoot"}  # one name per 6-part group

OBJ = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
PART = [("part_name", "O"), ("mask", "O")]


def save_parts_mat(path: Path, parts: np.ndarray | None) -> None:
    """A PASCAL-Part 'anno' .mat: one person whose part masks are ``parts == g`` (or no object at all)."""
    if parts is None or not parts.any():
        objects = np.zeros((1, 0), dtype=OBJ)
    else:
        groups = [g for g in range(1, 7) if (parts == g).any()]
        plist = np.zeros((1, len(groups)), dtype=PART)
        for k, g in enumerate(groups):
            plist[0, k] = (PART_NAME[g], (parts == g).astype(np.uint8))
        objects = np.zeros((1, 1), dtype=OBJ)
        objects[0, 0] = ("person", np.array([[15]]), (parts > 0).astype(np.uint8), plist)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (path.stem, objects)
    sio.savemat(path, {"anno": anno})


def build_tree(shared: Path, root: Path) -> dict[str, dict[str, np.ndarray]]:
    for sub in ("JPEGImages", "semseg/VOC12", "semseg/pascal-context", "human_parts", "normals_distill",
                "sal_distill", "pascal-context/trainval", "ImageSets/Context"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for i in VOC + PERSON:
        kind = "VOC" if i in VOC else "Person"
        img = Image.open(shared / "pascal" / f"{kind}_{i}.jpg").convert("RGB")
        img.save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        mask = np.array(Image.open(shared / "pascal" / f"{kind}_{i}.png"))
        if kind == "VOC":
            semseg, parts = mask.astype(np.int64), None
            Image.fromarray(mask.astype(np.uint8)).save(root / "semseg" / "VOC12" / f"{i}.png")
        else:
            parts = mask.astype(np.int64)
            semseg = np.where(parts > 0, 15, 0)
            Image.fromarray(semseg.astype(np.uint8)).save(root / "semseg" / "pascal-context" / f"{i}.png")
        labels = CONTEXT_ID[np.where(semseg == 255, 0, semseg)].astype(np.uint16)
        sio.savemat(root / "pascal-context" / "trainval" / f"{i}.mat", {"LabelMap": labels})
        save_parts_mat(root / "human_parts" / f"{i}.mat", parts)
        n = rng.standard_normal((*mask.shape, 3))
        normals = np.rint((n / np.linalg.norm(n, axis=-1, keepdims=True) + 1) / 2 * 255).astype(np.uint8)
        Image.fromarray(normals).save(root / "normals_distill" / f"{i}.png")
        sal = np.where(semseg % 255 > 0, 200, 100).astype(np.uint8)  # 200/255 > 0.5 > 100/255
        sal[:5, :5] = 128  # 128 / 255 = 0.502 > 0.5
        Image.fromarray(sal).save(root / "sal_distill" / f"{i}.png")
        written[i] = {"rgb": np.array(Image.open(root / "JPEGImages" / f"{i}.jpg").convert("RGB")),
                      "semseg": semseg, "parts": parts, "labels": labels, "normals": normals, "sal": sal}
    (root / "ImageSets" / "Context" / "train.txt").write_text("\n".join([VOC[0], PERSON[0]]) + "\n")
    (root / "ImageSets" / "Context" / "val.txt").write_text("\n".join([VOC[1], PERSON[1]]) + "\n")
    return written


@pytest.fixture
def tree(shared_data: Path, tmp_path: Path):
    root = tmp_path / "PASCAL_MT"
    return root, build_tree(shared_data, root)


def test_eval_samples_match_the_annotations(tree) -> None:
    root, written = tree
    ds = build_dataset("pascal-context", "val", root=root.parent, image_size=512)
    assert ds.ids == [VOC[1], PERSON[1]]
    for idx, i in enumerate(ds.ids):
        w = written[i]
        h, wd = w["semseg"].shape
        s = ds[idx]
        top, left = (512 - h) // 2, (512 - wd) // 2
        crop = (slice(top, top + h), slice(left, left + wd))
        assert np.array_equal(s["semseg"][crop].numpy(), w["semseg"])
        if w["parts"] is None:
            assert (s["parts"] == 255).all()  # no annotated person: ignored entirely
        else:
            assert np.array_equal(s["parts"][crop].numpy(), w["parts"])
            assert set(np.unique(w["parts"])) == set(range(7))
        assert np.array_equal(s["saliency"][0][crop].numpy(), (w["sal"] / 255.0 > 0.5).astype(np.float32))
        keep = np.isin(w["labels"], sorted(NORMALS_VALID_CLASSES))
        expected = (2 * w["normals"].astype(np.float64) / 255 - 1) * keep[..., None]
        assert np.allclose(s["normals"][:, crop[0], crop[1]].permute(1, 2, 0).numpy(), expected, atol=1e-6)
        assert keep.any() and not keep.all()  # person (284) keeps its normals, background (0) does not
        edge = s["edge"][0][crop].numpy()
        assert np.array_equal(edge, seg2bmap(w["labels"]))  # what seism scores against
        train_gt = build_dataset("pascal-context", "val", root=root, image_size=512, tasks=["edge"],
                                 edge_eval_gt="train")[idx]["edge"][0][crop].numpy()
        assert np.array_equal(train_gt, edges_from_labels(w["labels"]))
        assert s["image"].shape == (3, 512, 512) and (s["edge"][0][:top] == 255).all()


def test_edges_are_the_thinned_laplacian_of_the_label_map(tree) -> None:
    """Independent check: explicit Laplacian (reflect-101 border) + pyEdgeEval's bwmorph_thin."""
    root, written = tree
    spec = importlib.util.find_spec("pyEdgeEval")
    if spec is None:
        pytest.skip("pyEdgeEval not installed (pip install 'mtlkit[edges]')")
    path = Path(spec.origin).parent
    spec = importlib.util.spec_from_file_location("bwmorph_thin", path / "preprocess" / "thin" / "bwmorph_thin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(np, "in1d"):
        np.in1d = np.isin  # the module predates numpy 2.4
    for i in VOC + PERSON:
        lab = np.pad(written[i]["labels"].astype(np.float64), 1, mode="reflect")  # numpy reflect = reflect-101
        lap = lab[:-2, 1:-1] + lab[2:, 1:-1] + lab[1:-1, :-2] + lab[1:-1, 2:] - 4 * lab[1:-1, 1:-1]
        expected = mod.bwmorph_thin(np.abs(lap) > 0)
        assert np.array_equal(edges_from_labels(written[i]["labels"]) > 0, expected)


def test_normals_classes_recomputed_from_db_info(shared_data: Path) -> None:
    assert normals_valid_classes(shared_data / "db_info") == NORMALS_VALID_CLASSES
    assert len(NORMALS_VALID_CLASSES) == 170 and 427 in NORMALS_VALID_CLASSES  # tvmonitor added by hand


def test_parts_only_split_keeps_images_with_people(tree) -> None:
    root, _ = tree
    ds = build_dataset("pascal-context", "train", root=root, tasks=["parts"], image_size=512)
    assert ds.ids == [PERSON[0]]
    assert ds.make_tasks()["parts"].channels == 7
    torch.manual_seed(0)
    s = ds[0]
    assert set(np.unique(s["parts"].numpy())) <= set(range(7)) | {255}


def test_training_augmentation_and_defaults(tree) -> None:
    root, _ = tree
    ds = build_dataset("pascal-context", "train", root=root, image_size=256)
    tasks = ds.make_tasks()
    assert tasks["semseg"].channels == 21 and tasks["edge"].meter().max_dist == 0.0075
    torch.manual_seed(1)
    for idx in range(len(ds)):
        s = ds[idx]
        assert all(v.shape[-2:] == (256, 256) for v in s.values())
        assert set(np.unique(s["saliency"].numpy())) <= {0.0, 1.0, 255.0}
        assert set(np.unique(s["semseg"].numpy())) <= {0, 15, 255} | set(range(21))


def test_data_check_reports_deleted_and_corrupted_files(tree) -> None:
    root, _ = tree
    assert check_dataset("pascal-context", root) == []
    (root / "human_parts" / f"{PERSON[0]}.mat").unlink()
    seg = np.array(Image.open(root / "semseg" / "VOC12" / f"{VOC[1]}.png"))
    seg[10, 10] = 30
    Image.fromarray(seg).save(root / "semseg" / "VOC12" / f"{VOC[1]}.png")
    sio.savemat(root / "pascal-context" / "trainval" / f"{VOC[0]}.mat", {"Other": np.zeros((2, 2))})
    problems = {Path(p.path).relative_to(root).as_posix(): p for p in check_dataset("pascal-context", root)}
    assert problems[f"human_parts/{PERSON[0]}.mat"].problem == "missing file"
    assert "30" in problems[f"semseg/VOC12/{VOC[1]}.png"].problem
    assert "LabelMap" in problems[f"pascal-context/trainval/{VOC[0]}.mat"].problem
    assert len(problems) == 3
    with pytest.raises(MtlkitError, match="unknown|LabelMap"):
        build_dataset("pascal-context", "train", root=root, tasks=["edge"])[0]


def test_seg2bmap_marks_east_south_southeast_changes() -> None:
    seg = np.array([[1, 1, 2],
                    [1, 1, 2],
                    [3, 3, 3]])
    expected = np.array([[0, 1, 0],
                         [1, 1, 1],
                         [0, 0, 0]], bool)
    assert np.array_equal(seg2bmap(seg), expected)
