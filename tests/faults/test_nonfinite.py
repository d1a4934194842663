"""Non-finite steps: the guard checks the update (the gradients the optimizer would apply), not only the
loss; a skipped step changes no weight and no optimizer state; too many in a row abort with exit code 2."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mtlkit import tasks as tasks_mod
from mtlkit.cli import main as cli_main
from mtlkit.engine import Trainer
from mtlkit.errors import MtlkitError
from mtlkit.strategies._guard import NonFiniteError, guarded_step


def _nan_grad_loss(loss):
    """A finite loss whose gradient is NaN (sqrt at 0): a loss check alone lets it through."""
    def fn(pred, target):
        return loss(pred, target) + torch.sqrt(pred.sum() * 0)
    return fn


def _poison(trainer, every=1):
    task = trainer.tasks["depth"]
    calls = {"n": 0}
    base = task.loss

    def loss(pred, target):
        calls["n"] += 1
        out = base(pred, target)
        return out + torch.sqrt(pred.sum() * 0) if calls["n"] % every == 0 else out

    trainer.tasks["depth"] = tasks_mod.Task(task.name, task.channels, loss, task.meter_factory, task.primary,
                                            task.higher_is_better, display=task.display)


def test_guard_skips_a_non_finite_update_without_touching_anything():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    assert guarded_step(opt)
    before, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = torch.tensor([1.0, float("nan"), 1.0])
    assert not guarded_step(opt)
    assert torch.equal(p.detach(), before) and all(torch.equal(opt.state[p][k], v) for k, v in state.items())
    assert p.grad is None
    p.grad = torch.full((3,), 3e38)  # huge but finite: a step (no overflow in the check)
    assert guarded_step(opt)


def test_a_step_that_makes_weights_non_finite_aborts():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=float("inf"))
    p.grad = torch.ones(2)
    with pytest.raises(NonFiniteError, match="lower --lr"):
        guarded_step(opt)


def test_finite_loss_with_nan_gradient_is_skipped(tiny_config):
    cfg = tiny_config.replace(iters=4, eval_every=0, tasks=["semseg", "depth"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    _poison(trainer)
    metrics = trainer.fit()
    assert metrics["skipped_steps"] == 4
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not s for s in trainer.optimizer.state.values())  # Adam never stepped: no moments
    assert all(math.isfinite(v) for v in metrics["primary"].values())


@pytest.mark.parametrize("method, strategy", [("pcgrad", "joint"), ("equal", "selective")])
def test_nan_gradient_of_one_task_never_reaches_the_weights(tiny_config, method, strategy):
    """An aggregator drops the task's non-finite row itself (logged); selective skips that task's group."""
    cfg = tiny_config.replace(iters=3, eval_every=0, tasks=["semseg", "depth"], method=method, strategy=strategy)
    trainer = Trainer(cfg)
    _poison(trainer)
    metrics = trainer.fit()
    assert all(bool(torch.isfinite(v).all()) for v in trainer.model.state_dict().values() if v.is_floating_point())
    log = [json.loads(x) for x in open(f"{cfg.out}/log.jsonl")]
    if strategy == "selective":
        assert metrics["skipped_steps"] == 3 and all(r["steps"] == 1 for r in log)
    else:
        assert all(r["nonfinite_tasks"] == ["depth"] for r in log)


def test_skipped_steps_are_counted_and_survive_resume(tiny_config, tmp_path):
    cfg = tiny_config.replace(iters=6, eval_every=3, tasks=["semseg", "depth"])
    t = Trainer(cfg)
    _poison(t, every=2)  # every other forward: iterations 1, 3, 5 skipped
    t.fit()
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["skipped_steps"] == 3
    assert [json.loads(x)["skipped"] for x in open(tmp_path / "run" / "log.jsonl")] == [0, 1, 0, 1, 0, 1]


def test_consecutive_skipped_steps_abort(tiny_config, capsys):
    cfg = tiny_config.replace(iters=6, eval_every=0, tasks=["depth"], max_consecutive_skipped=3)
    t = Trainer(cfg)
    _poison(t)
    with pytest.raises(NonFiniteError, match="aborted at iteration 2: 3 consecutive steps skipped"):
        t.fit()
    assert len(open(f"{cfg.out}/log.jsonl").read().splitlines()) == 3


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1", "-inf"])
def test_bad_learning_rates_are_refused(tmp_path, capsys, lr):
    code = cli_main(["train", "--dataset", "tiny-random", "--iters", "1", "--out", str(tmp_path / "r"), f"--lr={lr}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "lr=" in err[0] and "finite number > 0" in err[0]
    assert not (tmp_path / "r").exists()


def test_max_consecutive_skipped_is_validated(tiny_config):
    with pytest.raises(MtlkitError, match="max_consecutive_skipped"):
        tiny_config.replace(max_consecutive_skipped=-1)
