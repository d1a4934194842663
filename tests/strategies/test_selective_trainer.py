"""The selective strategy inside the Trainer: CLI options, the logged affinity and groups, plots, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlkit.analysis import PLOTTERS
from mtlkit.cli import main
from mtlkit.engine import Trainer, load_model
from tests.faults.helpers import Stop, StopAt


def test_cli_train_then_analyze(tmp_path):
    out = tmp_path / "sel"
    code = main([
        "train", "--dataset", "tiny-random", "--image-size", "16", "--iters", "4", "--batch-size", "4",
        "--eval-every", "0", "--strategy", "selective", "--strategy-opt", "warmup=2,attribution=official",
        "--strategy-opt", "order=forward", "--lr-ts", "4", "--weights", "edge=50", "--out", str(out),
        "--no-progress",
    ])
    assert code == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert [r["grouped_by"] for r in rows[:3]] == ["warmup"] * 3 and rows[3]["grouped_by"] in ("affinity", "kept")
    assert rows[0]["groups"] == [["semseg"], ["depth"], ["normals"], ["edge"]]  # order=forward
    assert rows[0]["affinity_tasks"] == ["semseg", "depth", "normals", "edge"]
    assert all(r["steps"] >= len(r["groups"]) for r in rows)
    assert all(r["weights"] == {"semseg": 1.0, "depth": 1.0, "normals": 1.0, "edge": 50.0} for r in rows)
    assert main(["analyze", str(out)]) == 0
    assert {p.name for p in (out / "plots").iterdir()} >= {"affinity_pairs.png", "grouping_frequency.png",
                                                           "num_groups.png"}
    assert "affinity" in PLOTTERS


def test_bad_strategy_option_is_a_one_line_user_error(tmp_path, capsys):
    code = main(["train", "--dataset", "tiny-random", "--strategy", "selective", "--strategy-opt", "grouping=x",
                 "--out", str(tmp_path / "bad"), "--no-progress"])
    assert code == 2 and "grouping" in capsys.readouterr().err


def test_trainer_resume_is_exact(tiny_config, tmp_path):
    # warm-up is batch 0; the run is interrupted after batch 1 and resumed into the affinity-grouped batches
    full = tiny_config.replace(iters=4, eval_every=2, strategy="selective", strategy_options={"warmup": 0},
                               out=str(tmp_path / "full"))
    trainer = Trainer(full)
    assert trainer.strategy.balancer_spec == ("equal", {})  # sub-group balancers: the run's method
    trainer.fit()
    part = full.replace(out=str(tmp_path / "part"))
    t = Trainer(part)
    t.callbacks.append(StopAt(2))
    with pytest.raises(Stop):
        t.fit()
    Trainer(part).fit(resume=True)
    a = load_model(tmp_path / "full")[0].state_dict()
    b = load_model(tmp_path / "part")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(x) for x in Path(p, "log.jsonl").read_text().splitlines()] for p in (full.out, part.out)]
    assert [r["groups"] for r in logs[0]] == [r["groups"] for r in logs[1]]
    assert [r["affinity"] for r in logs[0]] == [r["affinity"] for r in logs[1]]
    by = [r["grouped_by"] for r in logs[1]]
    assert by[0] == "warmup" and set(by[1:]) <= {"affinity", "kept"}  # "kept": a self affinity still 0
