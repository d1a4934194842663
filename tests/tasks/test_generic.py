"""Generic tasks (classification, binary, multilabel, regression) and a user's own Task, end to end."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mtlkit.engine.evaluate import evaluate
from mtlkit.errors import MtlkitError
from mtlkit.metrics import BinaryMeter, ClassificationMeter, GenericRegressionMeter, Meter, MultilabelMeter
from mtlkit.tasks import TASKS, Task, make_task


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    ("factory", "params", "channels", "kind", "display", "primary", "meter"),
    [
        ("classification", {"num_classes": 4}, 4, "classification", "labels", "accuracy", ClassificationMeter),
        ("binary", {}, 1, "binary", "prob", "auroc", BinaryMeter),
        ("multilabel", {"num_labels": 6}, 6, "multilabel", "prob", "mAP", MultilabelMeter),
        ("regression", {}, 1, "regression", "regression", "mae", GenericRegressionMeter),
        ("regression", {"num_targets": 3, "loss": "l1"}, 3, "regression", "regression", "mae", GenericRegressionMeter),
    ],
)
def test_factories(factory: str, params: dict, channels: int, kind: str, display: str, primary: str,
                   meter: type) -> None:
    t = make_task(factory, name="income", **params)
    assert (t.name, t.channels, t.kind, t.display, t.primary, t.factory) == (
        "income", channels, kind, display, primary, factory)
    assert not t.dense
    assert isinstance(t.meter(), meter) and t.meter() is not t.meter()
    assert t.directions == meter.directions
    assert t.higher_is_better is meter.directions[primary]
    again = make_task(t.factory, **t.params)  # what a checkpoint stores rebuilds the same task
    assert dataclasses.replace(again, loss_fn=None, meter_factory=None) == dataclasses.replace(
        t, loss_fn=None, meter_factory=None)
    assert {"classification", "binary", "multilabel", "regression", "left", "right", "semseg"} <= set(TASKS.names())


def test_primary_can_be_any_score_with_its_direction() -> None:
    assert make_task("regression", primary="r2").higher_is_better is True
    assert make_task("regression", primary="rmse").higher_is_better is False
    assert make_task("binary", primary="f1").primary == "f1"


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        ("classification", {}, r"task 'classification': missing a required argument: 'num_classes'; its options"),
        ("classification", {"num_classes": 1}, r"num_classes must be an int >= 2"),
        ("classification", {"num_classes": 3, "primary": "mIoU"}, r"primary must be one of accuracy, macro_f1"),
        ("regression", {"loss": "huber"}, r"loss must be one of mse, l1, got 'huber'"),
        ("regression", {"num_targets": 0}, r"num_targets must be a positive int"),
        ("binary", {"threshold": 1.5}, r"threshold must be in \(0, 1\)"),
        ("binary", {"pos_weight": -1.0}, r"pos_weight must be > 0"),
        ("multilabel", {"num_labels": 3, "colour": 1}, r"unexpected keyword argument 'colour'"),
        ("depth", {"num_classes": 3}, r"task 'depth': .*'num_classes'"),
    ],
)
def test_bad_parameters_are_one_line_errors(factory: str, params: dict, message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        make_task(factory, **params)


def test_classification_loss_by_hand_with_ignored_targets() -> None:
    t = make_task("classification", num_classes=3)
    pred = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 1.0, 1.0]])
    target = torch.tensor([1, 0, -100])
    lse = [math.log(math.exp(1) + math.exp(2) + 1), math.log(2 + math.exp(3))]
    assert t.loss(pred, target).item() == pytest.approx(((lse[0] - 2) + (lse[1] - 0)) / 2)
    assert t.loss(pred, target.view(3, 1)).item() == pytest.approx(t.loss(pred, target).item())  # (N, 1) targets
    smooth = make_task("classification", num_classes=3, label_smoothing=0.1)
    assert smooth.loss(pred[:2], target[:2]).item() == pytest.approx(
        F.cross_entropy(pred[:2], target[:2], label_smoothing=0.1).item())


def test_binary_and_multilabel_bce_by_hand() -> None:
    t = make_task("binary")
    logits = torch.tensor([[0.5], [-2.0], [8.0]])
    target = torch.tensor([1.0, 0.0, -100.0])
    assert t.loss(logits, target).item() == pytest.approx((softplus(-0.5) + softplus(-2.0)) / 2)
    weighted = make_task("binary", pos_weight=3.0)
    assert weighted.loss(logits, target).item() == pytest.approx((3 * softplus(-0.5) + softplus(-2.0)) / 2)
    ml = make_task("multilabel", num_labels=2)
    assert ml.loss(logits.view(1, 3)[:, :2].reshape(1, 2), torch.tensor([[1, -100]])).item() == pytest.approx(
        softplus(-0.5))
    with pytest.raises(MtlkitError, match="one output per target"):
        t.loss(torch.zeros(3, 2), target)


def test_regression_losses_skip_missing_targets() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    target = torch.tensor([[2.0, float("nan")], [3.0, 1.0]])
    assert make_task("regression", num_targets=2).loss(pred, target).item() == pytest.approx((1 + 0 + 16) / 3)
    assert make_task("regression", num_targets=2, loss="l1").loss(pred, target).item() == pytest.approx(5 / 3)
    assert make_task("regression").loss(pred[:, :1], target[:, 0]).item() == pytest.approx(0.5)  # (N,1) vs (N,)


@pytest.mark.parametrize(
    ("task", "target"),
    [
        (make_task("classification", num_classes=3), torch.full((4,), -100)),
        (make_task("binary"), torch.full((4, 1), -100.0)),
        (make_task("multilabel", num_labels=1), torch.full((4, 1), -100)),
        (make_task("regression"), torch.full((4, 1), float("nan"))),
    ],
)
def test_no_valid_target_gives_zero_loss_with_zero_gradient(task: Task, target: torch.Tensor) -> None:
    pred = torch.randn(4, task.channels, requires_grad=True)
    loss = task.loss(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_postprocess_per_kind() -> None:
    logits = torch.randn(5, 3)
    assert torch.equal(make_task("classification", num_classes=3).postprocess(logits), logits.argmax(1))
    assert torch.allclose(make_task("multilabel", num_labels=3).postprocess(logits), logits.sigmoid())
    assert torch.equal(make_task("regression", num_targets=3).postprocess(logits), logits)


def test_task_validates_kind_display_channels_and_directions() -> None:
    with pytest.raises(MtlkitError, match="kind must be one of dense, classification"):
        Task("x", 1, None, None, "mae", False, kind="tabular")
    with pytest.raises(MtlkitError, match="display must be one of"):
        Task("x", 1, None, None, "mae", False, display="scatter")
    with pytest.raises(MtlkitError, match="channels must be a positive int"):
        Task("x", 0, None, None, "mae", False)
    wrong = Task("x", 1, None, GenericRegressionMeter, "mae", True, kind="regression")
    with pytest.raises(MtlkitError, match="primary metric 'mae' has higher_is_better=True but its meter says False"):
        _ = wrong.directions
    with pytest.raises(NotImplementedError, match="override Task.loss"):
        Task("x", 1, None, None, "mae", False).loss(torch.zeros(1), torch.zeros(1))


class MedianMeter(Meter):
    """A user's meter without ``directions``: the median absolute error over a split."""

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {}

    def reset(self) -> None:
        self.errors: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.errors.append((pred.reshape(target.shape) - target).abs().flatten())

    def compute(self) -> dict[str, float]:
        return {"median_ae": float(torch.cat(self.errors).median())}


