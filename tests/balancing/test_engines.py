"""engine=autogram (TorchJD's Gramian engine) gives the Jacobian path's update on the micro ViT."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError

from .balancing_helpers import forward_losses, make_batch, make_model, make_tasks

METHODS = ["upgrad", "mgda", "imtl", "nash_mtl", "cagrad", "aligned_mtl"]


def build(name, tasks, **options):
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip(f"{name} needs {cls.requires}")
    return balancing.get(name, tasks=list(tasks), **options)


def step(model, tasks, bal, it, use_features=True, **extra):
    model.zero_grad(set_to_none=True)
    dtype = next(model.parameters()).dtype
    batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in make_batch(seed=it).items()}
    losses, feats = forward_losses(model, tasks, batch)
    info = bal.backward(losses, shared=model.shared_parameters(), features=feats if use_features else None,
                        model=model, **extra)
    return info, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_features", [True, False])
@pytest.mark.parametrize("name", METHODS)
def test_autogram_update_equals_the_jacobian_update(name, use_features):
    tasks = make_tasks()
    model = make_model(tasks).double()  # float64: the two engines sum in different orders
    other = copy.deepcopy(model)
    jac, gram = build(name, tasks), build(name, tasks, engine="autogram")
    gram.setup(model=other)
    for it in range(2):
        info_j, grads_j = step(model, tasks, jac, it, use_features)
        info_g, grads_g = step(other, tasks, gram, it, use_features)
        assert info_g["engine"] == "autogram" and "engine" not in info_j
        assert info_g["weights"] == pytest.approx(info_j["weights"], rel=1e-5, abs=1e-8)
        assert grads_g.keys() == grads_j.keys()
        for n in grads_j:
            torch.testing.assert_close(grads_g[n], grads_j[n], rtol=1e-5, atol=1e-9, msg=f"{name}: {n}")


def test_autogram_without_setup_hooks_at_the_first_step_and_uses_the_jacobian_for_it():
    tasks = make_tasks()
    model = make_model(tasks)
    bal = build("upgrad", tasks, engine="autogram")
    info, _ = step(model, tasks, bal, 0)
    assert "engine" not in info  # the forward ran before the hooks existed
    info, _ = step(model, tasks, bal, 1)
    assert info["engine"] == "autogram"


def test_autogram_under_a_grad_scale_equals_the_unscaled_update():
    tasks = make_tasks()
    model = make_model(tasks)
    other = copy.deepcopy(model)
    a, b = build("mgda", tasks, engine="autogram"), build("mgda", tasks, engine="autogram")
    a.setup(model=model)
    b.setup(model=other)
    info_a, grads_a = step(model, tasks, a, 0)
    info_b, grads_b = step(other, tasks, b, 0, grad_scale=1024.0)
    assert info_b["weights"] == pytest.approx(info_a["weights"], rel=1e-4)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n] / 1024.0, grads_a[n], rtol=1e-4, atol=1e-7, msg=n)


def test_autogram_is_refused_where_weights_do_not_come_from_the_gramian():
    with pytest.raises(MtlkitError, match="no option"):
        balancing.get("graddrop", tasks=["a", "b"], engine="autogram")
    with pytest.raises(MtlkitError, match="engine=autogram"):
        balancing.get("mgda_ub", tasks=["a", "b"], engine="autogram")
    with pytest.raises(MtlkitError, match="engine must be"):
        balancing.get("upgrad", tasks=["a", "b"], engine="fast")


def test_autogram_overflow_is_skipped_by_the_scaler():
    tasks = make_tasks()
    model = make_model(tasks)
    bal = build("upgrad", tasks, engine="autogram")
    bal.setup(model=model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    losses, feats = forward_losses(model, tasks, make_batch())
    f = feats[-1]
    losses["edge"] = losses["edge"] + 1e30 * (f - f.detach()).mean()  # finite, but not times 2^60
    info = bal.backward(losses, shared=model.shared_parameters(), features=feats, model=model, grad_scale=scaler)
    scaler.step(opt)
    scaler.update()
    # the Gramian mixes the tasks' rows: the overflowing task is among those reported, maybe not alone
    assert info["overflow"] == 1 and "edge" in info["nonfinite_tasks"] and info["engine"] == "autogram"
    assert scaler.get_scale() < 2.0**60
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
