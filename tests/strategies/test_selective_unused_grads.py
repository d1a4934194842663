"""Selective ``unused_grads``: "none" (paper) leaves heads outside the group untouched; "zeros" (the official
code: torch 1.13 ``zero_grad()`` fills zeros, DDP ``find_unused_parameters``) lets Adam step them from their
moments with a zero gradient."""

from __future__ import annotations

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError
from mtlkit.strategies import StepContext, get

from .helpers import micro_setup


def two_batches(unused_grads: str):
    tasks, model, batch = micro_setup(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    strategy = get("selective", grouping="separate", order="forward", seed=0, unused_grads=unused_grads)
    ctx = StepContext(model=model, tasks=tasks, balancer=balancing.get("equal", tasks=list(tasks)), optimizer=opt)
    strategy.step(batch, ctx)  # every head gets Adam moments
    head = next(p for n, p in model.named_parameters() if n.startswith("heads.edge."))  # edge is stepped last
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[head].items()}
    before = head.detach().clone()

    class StopAfterFirst(Exception):
        pass

    original = opt.step

    def first_step_only(*a, **k):
        original(*a, **k)
        raise StopAfterFirst

    opt.step = first_step_only
    with pytest.raises(StopAfterFirst):  # the second batch's first group: semseg alone
        strategy.step(batch, ctx)
    return before, head.detach().clone(), state, opt.state[head]


def test_paper_default_leaves_heads_outside_the_group_untouched():
    before, after, state, new_state = two_batches("none")
    assert torch.equal(before, after)
    assert int(new_state["step"]) == int(state["step"])


def test_official_zero_filled_gradients_step_heads_outside_the_group_with_adam():
    before, after, state, new_state = two_batches("zeros")
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
    t = int(state["step"]) + 1
    m, v = b1 * state["exp_avg"], b2 * state["exp_avg_sq"]  # Adam on a zero gradient
    expected = before - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-8)
    assert int(new_state["step"]) == t


def test_unused_grads_is_validated():
    with pytest.raises(MtlkitError, match="unused_grads"):
        get("selective", unused_grads="zero")
