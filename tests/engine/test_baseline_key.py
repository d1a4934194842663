"""The single-task baselines' cache key: what defines a baseline's budget, and nothing else."""

from __future__ import annotations

from mtlkit.engine import baselines as B
from mtlkit.engine.config import Config


def test_grad_clip_enters_the_key_only_when_set():
    cfg = Config(dataset="synthetic-nyud", iters=10)
    assert B.baseline_key(cfg) == B.baseline_key(cfg.replace(grad_clip=None))
    assert B.baseline_key(cfg.replace(grad_clip=10.0)) != B.baseline_key(cfg)
    assert B.baseline_key(cfg.replace(select="best")) == B.baseline_key(cfg)  # selection is not the budget


def test_default_checkpoint_is_keyed_by_its_hash(monkeypatch):
    cfg = Config(dataset="synthetic-nyud", model="micro", pretrained="default")
    before = B.baseline_key(cfg)
    monkeypatch.setattr(B, "_shipped_sha256", lambda model: "another checkpoint")
    assert B.baseline_key(cfg) != before  # a new shipped checkpoint does not reuse the old baselines
    assert B.baseline_key(cfg.replace(pretrained=None)) == B.baseline_key(Config(dataset="synthetic-nyud"))
