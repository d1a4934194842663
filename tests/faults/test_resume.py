"""Kill-and-resume: a run killed past a checkpoint and resumed ends byte-identical to the uninterrupted run
(weights, metrics.json without timings, logs), for balancing methods, strategies, augmented data, DTME /
Recon before and after the expansion."""

from __future__ import annotations

import json

import pytest

from mtlkit.engine import Trainer

from .helpers import assert_same_run, kill_and_resume


@pytest.fixture
def cfg(tiny_config):
    # checkpoints at 3 (eval_every); the kill comes at the start of iteration 4, so iteration 3 runs twice
    return tiny_config.replace(iters=6, eval_every=3, tasks=["semseg", "depth", "edge"])


@pytest.mark.parametrize("method", ["equal", "pcgrad", "uw"])
def test_methods(cfg, tmp_path, method):
    assert_same_run(*kill_and_resume(cfg.replace(method=method), tmp_path, stop=4))


def test_selective_strategy(cfg, tmp_path):
    c = cfg.replace(strategy="selective", strategy_options={"warmup": 1}, method="uw")
    assert_same_run(*kill_and_resume(c, tmp_path, stop=4))


def test_augmented_data(cfg, tmp_path):
    """Augmentations draw from the global RNGs; their per-item seeds make the resumed batches the same."""
    c = cfg.replace(dataset="tiny-augmented", method="pcgrad")
    full, part = kill_and_resume(c, tmp_path, stop=4)
    assert_same_run(full, part)
    # and with two loader workers the batches (hence the weights) are the same again
    w = tmp_path / "workers"
    Trainer(c.replace(out=str(w), num_workers=2)).fit()
    assert (w / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()


def test_dtme_resumed_after_the_expansion(cfg, tmp_path):
    c = cfg.replace(tasks=["semseg", "depth"], dtme={"iteration": 2, "calib_batches": 2, "tokens": 2})
    full, part = kill_and_resume(c, tmp_path, stop=4)
    assert_same_run(full, part)
    assert json.loads((part / "metrics.json").read_text())["dtme"]["expanded"]


def test_dtme_killed_after_the_expansion_resumed_before_it(cfg, tmp_path):
    # the expansion at 4 happens, then the kill: the checkpoint at 3 is from before it
    c = cfg.replace(tasks=["semseg", "depth"], dtme={"iteration": 4, "calib_batches": 2, "tokens": 2})
    assert_same_run(*kill_and_resume(c, tmp_path, stop=4))


def test_recon_resumed_after_the_expansion(cfg, tmp_path):
    c = cfg.replace(tasks=["semseg", "depth"], recon={"iteration": 1, "calib_batches": 2, "layers": 1})
    assert_same_run(*kill_and_resume(c, tmp_path, stop=4))


def test_resuming_a_finished_run_changes_nothing(cfg, tmp_path):
    c = cfg.replace(out=str(tmp_path / "run"))
    first = Trainer(c).fit()
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    again = Trainer(c).fit(resume=True)
    assert again == json.loads(json.dumps(first, default=str)) or again["iterations"] == first["iterations"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files
