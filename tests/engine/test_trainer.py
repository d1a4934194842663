import json
import math
from pathlib import Path

import pytest
import torch

from mtlkit.engine import Trainer, load_model, train_single_task_baselines
from mtlkit.errors import MtlkitError
from tests.faults.helpers import Stop, StopAt

SCHEMA = {"tasks", "primary", "delta_m", "baseline", "method", "iterations", "seconds_per_iter", "params"}


def test_run_writes_schema_and_fills_delta_m_from_cached_baselines(tiny_config):
    cfg = tiny_config
    path = train_single_task_baselines(cfg, ["semseg", "depth", "normals", "edge"])
    base = json.loads(path.read_text())
    assert set(base["test"]) == {"semseg", "depth", "normals", "edge"}
    metrics = Trainer(cfg).fit()
    run = json.loads(Path(cfg.out, "metrics.json").read_text())
    assert SCHEMA <= set(run)
    assert run["baseline"] == str(path)
    # Δm recomputed by hand from the two files
    gains = []
    for t, higher in {"semseg": True, "depth": False, "normals": False, "edge": True}.items():
        sign = 1 if higher else -1
        gains.append(sign * (run["primary"][t] - base["test"][t]) / base["test"][t] * 100)
    assert run["delta_m"] == pytest.approx(sum(gains) / 4)
    assert metrics["iterations"] == cfg.iters
    for name in ("config.yaml", "log.jsonl", "log.csv", "model.safetensors", "model.json", "predictions.png"):
        assert Path(cfg.out, name).is_file(), name
    lines = open(f"{cfg.out}/log.jsonl").read().splitlines()
    assert len(lines) == cfg.iters and set(json.loads(lines[0])["losses"]) == set(base["test"])


def test_baselines_are_found_again_not_retrained(tiny_config, monkeypatch):
    train_single_task_baselines(tiny_config, ["semseg", "depth"])

    def boom(*a, **k):
        raise AssertionError("retrained a cached baseline")

    monkeypatch.setattr(Trainer, "fit", boom)
    train_single_task_baselines(tiny_config, ["semseg", "depth"])


def test_training_lowers_the_loss(tiny_config):
    cfg = tiny_config.replace(iters=40, eval_every=0, lr=2e-3, tasks=["semseg", "depth"])
    Trainer(cfg).fit()
    losses = [json.loads(line)["losses"] for line in open(f"{cfg.out}/log.jsonl")]
    first = sum(sum(x.values()) for x in losses[:5]) / 5
    last = sum(sum(x.values()) for x in losses[-5:]) / 5
    assert last < 0.8 * first


def test_resume_is_exact(tiny_config, tmp_path):
    full = tiny_config.replace(iters=8, eval_every=4, out=str(tmp_path / "full"))
    Trainer(full).fit()
    part = full.replace(out=str(tmp_path / "part"))
    # Interrupt after 4 iterations: train with the same schedule length, stop at the first checkpoint.
    t = Trainer(part)
    t.callbacks.append(StopAt(4))
    with pytest.raises(Stop):
        t.fit()
    Trainer(part).fit(resume=True)
    a = load_model(tmp_path / "full")[0].state_dict()
    b = load_model(tmp_path / "part")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)



def test_nan_loss_skips_the_step_and_never_corrupts(tiny_config, monkeypatch):
    from mtlkit import tasks as tasks_mod

    cfg = tiny_config.replace(iters=4, eval_every=0, tasks=["depth"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    task = trainer.tasks["depth"]
    trainer.tasks["depth"] = tasks_mod.Task(task.name, task.channels, lambda p, t: p.sum() * float("nan"),
                                            task.meter_factory, task.primary, task.higher_is_better,
                                            display=task.display)
    metrics = trainer.fit()
    assert metrics["skipped_steps"] == 4
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(math.isfinite(v) for v in metrics["primary"].values())


def test_bad_values_fail_before_training(tiny_config):
    with pytest.raises(MtlkitError, match="iters"):
        tiny_config.replace(iters=-1)
    with pytest.raises(MtlkitError, match="divisible"):
        Trainer(tiny_config.replace(image_size=20))


@pytest.mark.parametrize("method", ["uw"])  # IMTL / GradNorm compose the same way (tests/test_matrix.py)
def test_selective_with_learnable_group_balancers_resumes_exactly(tiny_config, tmp_path, method):
    """Each task group's balancer has its own parameters in the optimizer; a resumed run rebuilds them in
    order and ends bit-identical to the uninterrupted one."""
    opts = {"warmup": 1, "grouping": "random", "num_groups": 2}
    full = tiny_config.replace(iters=6, eval_every=3, out=str(tmp_path / "full"), method=method,
                               tasks=["semseg", "depth", "edge"], strategy="selective", strategy_options=opts)
    t_full = Trainer(full)
    t_full.fit()
    groups = [g["name"] for g in t_full.optimizer.param_groups if g["name"].startswith("balancer:")]
    assert groups  # the random 2-group split made proper sub-groups with their own parameters
    part = full.replace(out=str(tmp_path / "part"))
    t = Trainer(part)
    t.callbacks.append(StopAt(3))
    with pytest.raises(Stop):
        t.fit()
    resumed = Trainer(part)
    resumed.fit(resume=True)
    a = load_model(tmp_path / "full")[0].state_dict()
    b = load_model(tmp_path / "part")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(t_full.optimizer.param_groups, resumed.optimizer.param_groups, strict=True):
        assert x["name"] == y["name"]
        assert all(torch.equal(p, q) for p, q in zip(x["params"], y["params"], strict=True))
