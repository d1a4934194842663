"""AvgNorm: w_i = S / ||g_i|| with S = ||Σ_i g_i||, from gradients of the last shared layer (or all shared)."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError

from .balancing_helpers import forward_losses, make_batch


def hand_weights(losses, params):
    grads = []
    for loss in losses.values():
        g = torch.autograd.grad(loss, params, retain_graph=True)
        grads.append(torch.cat([x.reshape(-1) for x in g]))
    s = torch.stack(grads).sum(0).norm()
    return {t: float(s / g.norm()) for t, g in zip(losses, grads, strict=True)}


@pytest.mark.parametrize("which", ["last", "all"])
@pytest.mark.parametrize("use_features", [True, False])
def test_weights_are_s_over_gradient_norms(model, tasks, which, use_features):
    batch = make_batch()
    params = model.last_shared_parameters() if which == "last" else model.shared_parameters()
    losses, _ = forward_losses(model, tasks, batch)
    expected = hand_weights(losses, params)
    # reference update: ∇ Σ w_i L_i with the hand weights
    sum(expected[t] * losses[t] for t in losses).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    bal = balancing.get("avgnorm", tasks=list(tasks), params=which)
    losses, feats = forward_losses(model, tasks, batch)
    info = bal.backward(losses, shared=model.shared_parameters(), features=feats if use_features else None,
                        last_shared=model.last_shared_parameters())
    assert info["weights"] == pytest.approx(expected, rel=1e-4)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6 * float(ref[n].abs().max()), msg=n)
    assert bal.average_weights() == pytest.approx(expected, rel=1e-4)


def test_hand_computed_two_task_example():
    """g_1 = (3, 0), g_2 = (0, 4): S = 5, weights 5/3 and 5/4."""
    theta = torch.nn.Parameter(torch.zeros(2))
    losses = {"a": torch.tensor([3.0, 0.0]) @ theta, "b": torch.tensor([0.0, 4.0]) @ theta}
    info = balancing.get("avgnorm", params="all").backward(losses, shared=[theta])
    assert info["weights"] == pytest.approx({"a": 5 / 3, "b": 5 / 4})
    torch.testing.assert_close(theta.grad, torch.tensor([5.0, 5.0]))  # both scaled to norm S
    assert info["S"] == pytest.approx(5.0)


def test_zero_and_nan_gradients_never_give_nan_weights():
    theta = torch.nn.Parameter(torch.zeros(3))
    losses = {
        "a": torch.tensor([3.0, 0.0, 0.0]) @ theta,
        "b": torch.zeros(3) @ theta,  # zero gradient: weight 1 (nothing to rescale)
        "c": torch.tensor([float("nan"), 1.0, 0.0]) @ theta,  # non-finite gradient: sits out this step
    }
    info = balancing.get("avgnorm", params="all").backward(losses, shared=[theta])
    assert all(math.isfinite(w) for w in info["weights"].values())
    assert info["weights"]["b"] == 1.0 and info["weights"]["c"] == 0.0
    assert info["weights"]["a"] == pytest.approx(1.0)  # S over the finite rows = 3
    assert info["nonfinite_tasks"] == ["c"]
    assert torch.isfinite(theta.grad).all()


def test_last_layer_is_required_without_a_model():
    theta = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(MtlkitError, match="last shared layer"):
        balancing.get("avgnorm").backward({"a": theta.sum()}, shared=[theta])
