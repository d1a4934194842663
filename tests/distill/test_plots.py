"""Fig. 6 of the imbalance study: bars per task and method (means ± std over seeds), curves from logs."""

from __future__ import annotations

import json

import pytest

from mtlkit.distill import load_feature_distance, plot_feature_distance
from mtlkit.distill._plots import _merge
from mtlkit.errors import MtlkitError

PNG = b"\x89PNG\r\n\x1a\n"


def test_bars_from_runs_and_seeds(tmp_path):
    runs = [
        {"uniform": {"semseg": 0.9, "depth": 1.1}, "cagrad": {"semseg": 0.6, "depth": 0.7}},
        {"uniform": {"semseg": 1.1, "depth": [1.3, 1.2]}},  # a second seed; a list holds several values
    ]
    assert _merge(runs) == {"uniform": {"semseg": [0.9, 1.1], "depth": [1.1, 1.3, 1.2]},
                            "cagrad": {"semseg": [0.6], "depth": [0.7]}}
    out = plot_feature_distance(runs, tmp_path / "fig6" / "feature_distance.png")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


def test_curves_from_a_run_log(tmp_path):
    rows = [
        {"iter": 0, "losses": {"semseg": 1.0}},
        {"iter": 0, "feature_distance": {"semseg": 1.5, "depth": 1.4}},
        {"iter": 10, "feature_distance": {"semseg": 1.2, "depth": 1.0}},
        {"iter": 10, "feature_distance": {"semseg": 1.1, "depth": 0.9}},  # resumed: the last record wins
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"iter\": 20, \"feat")
    curves = load_feature_distance(tmp_path)
    assert curves == {"semseg": [(0, 1.5), (10, 1.1)], "depth": [(0, 1.4), (10, 0.9)]}
    assert load_feature_distance(tmp_path / "missing") == {}
    out = plot_feature_distance({"uniform": curves, "avgnorm": curves}, tmp_path / "curves.png", title="NYUD")
    assert out.read_bytes()[:8] == PNG


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(MtlkitError, match="at least one method"):
        plot_feature_distance({}, tmp_path / "x.png")
    with pytest.raises(MtlkitError, match="expected"):
        plot_feature_distance({"uniform": 0.3}, tmp_path / "x.png")


def test_long_curves_are_binned_preserving_the_mean():
    from mtlkit.distill._plots import MAX_POINTS, _binned

    curve = [(float(i), float(i % 7)) for i in range(5000)]
    b = _binned(curve)
    assert len(b) == MAX_POINTS
    assert sum(y for _, y in b) / len(b) == pytest.approx(sum(y for _, y in curve) / len(curve), rel=1e-3)
    assert _binned(curve[:10]) == curve[:10]
