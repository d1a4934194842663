"""FeatureDistanceProbe: never touches the multi-task model (bit-identical weights, no global RNG), learns."""

from __future__ import annotations

import copy

import pytest
import torch

from mtlkit.distill import FeatureDistanceProbe, build_teacher
from mtlkit.errors import MtlkitError

from .tiny import TASKS, state_bytes, task_losses, tiny_model


def _trained_teachers() -> dict[str, dict]:
    """Weights of two 'cached single-task models' (made once, outside the runs being compared)."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        return {t: tiny_model((t,)).state_dict() for t in TASKS}


def _run(probe_on: bool, steps: int = 4) -> tuple[dict, torch.Tensor, FeatureDistanceProbe | None]:
    """A seeded run (dropout draws from the global RNG, BatchNorm updates statistics), with or without the probe."""
    torch.manual_seed(0)
    model = tiny_model(dropout=0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    weights = _trained_teachers()
    teachers = {t: build_teacher(lambda t=t: tiny_model((t,)), weights[t]) for t in TASKS} if probe_on else {}
    probe = None
    for it in range(steps):
        x = torch.randn(4, 3, 16, 16)
        opt.zero_grad(set_to_none=True)
        out, feats = model(x, return_features=True)
        sum(task_losses(out, x).values()).backward()
        if probe_on:
            if probe is None:  # built from the first step's features: no extra student forward
                probe = FeatureDistanceProbe.from_example(teachers, feats, x, select=[0, -1], seed=7)
            probe.step(feats, x, iteration=it)
        opt.step()
    return state_bytes(model), torch.get_rng_state(), probe


def test_probe_leaves_the_model_bit_identical():
    plain, rng_plain, _ = _run(False)
    probed, rng_probed, probe = _run(True)
    assert probed == plain  # every weight and BatchNorm statistic, bit for bit
    assert torch.equal(rng_probed, rng_plain)  # the probe drew nothing from the global generator
    assert [i for i, _ in probe.history] == [0, 1, 2, 3]
    assert set(probe.history[0][1]) == set(TASKS)


def test_probe_is_reproducible_from_its_seed():
    torch.manual_seed(0)
    feats, x = [torch.randn(2, 8, 8, 8)], torch.randn(2, 3, 16, 16)
    weights = _trained_teachers()
    teachers = {t: build_teacher(lambda t=t: tiny_model((t,)), weights[t]) for t in TASKS}
    a = FeatureDistanceProbe.from_example(teachers, feats, x, seed=3)
    b = FeatureDistanceProbe.from_example(teachers, feats, x, seed=3)
    c = FeatureDistanceProbe.from_example(teachers, feats, x, seed=4)
    assert state_bytes(a.adaptors) == state_bytes(b.adaptors) != state_bytes(c.adaptors)


def test_probe_learns_and_reports():
    torch.manual_seed(0)
    model, x = tiny_model().eval(), torch.randn(4, 3, 16, 16)
    weights = _trained_teachers()
    teachers = {t: build_teacher(lambda t=t: tiny_model((t,)), weights[t]) for t in TASKS}
    with torch.no_grad():
        feats = model.forward_features(x)
    probe = FeatureDistanceProbe.from_example(teachers, feats, x, every=2)
    assert probe.due(0) and not probe.due(1) and probe.due(4)
    tf = probe.teacher_features(x)
    for it in range(30):
        probe.step(feats, teacher_features=tf, iteration=it)
    first, last = probe.history[0][1], probe.history[-1][1]
    for t in TASKS:
        assert last[t] < 0.5 * first[t], (t, first[t], last[t])
    final = probe.final(window=5)
    assert final == pytest.approx({t: sum(d[t] for _, d in probe.history[-5:]) / 5 for t in TASKS})
    assert probe.curves()["depth"][3] == (3, probe.history[3][1]["depth"])
    # resume: a new probe with the saved state continues identically
    state = copy.deepcopy(probe.state_dict())
    assert set(state) == {"tasks", "adaptors", "optimizer", "history"}
    again = FeatureDistanceProbe.from_example(teachers, feats, x)
    again.load_state_dict(state)
    assert probe.step(feats, teacher_features=tf) == again.step(feats, teacher_features=tf)
    with pytest.raises(MtlkitError, match="every"):
        FeatureDistanceProbe(teachers, 12, 12, every=0)


def test_sync_grads_hook_sees_the_probe_gradients():
    torch.manual_seed(0)
    feats, x = [torch.randn(2, 12, 8, 8)], torch.randn(2, 3, 16, 16)
    weights = _trained_teachers()
    teachers = {t: build_teacher(lambda t=t: tiny_model((t,)), weights[t]) for t in TASKS}
    a = FeatureDistanceProbe.from_example(teachers, feats, x)
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    seen = []

    def zero_all(params):  # stands in for an all-reduce; the step must use what it leaves
        seen.append([p.grad is not None for p in params])
        for p in params:
            p.grad.zero_()

    a.step(feats, x, sync_grads=zero_all)
    b.step(feats, x)
    c.step(feats, x, sync_grads=lambda params: None)
    assert seen == [[True] * len(a.parameters())]
    assert state_bytes(a.adaptors) != state_bytes(b.adaptors) == state_bytes(c.adaptors)