@dataclasses.dataclass(frozen=True)
class HuberTask(Task):
    """A user's task: its own loss and meter by overriding, no loss_fn / meter_factory."""

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(pred.reshape(target.shape), target)

    def meter(self) -> Meter:
        return MedianMeter()


class TabularModel(torch.nn.Module):
    """A two-head MLP on (B, 5) features returning ``{task: output}``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU())
        self.heads = torch.nn.ModuleDict({"kind": torch.nn.Linear(8, 3), "energy": torch.nn.Linear(8, 1),
                                          "churn": torch.nn.Linear(8, 1)})

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {t: self.heads[t](h) for t in (tasks or list(self.heads))}


def test_user_task_and_generic_tasks_evaluate_through_the_engine() -> None:
    energy = HuberTask("energy", 1, None, None, "median_ae", False, kind="regression",
                       metric_directions={"median_ae": False})
    tasks = {"kind": make_task("classification", name="kind", num_classes=3), "energy": energy,
             "churn": make_task("binary", name="churn")}
    assert energy.directions == {"median_ae": False}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    batches = [{"image": x[i : i + 16], "kind": torch.randint(0, 3, (len(x[i : i + 16]),), generator=g),
                "energy": torch.randn(len(x[i : i + 16]), 1, generator=g),
                "churn": torch.randint(0, 2, (len(x[i : i + 16]),), generator=g)} for i in range(0, 40, 16)]
    model = TabularModel()
    result = evaluate(model, batches, tasks, torch.device("cpu"))  # type: ignore[arg-type]
    with torch.no_grad():
        out = model(x)
    kind = ClassificationMeter(3)
    kind.update(out["kind"], torch.cat([b["kind"] for b in batches]))
    truth = torch.cat([b["energy"] for b in batches])
    assert result["tasks"]["kind"] == pytest.approx(kind.compute())
    assert result["primary"]["energy"] == pytest.approx(float((out["energy"] - truth).abs().flatten().median()))
    assert set(result["tasks"]["churn"]) == {"accuracy", "f1", "macro_f1", "auroc"}
    assert energy.loss(out["energy"], truth).item() == pytest.approx(F.huber_loss(out["energy"], truth).item())
