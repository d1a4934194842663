"""Gradient statistics: hand-checked numbers, the recorder in a training step, the plots from a run's log."""

from __future__ import annotations

import json

import pytest
import torch

from mtlkit import balancing, make_task, strategies
from mtlkit.analysis import PLOTTERS, GradStatsRecorder, gradient_statistics
from mtlkit.errors import MtlkitError
from mtlkit.models import build_model


def test_statistics_on_a_hand_made_jacobian():
    jac = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    combined = torch.tensor([1.0, 1.0])
    s = gradient_statistics(jac, combined, ["a", "b", "c"])
    assert s["norms"] == pytest.approx({"a": 3.0, "b": 2.0, "c": 1.0})
    assert s["cos"] == pytest.approx({"a|b": 0.0, "a|c": -1.0, "b|c": 0.0})
    assert s["dot"] == pytest.approx({"a|b": 0.0, "a|c": -3.0, "b|c": 0.0})
    r = 2 ** -0.5
    assert s["cos_update"] == pytest.approx({"a": r, "b": r, "c": -r})
    assert s["update_norm"] == pytest.approx(2**0.5) and s["conflicts"] == 1
    zero = gradient_statistics(torch.zeros(2, 2), torch.zeros(2), ["a", "b"])  # no NaN from zero gradients
    assert zero["cos"] == {"a|b": 0.0} and zero["cos_update"] == {"a": 0.0, "b": 0.0}


def _setup():
    tasks = {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth")}
    torch.manual_seed(0)
    model = build_model("micro", tasks, 32)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g), "semseg": torch.randint(0, 3, (2, 32, 32), generator=g),
             "depth": torch.rand(2, 1, 32, 32, generator=g) + 0.1}
    return tasks, model, batch


@pytest.mark.parametrize("method", ["equal", "pcgrad"])
def test_recorder_in_a_joint_step_matches_separate_gradients(method):
    tasks, model, batch = _setup()
    out = model(batch["image"])
    losses = {t: tasks[t].loss(out[t], batch[t]) for t in tasks}
    params = model.last_shared_parameters()
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, params, retain_graph=True)])
             for l in losses.values()]
    model.zero_grad(set_to_none=True)
    bal = balancing.get(method, tasks=list(tasks))
    rec = GradStatsRecorder(every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay, so the step is reproducible
    ctx = strategies.StepContext(model=model, tasks=tasks, balancer=bal, optimizer=opt, iteration=0,
                                 needs_features=bal.needs_features, grad_stats=rec)
    info = strategies.Joint().step(batch, ctx)
    s = info["grad_stats"]
    assert s["norms"]["semseg"] == pytest.approx(float(grads[0].norm()), rel=1e-4)
    cos = float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))
    assert s["cos"]["semseg|depth"] == pytest.approx(cos, rel=1e-4, abs=1e-6)
    if method == "equal":  # the update on the last layer is g_1 + g_2
        total = grads[0] + grads[1]
        assert s["cos_update"]["depth"] == pytest.approx(float(grads[1] @ total / (grads[1].norm() * total.norm())),
                                                         rel=1e-4)
    ctx.iteration = 1
    assert "grad_stats" not in strategies.Joint().step(batch, ctx)  # every 2 steps: off at odd iterations
    json.dumps(s)  # goes into log.jsonl as it is


def test_recorder_options_are_checked():
    with pytest.raises(MtlkitError, match="every"):
        GradStatsRecorder(every=0)
    with pytest.raises(MtlkitError, match="params"):
        GradStatsRecorder(params="first")


def _fake_log(path, n=30, with_stats=True):
    lines = []
    for i in range(n):
        rec = {"iter": i, "losses": {"a": 1.0, "b": 2.0}, "weights": {"a": 1.0 + i / n, "b": 50.0}}
        if with_stats and i % 3 == 0:
            rec["grad_stats"] = {"norms": {"a": 1.0, "b": 0.1 + i}, "cos": {"a|b": 0.3 - i / n},
                                 "dot": {"a|b": -0.1}, "cos_update": {"a": 0.5, "b": 0.4}, "update_norm": 1.0,
                                 "conflicts": 1, "params": "last"}
        lines.append(json.dumps(rec))
    (path / "log.jsonl").write_text("\n".join(lines) + "\n")


def test_plots_from_a_run_log(tmp_path):
    _fake_log(tmp_path)
    written = PLOTTERS.get("grad_stats")(tmp_path, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["grad_cos_update.png", "grad_norms.png", "grad_pair_cosine.png",
                                                "grad_pair_dot.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)
    (w,) = PLOTTERS.get("weights")(tmp_path, tmp_path / "plots")
    assert w.name == "weights.png"


def test_plots_are_empty_without_data(tmp_path):
    assert PLOTTERS.get("grad_stats")(tmp_path, tmp_path / "plots") == []  # no log at all
    _fake_log(tmp_path, with_stats=False)
    assert PLOTTERS.get("grad_stats")(tmp_path, tmp_path / "plots") == []


def test_trainer_records_and_analyze_plots(tiny_config, tmp_path):
    from mtlkit.cli import main
    from mtlkit.engine import Trainer

    cfg = tiny_config.replace(method="avgnorm", grad_stats_every=2, eval_every=0)
    Trainer(cfg).fit()
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [("grad_stats" in r) for r in records] == [True, False] * 3
    assert set(records[0]["grad_stats"]["norms"]) == set(records[0]["weights"])
    assert main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "grad_norms.png").is_file() and (tmp_path / "plots" / "weights.png").is_file()
