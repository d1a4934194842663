"""Equal and Fixed weighting: the gradients are those of the weighted sum; bad weights are rejected."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError


def losses(w: torch.Tensor) -> dict[str, torch.Tensor]:
    # d(a)/dw = (1, 0), d(b)/dw = (0, 2 w1) at w = (3, 4) -> (0, 8)
    return {"a": w[0] * 1.0, "b": w[1] ** 2}


def test_equal_backward_fills_the_gradient_of_the_sum() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    info = balancing.get("equal").backward(losses(w), shared=[w])
    assert w.grad.tolist() == [1.0, 8.0]
    assert info["weights"] == {"a": 1.0, "b": 1.0}
    assert info["loss"] == pytest.approx(3.0 + 16.0)


def test_fixed_weights_and_default_one() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    info = balancing.get("fixed", weights={"b": 0.5}).backward(losses(w), shared=[w])
    assert w.grad.tolist() == [1.0, 4.0]
    assert info["weights"] == {"a": 1.0, "b": 0.5}


@pytest.mark.parametrize("bad", [-1.0, math.nan, "x", None])
def test_fixed_rejects_bad_weights(bad: object) -> None:
    with pytest.raises(MtlkitError, match="'a'|>= 0"):
        balancing.get("fixed", weights={"a": bad})


def test_fixed_rejects_unknown_tasks() -> None:
    with pytest.raises(MtlkitError, match=r"unknown task\(s\) \['c'\]"):  # at construction when tasks are known
        balancing.get("fixed", tasks=["a", "b"], weights={"c": 2.0})
    fixed = balancing.get("fixed", weights={"c": 2.0})  # otherwise at the first step
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(MtlkitError, match=r"unknown task\(s\) \['c'\]; tasks: \['a', 'b'\]"):
        fixed.backward(losses(w), shared=[w])


def test_task_set_is_fixed_at_the_first_call() -> None:
    eq = balancing.get("equal")
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    eq.backward(losses(w), shared=[w])
    with pytest.raises(MtlkitError, match="expected"):
        eq.backward({"a": w[0]}, shared=[w])
    eq2 = balancing.get("equal")
    eq2.load_state_dict(eq.state_dict())
    assert eq2.tasks == ["a", "b"]
