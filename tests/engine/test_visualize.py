"""Prediction pictures: dense grids for image inputs, confusion matrices and scatters for per-sample tasks,
nothing (and no crash) for the rest."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from mtlkit.engine.visualize import confusion, save_predictions
from mtlkit.tasks import make_task


class Tabular(torch.nn.Module):
    """A two-task MLP on (B, 6) features whose forward takes no ``tasks`` argument."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(6, 8)
        self.heads = torch.nn.ModuleDict({"kind": torch.nn.Linear(8, 3), "energy": torch.nn.Linear(8, 2)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body(x))
        return {t: head(h) for t, head in self.heads.items()}


def png(path: Path) -> np.ndarray:
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


def test_tabular_two_task_model_gets_a_confusion_matrix_and_a_scatter(tmp_path: Path) -> None:
    tasks = {"kind": make_task("classification", name="kind", num_classes=3),
             "energy": make_task("regression", name="energy", num_targets=2)}
    x = torch.randn(32, 6)
    targets = {"kind": torch.randint(0, 3, (32,)), "energy": torch.randn(32, 2)}
    targets["energy"][0, 1] = float("nan")  # a missing label is simply not drawn
    model = Tabular().train()
    written = save_predictions(model, None, tasks, tmp_path / "predictions.png", inputs=x, targets=targets)
    assert written == [tmp_path / "predictions_kind.png", tmp_path / "predictions_energy.png"]
    assert not (tmp_path / "predictions.png").exists()  # no dense task, no image input: no grid
    for p in written:
        png(p)
    assert model.training  # the model's mode is restored
    # the same from a dict batch whose input is not an image
    batch = {"image": x, **targets}
    assert save_predictions(model, batch, tasks, tmp_path / "p.png") == [tmp_path / "p_kind.png",
                                                                          tmp_path / "p_energy.png"]


def test_confusion_matrix_counts_match_sklearn() -> None:
    task = make_task("classification", num_classes=4)
    logits = torch.randn(50, 4)
    target = torch.randint(0, 4, (50,))
    target[:3] = -100  # ignored
    cm = confusion(task, logits, target)
    keep = target != -100
    assert np.array_equal(cm, confusion_matrix(target[keep], logits.argmax(1)[keep], labels=range(4)))
    binary = make_task("binary", threshold=0.7)
    logit = torch.tensor([[2.0], [0.5], [-1.0], [1.0]])  # sigmoid 0.88, 0.62, 0.27, 0.73
    assert np.array_equal(confusion(binary, logit, torch.tensor([1, 1, 0, 0])), [[1, 1], [1, 1]])


def test_outputs_of_a_whole_split_without_a_model(tmp_path: Path) -> None:
    tasks = {"churn": make_task("binary", name="churn"), "tags": make_task("multilabel", num_labels=3)}
    outputs = {"churn": torch.randn(200, 1), "tags": torch.randn(200, 3)}
    targets = {"churn": torch.randint(0, 2, (200,)), "tags": torch.randint(0, 2, (200, 3))}
    written = save_predictions(None, None, tasks, tmp_path / "predictions.png", outputs=outputs, targets=targets)
    assert written == [tmp_path / "predictions_churn.png"]  # multilabel: no picture
    png(written[0])
    with pytest.raises(ValueError, match="needs outputs, or a model and inputs"):
        save_predictions(None, None, tasks, tmp_path / "x.png", targets=targets)


def test_dense_grid_draws_only_image_shaped_inputs(tmp_path: Path) -> None:
    tasks = {"semseg": make_task("semseg", num_classes=5), "depth": make_task("depth"),
             "kind": make_task("classification", name="kind", num_classes=3)}
    out = {"semseg": torch.randn(3, 5, 8, 8), "depth": torch.rand(3, 1, 8, 8), "kind": torch.randn(3, 3)}
    targets = {"semseg": torch.randint(0, 5, (3, 8, 8)), "depth": torch.rand(3, 1, 8, 8),
               "kind": torch.tensor([0, 1, 2])}
    image = save_predictions(None, None, tasks, tmp_path / "img.png", inputs=torch.randn(3, 3, 8, 8),
                             outputs=out, targets=targets)
    odd = save_predictions(None, None, tasks, tmp_path / "odd.png", inputs=torch.randn(3, 2, 7),
                           outputs=out, targets=targets)
    assert image == [tmp_path / "img.png", tmp_path / "img_kind.png"]
    assert odd == [tmp_path / "odd.png", tmp_path / "odd_kind.png"]
    # the image column makes the first grid wider: 1 + 2 * 2 columns against 2 * 2
    assert png(image[0]).shape[1] > png(odd[0]).shape[1]


def test_a_picture_that_cannot_be_drawn_is_skipped_with_a_warning(tmp_path: Path) -> None:
    tasks = {"kind": make_task("classification", name="kind", num_classes=3),
             "energy": make_task("regression", name="energy")}
    outputs = {"kind": torch.randn(4, 3), "energy": torch.randn(4, 1)}
    targets = {"kind": torch.tensor([0, 1]), "energy": torch.randn(4)}  # two labels for four predictions
    with pytest.warns(UserWarning, match="predictions_kind.png skipped"):
        written = save_predictions(None, None, tasks, tmp_path / "predictions.png", outputs=outputs,
                                   targets=targets)
    assert written == [tmp_path / "predictions_energy.png"]


def test_micro_vit_on_images_still_writes_the_dense_grid(tmp_path: Path) -> None:
    from mtlkit.models import build_model

    tasks = {"semseg": make_task("semseg", num_classes=4), "normals": make_task("normals")}
    model = build_model("micro", tasks, img_size=16)
    batch = {"image": torch.randn(2, 3, 16, 16), "semseg": torch.randint(0, 4, (2, 16, 16)),
             "normals": torch.randn(2, 3, 16, 16)}
    assert save_predictions(model, batch, tasks, tmp_path / "predictions.png") == [tmp_path / "predictions.png"]
    png(tmp_path / "predictions.png")
