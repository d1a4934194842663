"""The composition matrix: every registered balancing method × every update strategy × {no transform,
DTME, Recon} trains a few steps, expands where the transform expands, and evaluates.

Generated from the registries, so a new method or strategy joins without editing this file. A combination
may only be refused before training with one line naming why; none is today (``REFUSED`` is empty). The
model is a 3-block ViT on 16×16 images (``tiny-random``, 3 tasks) so the whole matrix runs in CI.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import pytest
import torch

import mtlkit
from mtlkit.balancing import BALANCERS
from mtlkit.data import build_dataset
from mtlkit.models import HEADS, MultiTaskModel, build_backbone
from mtlkit.strategies import STRATEGIES

TASKS = ["semseg", "depth", "edge"]
TRANSFORMS = {"none": None, "dtme": {"iteration": 1, "calib_batches": 1, "rho": 0.67},
              "recon": {"iteration": 1, "calib_batches": 1, "layers": 1}}
#: (method, strategy, transform) -> the words of the one-line refusal; empty: everything composes
REFUSED: dict[tuple[str, str, str], str] = {}
#: per-method options for the matrix (fixed weights must name tasks)
OPTIONS = {"fixed": {"weights": {"semseg": 1.0, "depth": 2.0, "edge": 5.0}}}
STRATEGY_OPTIONS = {"selective": {"grouping": "random", "num_groups": 2}}  # a pair and a single task
SOLVERS = importlib.util.find_spec("cvxpy") is not None


@pytest.fixture(scope="module")
def splits():
    return [build_dataset("tiny-random", s, tasks=TASKS, image_size=16, n=8) for s in ("train", "val", "test")]


def tiny_vit(tasks) -> MultiTaskModel:
    backbone = build_backbone("micro", 16, patch_size=8, embed_dim=32, depth=3, num_heads=2)
    heads = {t: HEADS.get("linear")(backbone.out_channels, task.channels) for t, task in tasks.items()}
    return MultiTaskModel(backbone, heads, (16, 16))


CASES = [(m, s, x) for m in BALANCERS.names() for s in STRATEGIES.names() for x in TRANSFORMS]


@pytest.mark.parametrize("method, strategy, transform", CASES, ids=["-".join(c) for c in CASES])
def test_every_method_strategy_and_transform_compose(method, strategy, transform, splits, tmp_path):
    if BALANCERS.get(method).requires and not SOLVERS:
        pytest.skip("needs mtlkit[solvers]")
    train, val, test = splits
    tasks = train.make_tasks()
    torch.manual_seed(0)
    transforms = [] if TRANSFORMS[transform] is None else [(transform, TRANSFORMS[transform])]
    kwargs = dict(val_data=val, test_data=test, balancer=method, balancer_options=OPTIONS.get(method),
                  strategy=strategy, strategy_options=STRATEGY_OPTIONS.get(strategy), transforms=transforms,
                  iters=3, batch_size=4, eval_batch_size=8, out=tmp_path, predictions=False)
    refusal = REFUSED.get((method, strategy, transform))
    if refusal is not None:
        with pytest.raises(mtlkit.MtlkitError, match=refusal) as e:
            mtlkit.Trainer(tiny_vit(tasks), tasks, train, **kwargs)
        assert "\n" not in str(e.value)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a solver fallback or a numerical warning fails the case
        metrics = mtlkit.Trainer(tiny_vit(tasks), tasks, train, **kwargs).fit()
    assert metrics["iterations"] == 3 and metrics["skipped_steps"] == 0
    assert set(metrics["primary"]) == set(TASKS)
    assert all(math.isfinite(v) for v in metrics["primary"].values())
    if transform != "none":
        report = metrics[transform]
        assert report["expanded"] and report["params_added"] > 0
