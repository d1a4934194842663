"""Plots of a selective-update run from its log.jsonl: parsing, grouping frequency, the three figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mtlkit.analysis import PLOTTERS, grouping_frequency, load_selective_log, plot_affinity

TASKS = ["semseg", "depth", "normals"]


def write_log(run: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")


def fake_rows(n: int = 40, warmup: int = 10) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        warm = i <= warmup
        if warm:
            groups = [[t] for t in TASKS]
        else:
            groups = [["semseg", "depth"], ["normals"]] if i % 3 else [TASKS]
        row = {
            "iter": i,
            "lr": 1e-3,
            # dict order differs from the matrix order on purpose: affinity_tasks is authoritative
            "losses": {"normals": 0.5, "semseg": 1.0, "depth": 0.3},
            "groups": groups,
            "grouped_by": "warmup" if warm else "affinity",
            "affinity": (rng.normal(size=(3, 3)) * 1e-3).round(6).tolist(),
            "steps": len(groups),
            "skipped": 0,
        }
        if i == 0:
            row["affinity_tasks"] = TASKS
        rows.append(row)
    return rows


def test_grouping_frequency_by_hand():
    groups = [[["semseg", "depth"], ["normals"]], [["semseg"], ["depth", "normals"]], [TASKS]]
    f = grouping_frequency(groups, TASKS)
    np.testing.assert_allclose(f, [[1, 2 / 3, 1 / 3], [2 / 3, 1, 2 / 3], [1 / 3, 2 / 3, 1]])


def test_log_parsing_task_order_resume_duplicates_and_truncated_lines(tmp_path):
    rows = fake_rows(12)
    again = dict(rows[5], affinity=[[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0]])  # iteration 5 logged again on resume
    write_log(tmp_path, rows + [again], extra_lines=('{"iter": 13, "affin',))
    log = load_selective_log(tmp_path)
    assert log.tasks == TASKS
    assert log.iters.tolist() == list(range(12))
    assert log.affinity.shape == (12, 3, 3) and log.affinity[5, 0, 0] == 9.0
    np.testing.assert_allclose(log.affinity[3], rows[3]["affinity"])
    assert log.grouped_by[0] == "warmup" and log.grouped_by[-1] == "affinity"


def test_plots_come_out(tmp_path):
    write_log(tmp_path / "run", fake_rows())
    assert "affinity" in PLOTTERS and PLOTTERS.get("affinity") is plot_affinity
    paths = plot_affinity(tmp_path / "run", tmp_path / "plots")
    assert [p.name for p in paths] == ["affinity_pairs.png", "grouping_frequency.png", "num_groups.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn


def test_nothing_to_plot(tmp_path):
    assert plot_affinity(tmp_path / "missing", tmp_path / "plots") == []
    write_log(tmp_path / "joint", [{"iter": i, "losses": {"semseg": 1.0}, "steps": 1} for i in range(5)])
    assert plot_affinity(tmp_path / "joint", tmp_path / "plots") == []
    assert not (tmp_path / "plots").exists()


def test_strategy_log_round_trip(tmp_path):
    """The selective strategy's step info, logged as the trainer does, is what the plotter reads."""
    import torch

    from mtlkit import balancing
    from mtlkit.models import build_model
    from mtlkit.strategies import StepContext, get
    from mtlkit.tasks import make_task

    torch.manual_seed(0)
    tasks = {t: make_task(t) for t in ("depth", "normals", "saliency")}
    model = build_model("micro", tasks, 16, embed_dim=32, depth=2, num_heads=2)
    batch = {
        "image": torch.randn(2, 3, 16, 16),
        "depth": torch.rand(2, 1, 16, 16) + 0.1,
        "normals": torch.nn.functional.normalize(torch.randn(2, 3, 16, 16), dim=1),
        "saliency": (torch.rand(2, 1, 16, 16) > 0.5).float(),
    }
    ctx = StepContext(model=model, tasks=tasks, balancer=balancing.get("equal", tasks=list(tasks)),
                      optimizer=torch.optim.Adam(model.parameters(), 1e-3))
    strategy = get("selective", warmup=1, seed=0)
    rows = []
    for i in range(4):
        ctx.iteration = i
        rows.append({"iter": i, "lr": 1e-3, **strategy.step(batch, ctx)})
    write_log(tmp_path, rows)
    log = load_selective_log(tmp_path)
    assert log.tasks == list(tasks) and log.affinity.shape == (4, 3, 3)
    np.testing.assert_allclose(log.affinity[-1], strategy.affinity.matrix, rtol=1e-4, atol=1e-12)
    assert log.grouped_by == ["warmup", "warmup", "affinity", "affinity"]
    assert len(plot_affinity(tmp_path, tmp_path / "plots")) == 3
