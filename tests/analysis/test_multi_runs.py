"""``mtlkit analyze RUN RUN ...``: the imbalance study's Fig. 6 over runs (constructed run directories)."""

import json

import pytest

from mtlkit.analysis import MULTI_PLOTTERS, _multi, run_label
from mtlkit.cli import main


def _run(path, method, fd, strategy="joint", distill=False, log=None):
    path.mkdir(parents=True)
    metrics = {"method": method, "strategy": strategy, "feature_distance": fd}
    if distill:
        metrics["distill"] = {"method": "url", "distance": {}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"iter": i, "feature_distance": d} for i, d in enumerate(log or [])]
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_labels_name_url_and_the_strategy():
    assert run_label({"method": "equal", "strategy": "joint"}) == "equal"
    assert run_label({"method": "equal", "distill": {}}) == "url"
    assert run_label({"method": "pcgrad", "distill": {}}) == "url+pcgrad"
    assert run_label({"method": "equal", "strategy": "selective"}) == "equal+selective"


def test_bars_group_runs_by_method(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(_multi, "plot_feature_distance", lambda data, path, **kw: seen.append(data) or path)
    runs = [
        _run(tmp_path / "eq0", "equal", {"a": 1.0, "b": 2.0}, log=[{"a": 1.5, "b": 2.5}, {"a": 1.0, "b": 2.0}]),
        _run(tmp_path / "eq1", "equal", {"a": 3.0, "b": 4.0}),
        _run(tmp_path / "url", "pcgrad", {"a": 0.5, "b": 0.25}, distill=True),
        _run(tmp_path / "none", "equal", None),  # trained without --feature-distance: left out
    ]
    written = MULTI_PLOTTERS.get("feature_distance")(runs, tmp_path / "plots")
    assert [p.name for p in written] == ["feature_distance.png", "feature_distance_curves.png"]
    bars, curves = seen
    assert bars == [{"equal": {"a": 1.0, "b": 2.0}}, {"equal": {"a": 3.0, "b": 4.0}},
                    {"url+pcgrad": {"a": 0.5, "b": 0.25}}]
    assert curves == [{"equal": {"a": [(0, 1.5), (1, 1.0)], "b": [(0, 2.5), (1, 2.0)]}}]


def test_cli_draws_pngs_and_keeps_single_run_analyze(tmp_path, capsys):
    a = _run(tmp_path / "a", "equal", {"semseg": 1.2, "depth": 0.8}, log=[{"semseg": 1.3, "depth": 0.9}])
    b = _run(tmp_path / "b", "pcgrad", {"semseg": 1.0, "depth": 0.7}, distill=True)
    assert main(["analyze", str(a), str(b), "--out", str(tmp_path / "fig6")]) == 0
    png = tmp_path / "fig6" / "feature_distance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["analyze", str(a)]) == 0  # one run: the single-run plotters, as before
    assert "nothing to plot" in capsys.readouterr().out
    assert main(["analyze", str(a), str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("only", ["feature_distance"])
def test_only_selects_a_multi_run_plot(tmp_path, only):
    a = _run(tmp_path / "a", "equal", {"t": 1.0})
    b = _run(tmp_path / "b", "mgda", {"t": 2.0})
    assert main(["analyze", str(a), str(b), "--only", only, "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "feature_distance.png").is_file()
