"""Proximal inter-task affinity: each update rule, the decay and both attribution modes on hand-made losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlkit.errors import MtlkitError
from mtlkit.strategies import ProximalAffinity

TASKS = ["a", "b", "c"]


def tracker(decay: float = 1.0, attribution: str = "previous", init: float = 0.0) -> ProximalAffinity:
    aff = ProximalAffinity(TASKS, decay=decay, attribution=attribution)
    aff.matrix[:] = init
    return aff


def entry(aff: ProximalAffinity, s: str, t: str) -> float:
    return float(aff.matrix[aff.index[s], aff.index[t]])


def test_inter_group_and_self_rules_with_decay():
    aff = tracker(decay=0.5)
    aff.update(["a"], pre={"a": 1.0, "b": 2.0, "c": 4.0}, post={"a": 0.5, "b": 2.2, "c": 3.0})
    # |G| = 1: a = 1 - post/pre; A <- 0.5 A + 0.5 a
    assert entry(aff, "a", "a") == pytest.approx(0.5 * 0.5)
    assert entry(aff, "a", "b") == pytest.approx(0.5 * (1 - 2.2 / 2.0))
    assert entry(aff, "a", "c") == pytest.approx(0.5 * (1 - 3.0 / 4.0))
    # only the source row changes
    assert np.all(aff.matrix[1:] == 0.0)


def test_self_rule_skips_an_increase():
    aff = tracker(decay=0.5, init=0.3)
    aff.update(["a"], pre={"a": 1.0, "b": 1.0, "c": 1.0}, post={"a": 1.5, "b": 1.0, "c": 1.0})
    assert entry(aff, "a", "a") == 0.3  # a_t < 0: self affinity untouched
    assert entry(aff, "a", "b") == pytest.approx(0.5 * 0.3 + 0.5 * 0.0)


def test_intra_group_mixed_signs_and_division_by_group_size():
    aff = tracker(decay=1.0, init=7.0)  # decay 1: the entry becomes the measured value
    pre = {"a": 1.0, "b": 1.0, "c": 1.0}
    post = {"a": 0.8, "b": 1.2, "c": 0.6}  # a_a = 0.2/2, a_b = -0.2/2, a_c = 0.4/2
    aff.update(["a", "b"], pre, post)
    assert entry(aff, "a", "a") == pytest.approx(0.1)
    assert entry(aff, "a", "b") == pytest.approx(-0.1)  # signs differ: -max(a_t, a_s) = -max(-0.1, 0.1)
    assert entry(aff, "b", "a") == pytest.approx(-0.1)  # -max(0.1, -0.1)
    assert entry(aff, "b", "b") == 7.0  # self with a_t < 0: unchanged
    assert entry(aff, "a", "c") == pytest.approx(0.2)  # inter-group, divided by |G| = 2
    assert entry(aff, "b", "c") == pytest.approx(0.2)
    assert np.all(aff.matrix[2] == 7.0)  # c was not a source


def test_intra_group_same_signs_use_the_targets_change():
    pre = {"a": 1.0, "b": 1.0, "c": 1.0}
    both_up = tracker()
    both_up.update(["a", "b"], pre, {"a": 1.2, "b": 1.4, "c": 1.0})  # a_a = -0.1, a_b = -0.2
    assert entry(both_up, "a", "b") == pytest.approx(-0.2)
    assert entry(both_up, "b", "a") == pytest.approx(-0.1)
    both_down = tracker()
    both_down.update(["a", "b"], pre, {"a": 0.6, "b": 0.9, "c": 1.0})  # a_a = 0.2, a_b = 0.05
    assert entry(both_down, "a", "b") == pytest.approx(0.05)
    assert entry(both_down, "b", "a") == pytest.approx(0.2)
    # mixed with the larger change positive on the target side: -max(a_t, a_s)
    mixed = tracker()
    mixed.update(["a", "b"], pre, {"a": 0.4, "b": 1.1, "c": 1.0})  # a_a = 0.3, a_b = -0.05
    assert entry(mixed, "a", "b") == pytest.approx(-0.3)
    assert entry(mixed, "b", "a") == pytest.approx(-0.3)


def test_decay_is_an_exponential_moving_average():
    aff = tracker(decay=0.001)
    pre, post = {"a": 2.0, "b": 2.0, "c": 2.0}, {"a": 1.0, "b": 1.5, "c": 2.5}
    n = 50
    for _ in range(n):
        aff.update(["a"], pre, post)
    keep = (1 - 0.001) ** n
    assert entry(aff, "a", "a") == pytest.approx(0.5 * (1 - keep), rel=1e-12)
    assert entry(aff, "a", "b") == pytest.approx(0.25 * (1 - keep), rel=1e-12)
    assert entry(aff, "a", "c") == pytest.approx(-0.25 * (1 - keep), rel=1e-12)
    assert aff.measurements == n


def test_non_positive_previous_loss_is_skipped():
    # official guards: skip a target whose pre loss is <= 0, and an intra-group pair whose source's is
    aff = tracker(init=1.0)
    aff.update(["a", "b"], pre={"a": 1.0, "b": 0.0, "c": 1.0}, post={"a": 0.5, "b": 0.1, "c": 0.5})
    np.testing.assert_allclose(aff.matrix[0], [0.25, 1.0, 0.25])  # a -> b skipped (b's pre is 0)
    np.testing.assert_allclose(aff.matrix[1], [1.0, 1.0, 0.25])  # b -> a skipped; b -> c is inter-group
    np.testing.assert_allclose(aff.matrix[2], [1.0, 1.0, 1.0])


def test_attribution_previous_credits_the_group_that_stepped():
    forwards = [
        {"a": 1.0, "b": 1.0, "c": 1.0},
        {"a": 0.5, "b": 1.1, "c": 0.9},  # after a's step
        {"a": 0.6, "b": 0.8, "c": 1.2},  # after b's step
    ]
    groups = [["a"], ["b"], ["c"]]
    prev = tracker(decay=0.5, attribution="previous")
    prev.begin_batch()
    applied = [prev.observe(g, f) for g, f in zip(groups, forwards, strict=True)]
    assert applied == [False, True, True]
    expected = tracker(decay=0.5)
    expected.update(["a"], forwards[0], forwards[1])
    expected.update(["b"], forwards[1], forwards[2])
    np.testing.assert_array_equal(prev.matrix, expected.matrix)
    assert np.all(prev.matrix[2] == 0.0)  # the last group's step is not measured

    official = tracker(decay=0.5, attribution="official")
    official.begin_batch()
    for g, f in zip(groups, forwards, strict=True):
        official.observe(g, f)
    expected = tracker(decay=0.5)
    expected.update(["b"], forwards[0], forwards[1])  # a's step credited to b, as the official code does
    expected.update(["c"], forwards[1], forwards[2])
    np.testing.assert_array_equal(official.matrix, expected.matrix)
    assert np.all(official.matrix[0] == 0.0)


def test_attribution_modes_agree_on_a_doubled_single_group():
    forwards = [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.9, "b": 2.1, "c": 2.5}]
    out = []
    for mode in ("previous", "official"):
        aff = tracker(decay=0.5, attribution=mode)
        aff.begin_batch()
        for f in forwards:
            aff.observe(TASKS, f)
        out.append(aff.matrix.copy())
    np.testing.assert_array_equal(out[0], out[1])
    assert np.count_nonzero(out[0]) > 0


def test_measurements_never_span_batches_or_non_finite_forwards():
    aff = tracker(decay=0.5)
    aff.begin_batch()
    aff.observe(["a"], {"a": 1.0, "b": 1.0, "c": 1.0})
    aff.begin_batch()
    assert not aff.observe(["b"], {"a": 0.5, "b": 0.5, "c": 0.5})
    assert not aff.observe(["c"], {"a": math.nan, "b": 0.5, "c": 0.5})  # unusable forward
    assert not aff.observe(["a"], {"a": 0.4, "b": 0.4, "c": 0.4})  # its predecessor was unusable
    assert not aff.observe(["b"], None)
    assert np.all(aff.matrix == 0.0) and aff.measurements == 0
    assert not aff.observe(["c"], {"a": 0.4, "b": 0.4, "c": math.inf})
    assert np.all(np.isfinite(aff.matrix))


def test_state_dict_round_trip_and_rounding():
    aff = tracker(decay=0.3)
    aff.update(["a", "c"], {"a": 3.0, "b": 7.0, "c": 1.0}, {"a": 1.0, "b": 6.0, "c": 1.1})
    other = ProximalAffinity(TASKS, decay=0.3)
    other.load_state_dict(aff.state_dict())
    np.testing.assert_array_equal(other.matrix, aff.matrix)
    assert other.measurements == 1
    rounded = aff.rounded(5)
    assert rounded[0][0] == float(f"{aff.matrix[0, 0]:.5g}")
    assert all(len(f"{v:.5g}".replace("-", "").replace(".", "").lstrip("0")) <= 5 for row in rounded for v in row)
    with pytest.raises(MtlkitError):
        ProximalAffinity(["a", "b"]).load_state_dict(aff.state_dict())


def test_bad_options_are_user_errors():
    with pytest.raises(MtlkitError):
        ProximalAffinity(TASKS, attribution="next")
    with pytest.raises(MtlkitError):
        ProximalAffinity(TASKS, decay=2.0)
