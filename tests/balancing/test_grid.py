"""Grid search over fixed loss weights, chosen by validation Δm, beside AvgNorm's average weights."""

from __future__ import annotations

import json

import pytest

from mtlkit.balancing._grid import average_logged_weights, grid_points, parse_grid
from mtlkit.cli import main
from mtlkit.errors import MtlkitError


def test_parse_grid_and_points():
    grid = parse_grid(["depth=1,2", "edge=10,50 normals=3"])
    assert grid == {"depth": [1.0, 2.0], "edge": [10.0, 50.0], "normals": [3.0]}
    points = grid_points(grid, ["semseg", "depth", "normals", "edge"])
    assert len(points) == 4 and points[0] == {"semseg": 1.0, "depth": 1.0, "normals": 3.0, "edge": 10.0}
    assert {(p["depth"], p["edge"]) for p in points} == {(1, 10), (1, 50), (2, 10), (2, 50)}
    for bad in (["depth"], ["depth=a"], ["depth=-1"], ["depth="]):
        with pytest.raises(MtlkitError):
            parse_grid(bad)
    with pytest.raises(MtlkitError, match="does not have"):
        grid_points({"saliency": [1.0]}, ["semseg"])


def test_average_logged_weights(tmp_path):
    lines = [{"iter": 0, "weights": {"a": 1.0, "b": 100.0}}, {"iter": 1, "weights": {"a": 3.0, "b": 50.0}},
             {"iter": 2, "weights": {}}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{partial")
    assert average_logged_weights(tmp_path) == {"a": 2.0, "b": 75.0}


def test_grid_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(["grid", "--dataset", "tiny-random", "--image-size", "16", "--tasks", "semseg,depth",
                 "--iters", "2", "--batch-size", "4", "--eval-every", "0", "--out", str(out), "--no-progress",
                 "--grid", "depth=1,5"])
    assert code == 0
    result = json.loads((out / "grid.json").read_text())
    assert [p["weights"] for p in result["points"]] == [{"semseg": 1.0, "depth": 1.0}, {"semseg": 1.0, "depth": 5.0}]
    best = max(result["points"], key=lambda p: p["val_delta_m"])
    assert result["best"]["weights"] == best["weights"]
    (avg,) = result["compare"]
    assert avg["method"] == "avgnorm" and set(avg["weights"]) == {"semseg", "depth"}
    assert avg["weights"] == pytest.approx(average_logged_weights(avg["run"]))
    text = capsys.readouterr().out
    assert "grid search (best val Δm)" in text and "avgnorm (average λ)" in text


def test_grid_command_needs_a_grid(capsys):
    assert main(["grid", "--dataset", "tiny-random", "--image-size", "16"]) == 2
    assert "--grid" in capsys.readouterr().err
