"""The radar chart (imbalance study Fig. 4): per-task M_i against a reference, from run folders and baselines."""

from __future__ import annotations

import json

import pytest

from mtlkit.analysis import radar_values
from mtlkit.cli import main
from mtlkit.errors import MtlkitError

REF = {"semseg": 40.0, "depth": 0.5, "normals": 20.0, "edge": 50.0}


def _run(tmp_path, name: str, primary: dict[str, float]):
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"tasks": {}, "primary": primary}))
    return d


def _baselines(tmp_path, name: str, test: dict[str, float]):
    d = tmp_path / name
    d.mkdir()
    (d / "baselines.json").write_text(json.dumps({"key": name, "val": test, "test": test, "runs": {}}))
    return d


def test_per_task_relative_gains_by_hand(tmp_path) -> None:
    ref = _baselines(tmp_path, "plain-st", REF)
    vanilla = _run(tmp_path, "vanilla", {"semseg": 44.0, "depth": 0.55, "normals": 19.0, "edge": 50.0})
    twins = _baselines(tmp_path, "mtan-st", {"semseg": 38.0, "depth": 0.4, "normals": 22.0, "edge": 55.0})
    v = radar_values([vanilla, twins / "baselines.json"], ref)
    assert v["tasks"] == ["semseg", "depth", "normals", "edge"]
    s = v["series"]
    # higher is better for semseg / edge, lower for depth / normals: (-1)^l (M - M_ref) / M_ref * 100
    assert s["vanilla"] == pytest.approx({"semseg": 10.0, "depth": -10.0, "normals": 5.0, "edge": 0.0})
    assert s["mtan-st"] == pytest.approx({"semseg": -5.0, "depth": 20.0, "normals": -10.0, "edge": 10.0})


def test_cli_writes_the_png(tmp_path) -> None:
    ref = _baselines(tmp_path, "plain-st", REF)
    a = _run(tmp_path, "a", {"semseg": 44.0, "depth": 0.55, "normals": 19.0, "edge": 50.0})
    b = _run(tmp_path, "b", {"semseg": 41.0, "depth": 0.45, "normals": 21.0, "edge": 52.0})
    out = tmp_path / "plots"
    args = ["analyze", str(a), str(b), "--reference", str(ref), "--labels", "vanilla,mtan", "--out", str(out)]
    assert main(args) == 0
    png = out / "radar.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    saved = json.loads((out / "radar.json").read_text())
    assert set(saved["series"]) == {"vanilla", "mtan"}
    assert saved["series"]["mtan"]["edge"] == pytest.approx(4.0)


def test_refusals(tmp_path, capsys) -> None:
    ref = _baselines(tmp_path, "ref", {"semseg": 40.0, "depth": 0.5})
    a = _run(tmp_path, "a", {"semseg": 44.0, "depth": 0.55})
    with pytest.raises(MtlkitError, match="at least 3 tasks"):
        radar_values([a], ref)
    assert main(["analyze", str(a), "--reference", str(tmp_path / "missing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
