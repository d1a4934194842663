"""Saliency maxF (β² = 0.3) over split-level counts at thresholds 0.05 .. 0.95."""

from __future__ import annotations

import copy

import pytest
import torch

from mtlkit.metrics import SaliencyMeter, f_measure


def logits(probs: list[float]) -> torch.Tensor:
    return torch.logit(torch.tensor(probs, dtype=torch.float64))


# four pixels: gt 1, 1, 0, 0 with probabilities 0.92, 0.42, 0.62, 0.12 (no probability sits on a threshold)
PROBS = [0.92, 0.42, 0.62, 0.12]
GT = [1.0, 1.0, 0.0, 0.0]


def f_beta(p: float, r: float, b2: float = 0.3) -> float:
    return (1 + b2) * p * r / (b2 * p + r)


def test_f_measure_formula() -> None:
    out = f_measure(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.5]))
    assert out.tolist() == pytest.approx([f_beta(0.5, 1.0), f_beta(1.0, 0.5)])
    assert f_measure(torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0


def test_maxf_by_hand() -> None:
    # t <= 0.10: all predicted        P 1/2, R 1   -> F 0.5652
    # t in (0.12, 0.42]: 3 predicted  P 2/3, R 1   -> F 0.7222  (the best F1 = 0.8 would be here)
    # t in (0.42, 0.62]: 2 predicted  P 1/2, R 1/2 -> F 0.5
    # t in (0.62, 0.92]: 1 predicted  P 1,   R 1/2 -> F 0.8125 (best with β² = 0.3)
    m = SaliencyMeter()
    m.update(logits(PROBS).view(1, 1, 2, 2), torch.tensor(GT).view(1, 1, 2, 2))
    out = m.compute()
    assert out["maxF"] == pytest.approx(100 * f_beta(1.0, 0.5))  # 81.25
    assert out["threshold"] == pytest.approx(0.65)  # the first threshold above 0.62
    assert m.thresholds.tolist() == pytest.approx([0.05 * k for k in range(1, 20)])
    f1 = SaliencyMeter(beta2=1.0)
    f1.update(logits(PROBS), torch.tensor(GT))
    assert f1.compute()["maxF"] == pytest.approx(80.0)


def test_ignored_pixels_skipped() -> None:
    m = SaliencyMeter()
    m.update(logits(PROBS + [0.99, 0.01]), torch.tensor(GT + [255.0, 255.0]))
    assert m.compute()["maxF"] == pytest.approx(81.25)


def test_thresholds_chosen_over_the_split_not_per_image() -> None:
    # image A alone has maxF 100 at t <= 0.9; image B alone has maxF 100 at t <= 0.3; pooled, no threshold is perfect
    a_p, a_g = logits([0.9, 0.6]), torch.tensor([1.0, 0.0])
    b_p, b_g = logits([0.3, 0.1]), torch.tensor([1.0, 0.0])
    m = SaliencyMeter()
    m.update(a_p, a_g)
    m.update(b_p, b_g)
    # pooled: t in (0.1, 0.3]: TP 2, PP 3 -> P 2/3, R 1 -> 72.2; t in (0.6, 0.9]: P 1, R 1/2 -> 81.25
    assert m.compute()["maxF"] == pytest.approx(81.25)
    whole = SaliencyMeter()
    whole.update(torch.cat([a_p, b_p]), torch.cat([a_g, b_g]))
    assert whole.compute() == pytest.approx(m.compute())
    first, second = SaliencyMeter(), SaliencyMeter()
    first.update(a_p, a_g)
    second.update(b_p, b_g)
    reduced = copy.deepcopy(first)
    first.merge(second)
    for mine, theirs in zip(reduced.state(), second.state(), strict=True):
        mine += theirs
    assert first.compute() == pytest.approx(whole.compute())
    assert reduced.compute() == pytest.approx(whole.compute())
