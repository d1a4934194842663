"""The per-task Jacobian (split at the features, batched with vmap or looped) equals plain autograd."""

from __future__ import annotations

import pytest
import torch

from mtlkit.balancing import TaskGradients, task_jacobian
from mtlkit.errors import MtlkitError

from .balancing_helpers import forward_losses, make_batch


def reference_jacobian(losses, params):
    rows = []
    for loss in losses.values():
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        g = [x if x is not None else torch.zeros_like(p) for x, p in zip(g, params, strict=True)]
        rows.append(torch.cat([x.reshape(-1) for x in g]))
    return torch.stack(rows)


@pytest.mark.parametrize("use_features", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4])
def test_jacobian_matches_per_task_autograd(model, tasks, use_features, chunk_size):
    losses, feats = forward_losses(model, tasks, make_batch())
    params = model.shared_parameters()
    ref = reference_jacobian(losses, params)
    jac = task_jacobian(losses, params, features=feats if use_features else None, chunk_size=chunk_size)
    assert jac.shape == (len(tasks), sum(p.numel() for p in params))
    torch.testing.assert_close(jac, ref, rtol=1e-4, atol=1e-6)


def test_jacobian_with_per_task_feature_dict(model, tasks):
    """A forked backbone gives {task: features}; tasks then read different tensors."""
    losses, feats = forward_losses(model, tasks, make_batch())
    params = model.last_shared_parameters()
    ref = reference_jacobian(losses, params)
    jac = task_jacobian(losses, params, features={t: feats for t in tasks}, chunk_size=2)
    torch.testing.assert_close(jac, ref, rtol=1e-4, atol=1e-6)


def all_grads(model):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}


@pytest.mark.parametrize("use_features", [True, False])
def test_backward_weighted_equals_weighted_sum_backward(model, tasks, use_features):
    batch = make_batch()
    w = [0.5, 2.0, 0.0, 3.0]
    losses, _ = forward_losses(model, tasks, batch)
    sum(wi * li for wi, li in zip(w, losses.values(), strict=True)).backward()
    ref = all_grads(model)
    model.zero_grad(set_to_none=True)
    losses, feats = forward_losses(model, tasks, batch)
    tg = TaskGradients(list(losses.values()), feats if use_features else None)
    tg.jacobian(model.last_shared_parameters())  # asking for a Jacobian first must not change the result
    tg.backward_weighted(w)
    got = all_grads(model)
    for name, p in model.named_parameters():
        zero = torch.zeros_like(p)  # the task with weight 0 (normals): its head gets no gradient at all
        g_ref = ref[name] if ref[name] is not None else zero
        g_got = got[name] if got[name] is not None else zero
        torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("use_features", [True, False])
def test_backward_aggregated_writes_update_and_head_gradients(model, tasks, use_features):
    batch = make_batch()
    losses, _ = forward_losses(model, tasks, batch)
    sum(losses.values()).backward()
    ref = all_grads(model)
    model.zero_grad(set_to_none=True)
    losses, feats = forward_losses(model, tasks, batch)
    shared = model.shared_parameters()
    tg = TaskGradients(list(losses.values()), feats if use_features else None)
    combined = torch.arange(sum(p.numel() for p in shared), dtype=torch.float32)
    tg.backward_aggregated(shared, combined)
    flat = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(flat, combined)
    shared_ids = {id(p) for p in shared}
    for name, p in model.named_parameters():
        if id(p) not in shared_ids:
            torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-7, msg=name)


def test_feature_jacobian_needs_shared_features(model, tasks):
    losses, feats = forward_losses(model, tasks, make_batch())
    with pytest.raises(MtlkitError, match="features"):
        TaskGradients(list(losses.values()), None).feature_jacobian()
    with pytest.raises(MtlkitError, match="forks"):
        TaskGradients(list(losses.values()), {t: feats for t in tasks}).feature_jacobian()
    jz = TaskGradients(list(losses.values()), feats).feature_jacobian()
    ref = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, feats, retain_graph=True)])
                       for l in losses.values()])
    torch.testing.assert_close(jz, ref)


@pytest.mark.parametrize("which,chunk_size", [("last", None), ("all", None), ("last", 4), ("last", 3)])
def test_cut_backward_reuses_the_rows_and_equals_the_weighted_backward(model, tasks, which, chunk_size):
    """cut_jacobian + backward_weighted_cut (the last layer not differentiated again) gives the same Jacobian
    and the same gradients on every parameter as jacobian + backward_weighted."""
    batch = make_batch()
    w = [0.5, 2.0, 0.0, 3.0]
    params_of = model.last_shared_parameters if which == "last" else model.shared_parameters
    losses, feats = forward_losses(model, tasks, batch)
    tg = TaskGradients(list(losses.values()), feats)
    ref_jac = tg.jacobian(params_of())
    tg.backward_weighted(w)
    ref = all_grads(model)
    model.zero_grad(set_to_none=True)
    losses, feats = forward_losses(model, tasks, batch)
    tg = TaskGradients(list(losses.values()), feats, chunk_size=chunk_size)  # 3, 4: batched (vmap) chunks
    jac = tg.cut_jacobian(params_of())
    assert tg._cut is not None  # the ViT has a clean cut below its last block
    tg.backward_weighted_cut(w)
    torch.testing.assert_close(jac, ref_jac, rtol=1e-5, atol=1e-7)
    got = all_grads(model)
    for name, p in model.named_parameters():
        zero = torch.zeros_like(p)
        torch.testing.assert_close(got[name] if got[name] is not None else zero,
                                   ref[name] if ref[name] is not None else zero, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("case", ["extra leaf", "leaf also below", "nested exits"])
def test_cut_with_leaves_and_exits_that_do_not_separate(case):
    """A parameter outside the cut set that only the cut sub-graph reads (c) gets its gradient from the kept
    rows; where c is also read below the cut, or one exit lies below another, the cut would count a part
    twice and the plain path is taken. Every case gives the gradients of the weighted sum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g)
    a, b, c = (torch.nn.Parameter(torch.randn(3, 3, generator=g)) for _ in range(3))
    w = [1.0, 2.0, 0.5]
    h = torch.tanh(x @ a) + (x @ c if case == "leaf also below" else 0.0)
    z = torch.tanh(h @ b) + (h @ c if case == "nested exits" else 0.0)
    z2 = torch.sigmoid(z @ c)
    losses = [z2.pow(2).mean(), (z2 - 1).abs().mean(), z2.sum()]
    refs = torch.autograd.grad(sum(wi * li for wi, li in zip(w, losses, strict=True)), [a, b, c],
                               retain_graph=True)
    tg = TaskGradients(losses, [z2])
    tg.cut_jacobian([b])
    assert (tg._cut is not None) == (case == "extra leaf")
    if case == "extra leaf":
        assert [id(p) for p in tg._cut.extra] == [id(c)]
    tg.backward_weighted_cut(w)
    for p, r in zip([a, b, c], refs, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-5, atol=1e-7)
