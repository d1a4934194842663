"""MultiMNIST built from the real MNIST t10k idx files: construction, labels, sample contract, checks."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtlkit.data import build_dataset, check_dataset, denormalize_image
from mtlkit.data.multimnist import overlay, read_idx
from mtlkit.errors import MtlkitError


@pytest.fixture
def mnist_root(shared_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mnist"
    (root / "MNIST" / "raw").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data / "mnist" / name, root / "MNIST" / "raw" / name)
    return root


def reference_image(lim: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """Sener & Koltun's construction, written out as their loader does it, resized with PIL."""
    new_im = np.zeros((36, 36))
    new_im[0:28, 0:28] = lim
    new_im[6:34, 6:34] = rim
    new_im[6:28, 6:28] = np.maximum(lim[6:28, 6:28], rim[0:22, 0:22])
    return np.array(Image.fromarray(new_im.astype(np.uint8)).resize((28, 28), Image.NEAREST))


def test_overlay_matches_the_reference_construction(mnist_root: Path) -> None:
    digits = read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    assert digits.shape == (10000, 28, 28)
    pairs = [(0, 1), (5, 9999), (42, 42)]
    got = overlay(digits[[a for a, _ in pairs]], digits[[b for _, b in pairs]])
    for k, (a, b) in enumerate(pairs):
        assert np.array_equal(got[k], reference_image(digits[a], digits[b]))


def test_labels_are_the_two_digits(mnist_root: Path) -> None:
    ds = build_dataset("multimnist", "val", root=mnist_root)
    digits = read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    assert len(ds) == 10000 and np.array_equal(ds.labels["left"], labels)
    for i in (0, 17, 9999):
        # the right digit is one whose overlay reproduces the image and whose label is the "right" target
        candidates = np.flatnonzero((overlay(np.repeat(digits[i: i + 1], 10000, 0), digits) == ds.images[i])
                                    .all((1, 2)))
        assert candidates.size and (labels[candidates] == ds.labels["right"][i]).any()
    again = build_dataset("multimnist", "test", root=mnist_root)
    assert np.array_equal(again.images, ds.images)  # fixed seed: identical pairs
    other = build_dataset("multimnist", "test", root=mnist_root, seed=1)
    assert not np.array_equal(other.labels["right"], ds.labels["right"])


def test_sample_contract_and_tasks(mnist_root: Path) -> None:
    ds = build_dataset("multimnist", "val", root=mnist_root, tasks=["right", "left"], image_size=32)
    s = ds[3]
    assert set(s) == {"image", "left", "right"} and s["image"].shape == (3, 32, 32)
    assert s["left"].dtype == torch.int64 and s["left"].dim() == 0
    grey = denormalize_image(s["image"])
    assert torch.allclose(grey[0], grey[1], atol=1e-6) and grey.max() > 0.9
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["left"].shape == (2,)
    tasks = ds.make_tasks()
    assert tasks["left"].kind == "classification" and tasks["left"].channels == 10
    logits = torch.nn.functional.one_hot(batch["left"], 10).float()
    meter = tasks["left"].meter()
    meter.update(logits, batch["left"])
    assert meter.compute()["accuracy"] == 100.0
    assert tasks["left"].loss(logits * 50, batch["left"]).item() < 1e-6


def test_missing_and_corrupt_files(mnist_root: Path) -> None:
    with pytest.raises(MtlkitError, match="train-images-idx3-ubyte"):
        build_dataset("multimnist", "train", root=mnist_root)
    problems = check_dataset("multimnist", mnist_root)
    assert {Path(p.path).name for p in problems} == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"}
    labels = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 11]))
    problems = [p.problem for p in check_dataset("multimnist", mnist_root) if p.path == str(labels)]
    assert problems == ["label values up to 11", "3 labels for 10000 images"]
    with gzip.open(labels, "wb") as f:
        f.write(b"\x00\x00\x07\x01garbage")
    problems = {Path(p.path).name: p for p in check_dataset("multimnist", mnist_root)}
    assert "bad magic" in problems["t10k-labels-idx1-ubyte.gz"].problem
