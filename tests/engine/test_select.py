"""select=best: the run's model is the candidate (periodic val evaluations and the final model) with the best
val Δm; its weights are the saved model and its test numbers are metrics.json's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtlkit.engine import Trainer, _select, load_model, train_single_task_baselines
from mtlkit.engine.evaluate import evaluate
from mtlkit.errors import MtlkitError

TASKS = ["semseg", "depth"]
HIGHER = {"semseg": True, "depth": False}


def _dm(primary: dict, base: dict) -> float:
    return sum((1 if HIGHER[t] else -1) * (primary[t] - base[t]) / base[t] * 100 for t in TASKS) / len(TASKS)


def test_best_is_the_argmax_of_the_hand_computed_val_delta_m(tiny_config):
    cfg = tiny_config.replace(tasks=TASKS, iters=9, eval_every=3)
    base = json.loads(train_single_task_baselines(cfg, TASKS).read_text())["val"]
    m = Trainer(cfg.replace(select="best")).fit()
    cands = [(h["iter"], _dm(h["primary"], base)) for h in m["val_history"]]
    sel = m["selected"]
    best_iter, best_dm = max(cands, key=lambda c: c[1])
    assert sel["delta_m"] >= best_dm - 1e-9  # no periodic candidate beats the selected model
    if sel["iter"] != 9:
        assert (sel["iter"], sel["delta_m"]) == (best_iter, pytest.approx(best_dm))
    assert m["val_delta_m"] == pytest.approx(sel["delta_m"], abs=1e-9)


def test_an_earlier_best_model_is_loaded_saved_and_tested(tiny_config, monkeypatch):
    cfg = tiny_config.replace(tasks=TASKS, iters=9, eval_every=3)
    train_single_task_baselines(cfg, TASKS)
    scores = iter([5.0, 1.0, 0.0])  # iterations 3, 6 and the final model: the first is the best
    monkeypatch.setattr(_select, "_val_delta_m", lambda trainer, val: next(scores))
    trainer = Trainer(cfg.replace(select="best"))
    m = trainer.fit()
    assert m["selected"]["iter"] == 3 and m["iterations"] == 9
    best = load_file(str(Path(cfg.out, _select.BEST_FILE)))
    saved = load_file(str(Path(cfg.out, "model.safetensors")))
    assert all(torch.equal(best[k], saved[k]) for k in best)
    model, _ = load_model(cfg.out)
    loader = torch.utils.data.DataLoader(trainer.test_set, batch_size=8)
    again = evaluate(model, loader, trainer.tasks)
    for t in TASKS:
        assert again["primary"][t] == pytest.approx(m["primary"][t], rel=1e-6)


def test_select_best_without_baselines_is_a_one_line_error(tiny_config):
    with pytest.raises(MtlkitError, match="select=best .* needs a val split and single-task baselines"):
        Trainer(tiny_config.replace(select="best", baseline_cache=str(Path(tiny_config.out).parent / "none")))
    with pytest.raises(MtlkitError, match="select="):
        tiny_config.replace(select="first").validate()


def test_resumed_run_selects_exactly_as_an_uninterrupted_one(tiny_config, tmp_path, monkeypatch):
    """Killed after the best model's evaluation: the resumed run reads best.safetensors and ends the same."""
    from tests.faults.helpers import assert_same_run, kill_and_resume

    cfg = tiny_config.replace(tasks=TASKS, iters=6, eval_every=3)
    train_single_task_baselines(cfg, TASKS)
    monkeypatch.setattr(_select, "_val_delta_m", lambda trainer, val: 5.0 if trainer.iteration == 3 else 0.0)
    full, part = kill_and_resume(cfg.replace(select="best"), tmp_path, stop=4)
    assert json.loads((part / "metrics.json").read_text())["selected"]["iter"] == 3
    assert_same_run(full, part)
