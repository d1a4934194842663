"""The model protocol: SharedBottom's parameter split, and methods refused before training with one line."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import mtlkit
from mtlkit import balancing, strategies
from mtlkit.engine import check_model
from mtlkit.errors import MtlkitError
from mtlkit.models import has_features, run_model
from tests.engine.tabular import FEATURES, TASKS, Rows, mlp


class Plain(nn.Module):
    """A model that only returns {task: output}: no parameter split, no features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(FEATURES, 16)
        self.heads = nn.ModuleDict({t: nn.Linear(16, TASKS[t].channels) for t in TASKS})

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {t: head(h) for t, head in self.heads.items()}


def test_shared_bottom_splits_parameters_and_names_the_last_layer():
    model = mlp(TASKS)
    shared, heads = model.shared_parameters(), {t: model.task_parameters(t) for t in TASKS}
    assert {id(p) for p in shared} == {id(p) for p in model.encoder.parameters()}
    assert sum(len(v) for v in heads.values()) + len(shared) == len(list(model.parameters()))
    last = model.last_shared_parameters()
    assert [p.shape for p in last] == [torch.Size([32, 32]), torch.Size([32])]  # the second Linear
    out, feats = run_model(model, torch.randn(5, FEATURES))
    assert set(out) == set(TASKS) and feats.shape == (5, 32) and has_features(model)


@pytest.mark.parametrize("method, needle", [
    ("pcgrad", "needs model.shared_parameters()"),
    ("avgnorm", "needs model.shared_parameters()"),
    ("mgda_ub", "needs model.forward_features / forward_heads"),
])
def test_a_method_the_model_cannot_serve_is_refused_before_training(method, needle, tmp_path):
    with pytest.raises(MtlkitError, match=needle) as e:
        mtlkit.Trainer(Plain(), TASKS, Rows(64, 0), balancer=method, iters=2, batch_size=8, inputs="features",
                       out=tmp_path)
    assert "\n" not in str(e.value) and "SharedBottom" in str(e.value)
    assert not (tmp_path / "log.jsonl").exists()


def test_refusals_for_strategies_and_transforms(tmp_path):
    eq = balancing.get("equal")
    with pytest.raises(MtlkitError, match="strategy 'selective' needs"):
        check_model(Plain(), list(TASKS), balancer=eq, strategy=strategies.get("selective"))
    with pytest.raises(MtlkitError, match="dtme expands a ViT's token stream"):
        mtlkit.Trainer(mlp(TASKS), TASKS, Rows(64, 0), transforms=["dtme"], iters=20, batch_size=8,
                       inputs="features", out=tmp_path)
    with pytest.raises(MtlkitError, match="lr_ts=4.0 needs"):
        check_model(Plain(), list(TASKS), balancer=eq, lr_ts=4.0)


def test_a_plain_model_trains_with_loss_weightings(tmp_path):
    for method in ("equal", "uw", "dwa"):
        m = mtlkit.Trainer(Plain(), TASKS, Rows(64, 0), val_data=Rows(32, 1), balancer=method, iters=3,
                           batch_size=8, inputs="features", out=tmp_path / method).fit()
        assert m["iterations"] == 3 and set(m["primary"]) == set(TASKS)


def test_balancer_parameters_in_no_optimizer_warn_once_with_the_fix():
    model = mlp(TASKS)
    data = Rows(64, 0)
    x = data.x[:16]
    for include, expect in ((False, 1), (True, 0)):
        uw = balancing.get("uw", tasks=list(TASKS))
        params = [*model.parameters(), *uw.parameters()] if include else list(model.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(4):
                opt.zero_grad()
                out = model(x)
                uw.backward({t: TASKS[t].loss(out[t], data.y[t][:16]) for t in TASKS})
                opt.step()
        hits = [w for w in caught if "in no optimizer" in str(w.message)]
        assert len(hits) == expect
        if hits:
            assert "balancer.parameters()" in str(hits[0].message) and "\n" not in str(hits[0].message)


def test_trainer_calls_the_balancer_hooks_and_reports(tmp_path):
    """``setup(epoch_iters=...)`` before training (also for selective's group balancers), ``report()`` into
    metrics.json under "method_report"."""
    import json

    calls = []

    class Hooked(balancing.Equal):
        def setup(self, *, epoch_iters):
            calls.append((tuple(self.tasks or ()), epoch_iters))

        def report(self):
            return {"seen": len(calls)}

    strat = strategies.get("selective", grouping="random", num_groups=2)
    strat.balancer_factory = lambda group: Hooked(group)
    m = mtlkit.Trainer(mlp(TASKS), TASKS, Rows(64, 0), val_data=Rows(16, 1), balancer=Hooked(list(TASKS)),
                       strategy=strat, iters=4, batch_size=8, inputs="features", out=tmp_path).fit()
    assert calls[0] == (tuple(TASKS), 64 // 8)  # the run's balancer, before the first step
    assert len(calls) >= 3 and all(e == 8 for _, e in calls)  # and every task group's, when it first appears
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["method_report"] == m["method_report"] == {"seen": len(calls)}


def test_a_user_model_run_needs_the_model_object_to_load(tmp_path, capsys):
    from mtlkit.cli import main
    from mtlkit.engine import load_model

    model = Plain()
    mtlkit.Trainer(model, TASKS, Rows(32, 0), iters=2, batch_size=8, inputs="features", out=tmp_path).fit()
    with pytest.raises(MtlkitError, match="holds a user model .*pass the model object"):
        load_model(tmp_path)
    again, _ = load_model(tmp_path, model=Plain())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    with pytest.raises(MtlkitError, match="do not fit SharedBottom"):
        load_model(tmp_path, model=mlp(TASKS))
    assert main(["eval", str(tmp_path)]) == 2
    assert "pass the model object" in capsys.readouterr().err
