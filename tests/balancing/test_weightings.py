"""Loss weightings: each method's defining formula on hand-made losses."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError


def scalar_losses(values, names=("a", "b", "c")):
    """Losses L_t = v_t · x_t with leaf x_t = 1, so ∂total/∂x_t = w_t · v_t exposes the applied weight."""
    xs = {n: torch.ones((), requires_grad=True) for n in names}
    return xs, {n: v * xs[n] for n, v in zip(names, values, strict=True)}


def applied_weights(xs, values):
    return {n: float(xs[n].grad) / v for (n, v) in zip(xs, values, strict=True)}


def test_uw_objective_and_log_variance_gradients():
    bal = balancing.get("uw", tasks=["a", "b", "c"])
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([0.0, 1.0, -0.5]))
    values = [2.0, 3.0, 0.5]
    xs, losses = scalar_losses(values)
    info = bal.backward(losses)
    s = torch.tensor([0.0, 1.0, -0.5])
    expected_w = 0.5 * torch.exp(-s)
    # d/ds [½ e^{-s} L + ½ s] = ½ - ½ e^{-s} L
    torch.testing.assert_close(bal.log_vars.grad, 0.5 - 0.5 * torch.exp(-s) * torch.tensor(values))
    got = applied_weights(xs, values)
    for i, n in enumerate("abc"):
        assert got[n] == pytest.approx(float(expected_w[i]), rel=1e-6)
        assert info["weights"][n] == pytest.approx(float(expected_w[i]), rel=1e-6)
    assert bal.parameters() == [bal.log_vars]


def test_uw_without_tasks_cannot_list_parameters():
    with pytest.raises(MtlkitError, match="tasks"):
        balancing.get("uw").parameters()


def test_dwa_weights_from_loss_ratios_per_window():
    bal = balancing.get("dwa", tasks=["a", "b", "c"], temp=2.0, window=2)
    seq = [[4.0, 2.0, 1.0], [4.0, 2.0, 1.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]]
    seen = []
    for vals in seq:
        xs, losses = scalar_losses(vals)
        seen.append(bal.backward(losses)["weights"])
    assert all(w == {"a": 1.0, "b": 1.0, "c": 1.0} for w in seen[:4])  # two full periods of weight 1
    r = [2.0 / 4.0, 2.0 / 2.0, 2.0 / 1.0]  # mean of period 2 / mean of period 1
    e = [math.exp(x / 2.0) for x in r]
    expected = [3 * x / sum(e) for x in e]
    assert [seen[4][n] for n in "abc"] == pytest.approx(expected)
    assert sum(seen[4].values()) == pytest.approx(3.0)


def test_dwa_resume_continues_exactly():
    a = balancing.get("dwa", tasks=["a", "b"], window=1)
    for vals in ([1.0, 2.0], [2.0, 1.0]):
        a.backward(scalar_losses(vals, ("a", "b"))[1])
    b = balancing.get("dwa", tasks=["a", "b"], window=1)
    b.load_state_dict(a.state_dict())
    wa = a.backward(scalar_losses([1.0, 1.0], ("a", "b"))[1])["weights"]
    wb = b.backward(scalar_losses([1.0, 1.0], ("a", "b"))[1])["weights"]
    assert wa == wb and wa["a"] > 1.0 > wa["b"]  # a's loss rose (ratio 2), b's fell (ratio 0.5)


def test_dtp_focal_weights_from_given_kpi():
    bal = balancing.get("dtp", tasks=["a", "b"], gamma=2.0, momentum=0.5)
    xs, losses = scalar_losses([1.0, 1.0], ("a", "b"))
    w = bal.backward(losses, kpi={"a": 0.9, "b": 0.3})["weights"]
    assert w["a"] == pytest.approx(-(0.1**2) * math.log(0.9))
    assert w["b"] == pytest.approx(-(0.7**2) * math.log(0.3))
    xs, losses = scalar_losses([1.0, 1.0], ("a", "b"))
    w = bal.backward(losses, kpi={"a": 0.5, "b": 0.3})["weights"]
    k = 0.5 * 0.9 + 0.5 * 0.5  # moving average of the KPI
    assert w["a"] == pytest.approx(-((1 - k) ** 2) * math.log(k))


def test_dtp_loss_surrogate_prioritises_the_slower_task():
    bal = balancing.get("dtp", tasks=["a", "b"])
    bal.backward(scalar_losses([2.0, 0.1], ("a", "b"))[1])
    w0 = bal.backward(scalar_losses([2.0, 0.1], ("a", "b"))[1])["weights"]
    assert w0["a"] == pytest.approx(w0["b"])  # scale-free: equal relative progress, equal weights
    for _ in range(20):
        w = bal.backward(scalar_losses([1.9, 0.02], ("a", "b"))[1])["weights"]
    assert w["a"] > w["b"] > 0  # b improved much more (relative), so a gets the priority


def test_rlw_weights_are_a_random_softmax():
    bal = balancing.get("rlw", tasks=["a", "b", "c"])
    torch.manual_seed(0)
    w1 = bal.backward(scalar_losses([1.0, 1.0, 1.0])[1])["weights"]
    w2 = bal.backward(scalar_losses([1.0, 1.0, 1.0])[1])["weights"]
    torch.manual_seed(0)
    expected = torch.softmax(torch.randn(3, dtype=torch.float64), 0).tolist()
    assert [w1[n] for n in "abc"] == pytest.approx(expected)
    assert sum(w1.values()) == pytest.approx(1.0) and w1 != w2


def test_gls_is_the_geometric_mean():
    bal = balancing.get("gls", tasks=["a", "b"])
    xs, losses = scalar_losses([1.0, 4.0], ("a", "b"))
    info = bal.backward(losses)
    assert info["loss"] == pytest.approx(2.0)
    assert info["weights"] == pytest.approx({"a": 1.0, "b": 0.25})  # G / (T L_t)
    assert applied_weights(xs, [1.0, 4.0]) == pytest.approx({"a": 1.0, "b": 0.25})
    xs, losses = scalar_losses([0.0, 4.0], ("a", "b"))
    w = balancing.get("gls").backward(losses)["weights"]
    assert all(math.isfinite(v) for v in w.values())


def test_famo_weights_and_logit_update_follow_the_formula():
    bal = balancing.get("famo", tasks=["a", "b", "c"], max_norm=0.0)  # no shared parameters to clip here
    before = [2.0, 1.0, 0.5]
    xs, losses = scalar_losses(before)
    info = bal.backward(losses)
    z = torch.full((3,), 1 / 3, dtype=torch.float64)
    d = torch.tensor(before, dtype=torch.float64) + 1e-8
    c = (z / d).sum()
    expected = (z / (c * d)).tolist()  # w_t = z_t / (c D_t), summing to 1
    assert [info["weights"][n] for n in "abc"] == pytest.approx(expected)
    assert applied_weights(xs, before) == pytest.approx(dict(zip("abc", expected, strict=True)), rel=1e-5)
    after = [1.0, 1.0, 0.25]
    bal.post_step(scalar_losses(after)[1])
    delta = torch.log(torch.tensor(before, dtype=torch.float64) + 1e-8) - torch.log(
        torch.tensor(after, dtype=torch.float64) + 1e-8)
    grad = z * (delta - (z * delta).sum())  # ∂ softmax(ξ)ᵀδ / ∂ξ at ξ = 0
    # first Adam step from 0 (the weight decay term γξ vanishes at ξ = 0): ξ = -lr · g / (|g| + eps)
    expected_logits = -0.025 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(bal.logits.detach().double(), expected_logits, rtol=1e-4, atol=1e-6)


def test_famo_without_post_step_uses_next_batch_with_warning():
    bal = balancing.get("famo", tasks=["a", "b"], max_norm=0.0)
    bal.backward(scalar_losses([2.0, 1.0], ("a", "b"))[1])
    with pytest.warns(RuntimeWarning, match="post_step"):
        bal.backward(scalar_losses([1.0, 1.0], ("a", "b"))[1])
    assert bal.logits[0] < bal.logits[1]  # a improved (2 -> 1), b did not: FAMO shifts weight to b


def test_gradnorm_weight_gradient_and_renormalisation():
    rows = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    theta = torch.nn.Parameter(torch.zeros(2))
    bal = balancing.get("gradnorm", tasks=["a", "b"], alpha=1.5, params="all")
    losses = {"a": rows[0] @ theta + 1.0, "b": rows[1] @ theta + 1.0}  # L(0) = 1 for both
    info = bal.backward(losses, shared=[theta])
    # G = (3, 1), Ḡ = 2, r = (1, 1): target 2 -> d|G_t - 2| / dw_t = sign(G_t - 2) ||g_t|| = (3, -1)
    torch.testing.assert_close(bal.loss_weights.grad, torch.tensor([3.0, -1.0]))
    assert info["weights"] == {"a": 1.0, "b": 1.0}
    with torch.no_grad():
        bal.loss_weights.copy_(torch.tensor([0.5, 2.5]))
    bal.loss_weights.grad = None
    losses = {"a": rows[0] @ theta + 1.0, "b": rows[1] @ theta + 1.0}
    info = bal.backward(losses, shared=[theta])
    assert info["weights"]["a"] + info["weights"]["b"] == pytest.approx(2.0)  # renormalised to sum T
    assert info["weights"]["a"] == pytest.approx(2 * 0.5 / 3.0)
