"""Δm (DESIGN.md §3): mean of (-1)^{l_t} (M_m - M_b) / M_b x 100 over tasks, l_t = 1 when lower is better."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlkit.errors import MtlkitError
from mtlkit.metrics import delta_m, relative_gain
from mtlkit.tasks import make_task


def test_signs_for_higher_and_lower_is_better() -> None:
    assert relative_gain(44.0, 40.0, higher_is_better=True) == pytest.approx(10.0)  # mIoU up: better
    assert relative_gain(36.0, 40.0, higher_is_better=True) == pytest.approx(-10.0)
    assert relative_gain(0.45, 0.5, higher_is_better=False) == pytest.approx(10.0)  # RMSE down: better
    assert relative_gain(0.55, 0.5, higher_is_better=False) == pytest.approx(-10.0)


def test_delta_m_by_hand_with_builtin_task_directions() -> None:
    tasks = {t: make_task(t) for t in ("semseg", "depth", "normals", "edge")}
    hib = {t: task.higher_is_better for t, task in tasks.items()}
    assert hib == {"semseg": True, "depth": False, "normals": False, "edge": True}
    base = {"semseg": 40.0, "depth": 0.5, "normals": 20.0, "edge": 50.0}
    model = {"semseg": 42.0, "depth": 0.55, "normals": 19.0, "edge": 50.0}
    # (+5) + (-10) + (+5) + 0 over 4 tasks
    assert delta_m(model, base, hib) == pytest.approx(0.0)
    model["edge"] = 54.0  # +8
    assert delta_m(model, base, hib) == pytest.approx(2.0)
    assert delta_m(base, base, hib) == 0.0
    # only the tasks of ``values`` count (extra baselines are fine)
    assert delta_m({"depth": 0.4}, base, hib) == pytest.approx(20.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.1, 100), st.floats(0.001, 0.5), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_better_on_every_task_is_positive(rows: list[tuple[float, float, bool]]) -> None:
    base = {f"t{i}": b for i, (b, _, _) in enumerate(rows)}
    hib = {f"t{i}": h for i, (_, _, h) in enumerate(rows)}
    better = {f"t{i}": b * (1 + f if h else 1 - f) for i, (b, f, h) in enumerate(rows)}
    worse = {f"t{i}": b * (1 - f if h else 1 + f) for i, (b, f, h) in enumerate(rows)}
    assert delta_m(better, base, hib) > 0
    assert delta_m(worse, base, hib) < 0
    assert delta_m(better, base, hib) == pytest.approx(100 * sum(f for _, f, _ in rows) / len(rows))


def test_bad_input_raises_mtlkit_errors() -> None:
    with pytest.raises(MtlkitError, match="depth") as err:
        delta_m({"semseg": 1.0, "depth": 1.0}, {"semseg": 1.0}, {"semseg": True, "depth": False})
    assert isinstance(err.value, KeyError)  # still a KeyError for callers that catch that
    with pytest.raises(MtlkitError, match="baseline metric of 0"):
        delta_m({"semseg": 1.0}, {"semseg": 0.0}, {"semseg": True})
    with pytest.raises(MtlkitError, match="at least one task"):
        delta_m({}, {"semseg": 1.0}, {})
