"""A user's own MLP on tabular data, end to end: UW / AvgNorm / selective with the Trainer, checkpoint,
evaluation and Δm against single-task baselines from ``mtlkit.baselines``."""

from __future__ import annotations

import json

import pytest
import torch

import mtlkit
from mtlkit.engine import load_model
from tests.engine.tabular import TASKS, Rows, mlp

COMMON = dict(iters=80, batch_size=32, eval_every=40, lr=5e-3, inputs="features")


@pytest.fixture(scope="module")
def data():
    return Rows(512, 0), Rows(128, 1), Rows(128, 2)


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    train, val, test = data
    torch.manual_seed(0)
    return mtlkit.baselines.train(mlp, TASKS, train, key="tabular-mlp", cache=tmp_path_factory.mktemp("cache"),
                                  val_data=val, test_data=test, **COMMON)


@pytest.mark.parametrize("balancer, strategy", [("uw", "joint"), ("avgnorm", "joint"), ("uw", "selective"),
                                                ("avgnorm", "selective")])
def test_custom_mlp_trains_evaluates_and_reports_delta_m(data, base, tmp_path, balancer, strategy):
    train, val, test = data
    torch.manual_seed(0)
    model = mlp(TASKS)
    opts = {"warmup": 5} if strategy == "selective" else None
    trainer = mtlkit.Trainer(model, TASKS, train, val_data=val, test_data=test, balancer=balancer,
                             strategy=strategy, strategy_options=opts, out=tmp_path / "run", baseline=base, **COMMON)
    metrics = trainer.fit()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["method"] == balancer and saved["strategy"] == strategy and saved["iterations"] == 80
    # it learned: far above chance on both classification tasks, regression error below the target's spread
    assert metrics["primary"]["income"] > 75 and metrics["primary"]["married"] > 55
    assert metrics["primary"]["age"] < 0.9 * float(test.y["age"].std())
    # Δm recomputed by hand from the baseline file
    gains = [(metrics["primary"][t] - base.test[t]) / base.test[t] * (1 if TASKS[t].higher_is_better else -1)
             for t in TASKS]
    assert saved["delta_m"] == pytest.approx(100 * sum(gains) / 3)
    assert saved["baseline_key"] == "tabular-mlp"
    # checkpoint: the user's object gets the weights back; evaluating it gives the same numbers
    assert not (tmp_path / "run" / "predictions.png").exists()  # no task with a picture
    again, spec = load_model(tmp_path / "run", model=mlp(TASKS))
    assert spec["class"].endswith("SharedBottom")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v.cpu())
    evaluated = mtlkit.engine.evaluate(again, trainer._eval_loader("test"), TASKS, input_key="features")
    assert evaluated["primary"] == pytest.approx(metrics["primary"])
    if balancer == "uw":  # UW's log-variances were trained by the Trainer's optimizer
        names = [g["name"] for g in trainer.optimizer.param_groups]
        assert any(n.startswith("balancer") for n in names)
        moved = [p for g in trainer.optimizer.param_groups if g["name"].startswith("balancer") for p in g["params"]]
        assert any(bool(p.detach().abs().sum() > 0) for p in moved)
        if strategy == "selective":  # each task group's UW has its own log-variances in the optimizer
            assert any(n.startswith("balancer:") for n in names)


def test_baselines_are_cached_under_the_users_key(data, base, monkeypatch):
    train, val, test = data
    assert set(base.test) == set(TASKS) and base.key == "tabular-mlp"
    assert base.path.name == "baselines.json" and base.path.parent.name == "tabular-mlp"

    def boom(*a, **k):
        raise AssertionError("retrained a cached baseline")

    monkeypatch.setattr(mtlkit.Trainer, "fit", boom)
    again = mtlkit.baselines.train(mlp, TASKS, train, key="tabular-mlp", cache=base.path.parent.parent,
                                   val_data=val, test_data=test, **COMMON)
    assert again.test == base.test
    assert mtlkit.baselines.find("tabular-mlp", list(TASKS), cache=base.path.parent.parent).test == base.test


def test_tuple_batches_and_a_batch_function(data, tmp_path):
    train, val, _ = data
    pairs = Rows(256, 0, as_tuple=True)
    m1 = mtlkit.Trainer(mlp(TASKS), TASKS, pairs, val_data=Rows(64, 1, as_tuple=True), iters=5, batch_size=16,
                        out=tmp_path / "a").fit()
    m2 = mtlkit.Trainer(mlp(TASKS), TASKS, train, val_data=val, iters=5, batch_size=16, out=tmp_path / "b",
                        inputs=lambda b: (b["features"], {t: b[t] for t in TASKS})).fit()
    assert set(m1["primary"]) == set(m2["primary"]) == set(TASKS)
    with pytest.raises(mtlkit.MtlkitError, match="no inputs under key 'image'"):
        mtlkit.Trainer(mlp(TASKS), TASKS, train, iters=2, batch_size=16, out=tmp_path / "c").fit()
