"""Corrupted dataset trees and caches: every case is a one-line MtlkitError naming the file, the problem and the
fix when the sample is read (never a traceback, never silent training), and ``data check`` lists it too.

The trees are the miniature NYUD-v2 / PASCAL-Context / Replica trees the loader tests build from the real
samples in ../shared/data (skipped when absent); each row corrupts one file of a fresh tree.
"""

from __future__ import annotations

import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlkit.data import build_dataset, check_dataset, format_problems
from mtlkit.data.synthetic._generate import cache_path, generation_config
from mtlkit.errors import MtlkitError

FRAME = "000464"  # the val frame of the NYUD tree (test_nyud.FRAMES[1])


def _png(path: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    Image.fromarray(fn(np.array(Image.open(path)))).save(path)


def _npy(path: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, fn(np.load(path)))


def _put_77(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[5:9, 5:9] = 77
    return a


def _halve_normals(v: np.ndarray) -> np.ndarray:
    return (v // 2).astype(np.uint8)  # decodes to lengths around 0.5-1: not unit vectors


def _nan_depth(d: np.ndarray) -> np.ndarray:
    d = d.copy()
    d[10:20, 10:20] = np.nan
    return d


# id, file (relative to the tree), corruption, fragments of the loader's error, fragments of the check's line
NYUD_ROWS = [
    ("labels-out-of-range", f"segmentation/{FRAME}.png", lambda p: _png(p, _put_77),
     ["label values [77] out of range", "class indices (values 0 (void) .. 40)", "fix or remove this file"],
     ["label values [77] out of range"]),
    ("rgb-segmentation", f"segmentation/{FRAME}.png", lambda p: _png(p, lambda a: np.stack([a] * 3, -1)),
     ["3-channel colour image", "convert colour-coded masks to class indices"], ["3-channel colour image"]),
    ("depth-dtype", f"depth/{FRAME}.npy", lambda p: _npy(p, lambda d: d > 0),
     ["depth of dtype bool", "float .npy (H, W) of metres"], ["depth of dtype bool"]),
    ("depth-shape", f"depth/{FRAME}.npy", lambda p: _npy(p, lambda d: np.stack([d] * 3, -1)),
     ["depth array of shape (480, 640, 3)", "float .npy (H, W) of metres"], ["depth array of shape (480, 640, 3)"]),
    ("depth-nan", f"depth/{FRAME}.npy", lambda p: _npy(p, _nan_depth),
     ["non-finite depth values", "write 0 for invalid pixels"], ["non-finite depth values"]),
    ("depth-millimetres", f"depth/{FRAME}.npy", lambda p: _npy(p, lambda d: d * 1000),
     ["depth looks like millimetres", "divide the depth files by 1000 or pass --dataset-opt depth_scale=0.001"],
     ["depth looks like millimetres", "depth_scale=0.001"]),
    ("normals-not-unit", f"normals/{FRAME}.png", lambda p: _png(p, _halve_normals),
     ["non-unit normals", "n = 2 * v / 255 - 1", "re-encode the file from n / |n|"], ["non-unit normals"]),
    ("normals-grey", f"normals/{FRAME}.png", lambda p: _png(p, lambda a: a[..., 0]),
     ["normals image of shape (480, 640)", "an RGB png"], ["normals image of shape (480, 640)"]),
    ("edge-0-1", f"edge/{FRAME}.png", lambda p: _png(p, lambda a: (a > 0).astype(np.uint8)),
     ["edge map holds 0 / 1", "multiply the file by 255"], ["edge map holds 0 / 1"]),
    ("truncated-image", f"images/{FRAME}.png", lambda p: p.write_bytes(p.read_bytes()[:200]),
     ["unreadable image"], ["unreadable"]),
]


@pytest.fixture
def nyud_tree(shared_data: Path, tmp_path: Path) -> Path:
    from test_nyud import build_tree

    root = tmp_path / "NYUDv2"
    build_tree(shared_data, root)
    return root


def one_line_error(fn: Callable[[], object]) -> str:
    with pytest.raises(MtlkitError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("name,rel,corrupt,error,check", NYUD_ROWS, ids=[r[0] for r in NYUD_ROWS])
def test_nyud_corruption_is_one_line_error_and_listed_by_check(nyud_tree: Path, name, rel, corrupt, error,
                                                               check) -> None:
    assert check_dataset("nyud", nyud_tree) == []
    corrupt(nyud_tree / rel)
    ds = build_dataset("nyud", "val", root=nyud_tree, image_size=(480, 640))
    message = one_line_error(lambda: ds[0])
    assert message.startswith(str(nyud_tree / rel) + ": ")
    for fragment in error:
        assert fragment in message, (fragment, message)
    lines = format_problems("nyud", nyud_tree, check_dataset("nyud", nyud_tree)).splitlines()
    hits = [ln for ln in lines if ln.startswith(str(nyud_tree / rel) + ":")]
    assert len(hits) == 1 and all(f in hits[0] for f in check), (check, lines)
    assert lines[-1].startswith(f"nyud at {nyud_tree}: 1 problem(s)")


def test_millimetre_depth_loads_with_the_scale_option(nyud_tree: Path) -> None:
    metres = np.load(nyud_tree / "depth" / f"{FRAME}.npy")
    _npy(nyud_tree / "depth" / f"{FRAME}.npy", lambda d: d * 1000)
    ds = build_dataset("nyud", "val", root=nyud_tree, image_size=(480, 640), depth_scale=0.001)
    assert np.allclose(ds[0]["depth"][0].numpy(), metres, rtol=1e-6)
    for bad in (0, -1, "mm", float("nan")):
        message = one_line_error(lambda b=bad: build_dataset("nyud", "val", root=nyud_tree, depth_scale=b))
        assert "depth_scale must be a positive number (0.001 for millimetres)" in message


def test_nyud_mt_npy_normals_must_be_unit_and_edges_in_0_1(shared_data: Path, tmp_path: Path) -> None:
    from test_nyud import build_tree

    root = tmp_path / "NYUD_MT"
    build_tree(shared_data, root, variant="nyud_mt")
    _npy(root / "normals" / f"{FRAME}.npy", lambda n: (n + 1) / 2)  # stored in [0, 1] instead of [-1, 1]
    ds = build_dataset("nyud", "val", root=root, image_size=(480, 640))
    message = one_line_error(lambda: ds[0])
    assert message.startswith(f"{root / 'normals' / FRAME}.npy: non-unit normals")
    assert "unit normals (float unit vectors; all-zero = invalid)" in message
    _npy(root / "edge" / f"{FRAME}.npy", lambda e: e * 255)  # 0 / 255 would read as 255 = ignore
    ds = build_dataset("nyud", "val", root=root, tasks=["edge"], image_size=(480, 640))
    message = one_line_error(lambda: ds[0])
    assert message == (f"{root / 'edge' / FRAME}.npy: edge values up to 255; expected a .npy (H, W) with values in "
                       "[0, 1]; divide the file by 255")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "directory"])
def test_unreadable_split_file(nyud_tree: Path, content) -> None:
    listing = nyud_tree / "gt_sets" / "val.txt"
    if content == "directory":
        listing.unlink()
        listing.mkdir()
        needle = "unreadable split list"
    else:
        listing.write_bytes(content)
        needle = "not a text file"
    message = one_line_error(lambda: build_dataset("nyud", "val", root=nyud_tree))
    assert f"{listing}: " in message and needle in message and "one id per line" in message
    (problem,) = [p for p in check_dataset("nyud", nyud_tree) if p.path == str(listing)]
    assert needle in problem.problem and "one id per line" in problem.expected


def test_cli_train_on_a_corrupted_tree_exits_2_with_one_line(nyud_tree: Path, tmp_path: Path, capsys) -> None:
    from mtlkit.cli import main

    _npy(nyud_tree / "depth" / "000433.npy", lambda d: d * 1000)  # the train frame
    code = main(["train", "--dataset", "nyud", "--data-root", str(nyud_tree), "--image-size", "32", "--iters", "1",
                 "--batch-size", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert "depth/000433.npy: depth looks like millimetres" in err and "depth_scale=0.001" in err


# ------------------------------------------------------------------------------------------ PASCAL, Replica


def test_pascal_semseg_and_normals(shared_data: Path, tmp_path: Path) -> None:
    from test_pascal_context import VOC, build_tree

    root = tmp_path / "PASCAL_MT"
    build_tree(shared_data, root)
    i = VOC[1]
    seg, nrm = root / "semseg" / "VOC12" / f"{i}.png", root / "normals_distill" / f"{i}.png"
    _png(seg, lambda a: np.where(a == 0, 21, a))
    _png(nrm, _halve_normals)
    ds = build_dataset("pascal-context", "val", root=root, tasks=["semseg"], image_size=512)
    message = one_line_error(lambda: ds[0])
    assert message.startswith(f"{seg}: label values [21] out of range; expected")
    assert "values 0..20, 255 = ignore" in message
    ds = build_dataset("pascal-context", "val", root=root, tasks=["normals"], image_size=512)
    assert one_line_error(lambda: ds[0]).startswith(f"{nrm}: non-unit normals")
    found = {p.path: str(p) for p in check_dataset("pascal-context", root)}
    assert "label values [21] out of range" in found[str(seg)] and "non-unit normals" in found[str(nrm)]


def test_replica_8bit_depth(shared_data: Path, tmp_path: Path) -> None:
    from test_taskonomy import build_replica

    root = tmp_path / "replica"
    build_replica(shared_data, root)
    depth = root / "depth_zbuffer" / "frl_apartment_0" / "point_156_view_10_domain_depth_zbuffer.png"  # train
    _png(depth, lambda a: (a >> 8).astype(np.uint8))
    ds = build_dataset("replica", "train", root=root, tasks=["depth"])
    message = one_line_error(lambda: ds[0])
    assert message.startswith(f"{depth}: uint8 array of shape") and "16-bit single-channel png" in message
    assert "re-export the file as a 16-bit single-channel PNG" in message
    assert any(p.path == str(depth) and "uint8" in p.problem for p in check_dataset("replica", root))


# ------------------------------------------------------------------------------------------ synthetic cache

SMALL = {"image_size": 16, "num_train": 4, "num_val": 3, "num_test": 2}


def _zlib_corrupt(path: Path) -> None:
    """Garble the deflate stream of ``image.npy`` inside the archive (the zip structure stays valid)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("image.npy")
    data = bytearray(path.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26: header + 28], "little")
    extra_len = int.from_bytes(data[header + 28: header + 30], "little")
    start = header + 30 + name_len + extra_len
    data[start: start + 8] = b"\xff" * 8  # an invalid deflate block type
    path.write_bytes(bytes(data))


def _wrong_shape(path: Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["image"] = arrays["image"][:-1]
    np.savez(path.with_suffix(""), **arrays)  # np.savez appends .npz


CACHE_ROWS = [
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "BadZipFile"),
    ("zlib", _zlib_corrupt, "error: Error -3 while decompressing data"),
    ("not-a-zip", lambda p: p.write_bytes(b"PK\x03\x04 garbage"), ""),
    ("wrong-shape", _wrong_shape, "image has shape (2, 16, 16, 3)"),
]


@pytest.mark.parametrize("name,corrupt,reason", CACHE_ROWS, ids=[r[0] for r in CACHE_ROWS])
def test_corrupt_cache_is_removed_and_regenerated_with_one_warning(tmp_path: Path, name, corrupt, reason) -> None:
    first = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    path = cache_path(tmp_path, generation_config("val", 3, (16, 16), 0))
    assert path.is_file()
    reference = {k: v.copy() for k, v in first._arrays.items()}
    corrupt(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    messages = [str(w.message) for w in caught if "synthetic-data cache" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert messages[0].startswith(f"corrupt synthetic-data cache file {path} (") and reason in messages[0]
    assert messages[0].endswith("removed it; regenerating")
    assert all(np.array_equal(again._arrays[k], reference[k]) for k in reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the regenerated file is whole: read silently
        third = build_dataset("synthetic-nyud", "val", cache_dir=tmp_path, **SMALL)
    assert np.array_equal(third._arrays["image"], reference["image"])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_stale_temp_files_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    import os

    path = cache_path(tmp_path, generation_config("test", 2, (16, 16), 0))
    path.parent.mkdir(parents=True)
    stale, fresh = path.parent / f".{path.stem}-dead.tmp", path.parent / f".{path.stem}-live.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1, 1))
    build_dataset("synthetic-nyud", "test", cache_dir=tmp_path, **SMALL)
    assert not stale.exists() and fresh.exists() and path.is_file()
    shutil.rmtree(tmp_path / "synthetic")
