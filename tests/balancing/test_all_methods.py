"""Every registered method trains the micro model (three joint steps) and resumes exactly from its state."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch

from mtlkit import balancing, strategies

from .balancing_helpers import make_batch, make_model, make_tasks

NAMES = balancing.BALANCERS.names()


def build(name, tasks):
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip(f"{name} needs {cls.requires} (mtlkit[solvers])")
    bal = balancing.get(name, tasks=list(tasks))
    bal.setup(epoch_iters=2)  # as the trainer does (DWA's period)
    return bal


def step(model, tasks, bal, opt, it):
    ctx = strategies.StepContext(model=model, tasks=tasks, balancer=bal, optimizer=opt, iteration=it,
                                 needs_features=bal.needs_features)
    return strategies.Joint().step(make_batch(seed=it), ctx)


def test_required_cli_names_are_registered():
    required = {"equal", "fixed", "uw", "dwa", "dtp", "rlw", "famo", "gradnorm", "gls", "avgnorm", "mgda", "pcgrad",
                "cagrad", "graddrop", "imtl", "aligned_mtl", "nash_mtl", "fairgrad", "upgrad", "dualproj", "gradvac"}
    assert required <= set(NAMES)
    for n in NAMES:
        cls = balancing.BALANCERS.get(n)
        assert cls.name == n and cls.kind in ("loss weighting", "gradient aggregation") and cls.paper


@pytest.mark.parametrize("name", NAMES)
def test_three_training_steps(name):
    tasks = make_tasks()
    model = make_model(tasks)
    bal = build(name, tasks)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(list(model.parameters()) + bal.parameters(), lr=1e-3)
    for it in range(3):
        info = step(model, tasks, bal, opt, it)
        assert info["steps"] == 1 and info["skipped"] == 0
        assert all(math.isfinite(w) for w in info["weights"].values())
    for p, _b in zip(model.parameters(), before, strict=True):
        assert torch.isfinite(p).all()
    moved = [not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)]
    assert all(moved), f"{name}: some parameters were not updated"


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_state_dict_is_exact(name):
    tasks = make_tasks()
    model = make_model(tasks)
    bal = build(name, tasks)
    opt = torch.optim.SGD(list(model.parameters()) + bal.parameters(), lr=1e-2)
    for it in range(2):
        step(model, tasks, bal, opt, it)
    model2 = copy.deepcopy(model)
    bal2 = build(name, tasks)
    bal2.load_state_dict(copy.deepcopy(bal.state_dict()))
    opt2 = torch.optim.SGD(list(model2.parameters()) + bal2.parameters(), lr=1e-2)
    torch.manual_seed(7)
    info = step(model, tasks, bal, opt, 2)
    torch.manual_seed(7)
    info2 = step(model2, tasks, bal2, opt2, 2)
    assert info2["weights"] == pytest.approx(info["weights"], rel=1e-5, abs=1e-8)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
