"""Every method under a GradScaler (``grad_scale=``): the same update as without one, and an overflow skipped.

Run as a GradScaler user does: ``info = balancer.backward(losses, ..., grad_scale=scaler)``, then
``scaler.step(optimizer)`` and ``scaler.update()``. The balancer back-propagates S times its objective and
takes its decisions (norms, Gramians, solvers) on the unscaled gradients, so after the scaler's unscale the
parameters must move exactly as in a plain fp32 step (table-driven over the registry).
"""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch

from mtlkit import balancing

from .balancing_helpers import forward_losses, make_batch, make_model, make_tasks

NAMES = balancing.BALANCERS.names()
SCALE = 2.0**14


def build(name, tasks):
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip(f"{name} needs {cls.requires} (mtlkit[solvers])")
    bal = balancing.get(name, tasks=list(tasks))
    bal.setup(epoch_iters=2)
    return bal


def one_step(model, tasks, bal, opt, it, scaler=None, blow_up: str | None = None):
    """One step as a training loop does it; ``blow_up``: add to that task's loss a term of value 0 whose
    gradient (1e30 on the shared features) is finite in fp32 but overflows times a scale of 2^60."""
    batch = make_batch(seed=it)
    opt.zero_grad(set_to_none=True)
    for p in bal.parameters():
        p.grad = None
    losses, feats = forward_losses(model, tasks, batch)
    if blow_up is not None:
        f = feats[-1]
        losses[blow_up] = losses[blow_up] + 1e30 * (f - f.detach()).mean()
    ctx = {"shared": model.shared_parameters(), "last_shared": model.last_shared_parameters(), "model": model,
           "features": feats if bal.needs_features else None, "iteration": it}
    torch.manual_seed(100 + it)  # random methods draw the same numbers in both runs
    if scaler is None:
        info = bal.backward(losses, **ctx)
        opt.step()
    else:
        info = bal.backward(losses, grad_scale=scaler, **ctx)
        scaler.step(opt)
        scaler.update()
    if bal.needs_post_step_losses:
        with torch.no_grad():
            after, _ = forward_losses(model, tasks, batch)
        bal.post_step(after)
    return info


@pytest.mark.parametrize("name", NAMES)
def test_scaled_step_equals_the_fp32_step(name):
    tasks = make_tasks()
    model = make_model(tasks)
    ref_model = copy.deepcopy(model)
    bal, ref_bal = build(name, tasks), build(name, tasks)
    opt = torch.optim.SGD(list(model.parameters()) + bal.parameters(), lr=0.05)
    ref_opt = torch.optim.SGD(list(ref_model.parameters()) + ref_bal.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=1000)
    for it in range(3):
        ref_info = one_step(ref_model, tasks, ref_bal, ref_opt, it)
        info = one_step(model, tasks, bal, opt, it, scaler)
        assert "overflow" not in info
        for t, w in ref_info["weights"].items():
            assert info["weights"][t] == pytest.approx(w, rel=1e-3, abs=1e-6), (name, it, t)
        assert scaler.get_scale() == SCALE  # no step was skipped
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=f"{name}: {n}")
    for p, q in zip(bal.parameters(), ref_bal.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=f"{name}: its own parameters")


def _same_state(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("name", NAMES)
def test_overflow_of_the_scale_is_skipped_and_leaves_the_method_untouched(name):
    """A task gradient that overflows once scaled: the scaler skips the step (parameters unchanged) and lowers
    its scale; methods that look at per-task gradients say so (``overflow``) and keep their state."""
    tasks = make_tasks()
    model = make_model(tasks)
    bal = build(name, tasks)
    opt = torch.optim.SGD(list(model.parameters()) + bal.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60, growth_interval=1000)
    one_step(model, tasks, bal, opt, 0, scaler)
    state = copy.deepcopy(bal.state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    info = one_step(model, tasks, bal, opt, 1, scaler, blow_up="depth")
    assert scaler.get_scale() < 2.0**60
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b), f"{name}: the overflowing step was applied"
    if bal.needs_features:  # the methods that take decisions from the per-task gradients
        assert info.get("overflow") == 1 and info["nonfinite_tasks"] == ["depth"]
        assert _same_state(bal.state_dict(), state), f"{name}: state changed on an overflow"
    one_step(model, tasks, bal, opt, 2, scaler)  # training goes on at the lower scale
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradients_are_decided_on_in_fp32(dtype):
    """A Jacobian in half precision whose Gramian would overflow fp16 (entries ~300, ||g||² ~ 1e6 > 65504):
    the decisions (weights, norms) are those of the fp32 gradients."""
    rows = torch.tensor([[300.0, 200.0, -100.0], [-250.0, 310.0, 50.0]])
    out = {}
    for dt in (torch.float32, dtype):
        theta = torch.nn.Parameter(torch.zeros(3, dtype=dt))
        bal = balancing.get("mgda", tasks=["a", "b"])
        info = bal.backward({"a": rows[0].to(dt) @ theta, "b": rows[1].to(dt) @ theta}, shared=[theta])
        out[dt] = info
    ref, half = out[torch.float32], out[dtype]
    for t in ("a", "b"):
        assert math.isfinite(half["grad_norms"][t])
        assert half["grad_norms"][t] == pytest.approx(ref["grad_norms"][t], rel=1e-2)
        assert half["weights"][t] == pytest.approx(ref["weights"][t], rel=2e-2, abs=1e-3)
