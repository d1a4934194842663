"""The imbalance study's data knobs on every dataset: label noise (§V.E "Data Quality") and less data by samples,
scenes or scans per scene (§V.E "Data Quantity", Replica Tab. V)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtlkit.data import IGNORE_INDEX, MultiTaskDataset, build_dataset
from mtlkit.data._knobs import Degraded, apply_knobs, check_label_noise, noisy_label, subsample_indices
from mtlkit.errors import MtlkitError

SCENES = ["a"] * 10 + ["b"] * 6 + ["c"] * 4  # 20 scans of 3 scenes


class Scans(MultiTaskDataset):
    """20 scans of 3 scenes; semseg 4x4 with classes 0..5 and an ignore pixel, depth, normals, edge."""

    name = "scans"
    task_names = ("semseg", "depth", "normals", "edge")

    def __init__(self) -> None:
        self.split = "train"

    def __len__(self) -> int:
        return len(SCENES)

    def groups(self) -> list[str]:
        return list(SCENES)

    def task_params(self):
        return {"semseg": {"num_classes": 6}}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sem = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [0, 1, 2, IGNORE_INDEX]])
        n = torch.zeros(3, 4, 4)
        n[2] = 1.0
        return {"image": torch.full((3, 4, 4), float(i)), "semseg": sem, "depth": torch.full((1, 4, 4), 2.0),
                "normals": n, "edge": torch.zeros(1, 4, 4)}


def test_subsample_fraction_count_nested_and_sorted():
    half = subsample_indices(20, {"fraction": 0.5}, None, "x")
    quarter = subsample_indices(20, {"fraction": 0.25}, None, "x")
    assert len(half) == 10 and len(quarter) == 5 and set(quarter) <= set(half)
    assert list(half) == sorted(half)
    assert len(subsample_indices(20, {"count": 3}, None, "x")) == 3
    assert list(subsample_indices(20, {"fraction": 1.0}, None, "x")) == list(range(20))
    other = subsample_indices(20, {"fraction": 0.5, "seed": 1}, None, "x")
    assert list(other) != list(half)


def test_subsample_by_scenes_and_scans_per_scene():
    one = subsample_indices(20, {"scenes": 1}, SCENES, "scans")
    assert len({SCENES[i] for i in one}) == 1 and len(one) == SCENES.count(SCENES[one[0]])  # all its scans
    third = subsample_indices(20, {"scenes": 0.34}, SCENES, "scans")  # round(0.34 * 3) = 1 scene
    assert len({SCENES[i] for i in third}) == 1
    half = subsample_indices(20, {"scans_per_scene": 0.5}, SCENES, "scans")
    per = {s: sum(SCENES[i] == s for i in half) for s in "abc"}
    assert per == {"a": 5, "b": 3, "c": 2}
    twelve = subsample_indices(20, {"scans_per_scene": 5}, SCENES, "scans")  # a count: at most 5 per scene
    assert {s: sum(SCENES[i] == s for i in twelve) for s in "abc"} == {"a": 5, "b": 5, "c": 4}
    with pytest.raises(MtlkitError, match="not made of scenes"):
        subsample_indices(20, {"scenes": 0.5}, None, "nyud")
    with pytest.raises(MtlkitError, match="unknown keys"):
        subsample_indices(20, {"scans": 0.5}, SCENES, "scans")
    for bad in (0, -1, 0.0, 1.5, "half", True):
        with pytest.raises(MtlkitError, match="scans_per_scene"):
            subsample_indices(20, {"scans_per_scene": bad}, SCENES, "scans")


def test_segmentation_noise_on_k_classes_per_sample():
    label = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [0, 1, 2, IGNORE_INDEX]], dtype=np.int64)
    (spec,) = check_label_noise("scans", ["semseg"], {"semseg": 6}, {"semseg": {"classes": 2, "rate": 1.0}}).values()
    out = noisy_label(label, spec, np.random.default_rng(0))
    changed = set(label[out != label].tolist())
    assert len(changed) == 2  # exactly the pixels of two classes, all of them (rate 1) ...
    assert np.all(out[np.isin(label, list(changed))] != label[np.isin(label, list(changed))])
    assert out[3, 3] == IGNORE_INDEX and out[label != IGNORE_INDEX].max() < 6  # ... never the ignore pixel
    # more classes asked for than present: every present class (the study's "keep them all")
    (spec,) = check_label_noise("scans", ["semseg"], {"semseg": 6}, {"semseg": {"classes": 9, "rate": 1.0}}).values()
    out = noisy_label(label, spec, np.random.default_rng(0))
    valid = label != IGNORE_INDEX
    assert np.all(out[valid] != label[valid]) and np.all((out[valid] >= 0) & (out[valid] < 6))


def test_noise_specs_are_checked():
    with pytest.raises(MtlkitError, match="Gaussian std"):
        check_label_noise("replica", ["depth"], {}, {"depth": {"gaussian_std": None}})
    with pytest.raises(MtlkitError, match="no task 'parts'"):
        check_label_noise("replica", ["depth"], {}, {"parts": {"rate": 0.1}})
    with pytest.raises(MtlkitError, match=r"\['rate'\] must be in \[0, 1\]"):
        check_label_noise("x", ["semseg"], {"semseg": 6}, {"semseg": {"rate": 2}})
    with pytest.raises(MtlkitError, match="unknown keys"):
        check_label_noise("x", ["semseg"], {"semseg": 6}, {"semseg": {"std": 2}})
    spec = check_label_noise("x", ["depth"], {}, {"depth": {"gaussian_std": 0.1}})
    assert spec["depth"]["std"] == 0.1


def test_knobs_wrap_the_train_split_only_and_noise_is_fixed_per_sample():
    ds = Scans()
    knobs = {"label_noise": {"semseg": {"rate": 0.5}, "depth": {"std": 0.1}, "normals": {"std": 0.2},
                             "edge": {"rate": 1.0}},
             "subsample": {"scans_per_scene": 0.5}}
    train = apply_knobs(ds, "train", **knobs)
    assert isinstance(train, Degraded) and len(train) == 10
    assert train.groups() == [SCENES[int(i)] for i in train.indices]
    assert apply_knobs(ds, "val", **knobs) is ds  # validated, not applied
    a, b = train[3], train[3]
    for t in ("semseg", "depth", "normals", "edge"):
        assert torch.equal(a[t], b[t]) and a[t].dtype == ds[0][t].dtype and a[t].shape == ds[0][t].shape
    assert torch.equal(a["image"], ds[int(train.indices[3])]["image"])  # images are never noised
    assert (a["edge"] == 1).all()  # rate 1 flips every valid edge pixel
    assert torch.allclose(a["normals"].norm(dim=0), torch.ones(4, 4), atol=1e-5)
    assert not torch.equal(a["depth"], ds[0]["depth"]) and (a["depth"] > 0).all()
    assert (a["semseg"] != ds[0]["semseg"]).any()


def test_synthetic_takes_subsample_and_the_papers_noise_spelling(tmp_path):
    opts = {"num_train": 40, "num_val": 8, "num_test": 8, "image_size": 16, "cache_dir": tmp_path}
    ds = build_dataset("synthetic-nyud", "train", subsample={"fraction": 0.25}, **opts)
    assert len(ds) == 10
    noisy = build_dataset("synthetic-nyud", "train", label_noise={"semseg": {"classes": 5, "rate": 0.5}}, **opts)
    clean = build_dataset("synthetic-nyud", "train", **opts)
    assert any((noisy[i]["semseg"] != clean[i]["semseg"]).any() for i in range(4))
    with pytest.raises(MtlkitError, match="not made of scenes"):
        build_dataset("synthetic-nyud", "train", subsample={"scenes": 1}, **opts)


def test_replica_scenes_from_the_real_layout(shared_data: Path, tmp_path: Path):
    from tests.data.test_taskonomy import build_replica

    root = tmp_path / "replica"
    build_replica(shared_data, root)
    full = build_dataset("replica", "train", root=root, tasks=["semseg", "depth"], augment=False)
    assert full.groups() is not None and len(set(full.groups())) >= 1
    one = build_dataset("replica", "train", root=root, tasks=["semseg", "depth"], augment=False,
                        subsample={"scenes": 1}, label_noise={"semseg": {"classes": 5, "rate": 0.5}})
    assert len(set(one.groups())) == 1 and 0 < len(one) <= len(full)
    s = one[0]
    assert s["semseg"].dtype == torch.int64 and s["semseg"].shape == full[0]["semseg"].shape
