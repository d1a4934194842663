"""DTME / Recon as Trainer transforms, and methods on the shared representation after the fork."""

from __future__ import annotations

import torch

import mtlkit
from mtlkit import balancing
from mtlkit.data import build_dataset
from mtlkit.dtme import DTMECallback, apply_dtme
from mtlkit.models import HEADS, MultiTaskModel, build_backbone, run_model
from mtlkit.strategies._base import balancer_features


def tiny_vit(tasks) -> MultiTaskModel:
    backbone = build_backbone("micro", 16, patch_size=8, embed_dim=32, depth=3, num_heads=2)
    heads = {t: HEADS.get("linear")(backbone.out_channels, task.channels) for t, task in tasks.items()}
    return MultiTaskModel(backbone, heads, (16, 16))


def test_features_after_the_fork_are_the_last_shared_tokens():
    ds = build_dataset("tiny-random", "train", tasks=["semseg", "depth"], image_size=16, n=4)
    tasks = ds.make_tasks()
    torch.manual_seed(0)
    spec = {"version": 2, "tasks": list(tasks), "tm_layers": [1], "te_layers": [1], "tokens": 2}
    model = apply_dtme(tiny_vit(tasks), spec)
    x = torch.stack([ds[i]["image"] for i in range(4)])
    out, feats = run_model(model, x)
    assert isinstance(feats, dict)  # forked: one feature list per task
    ub = balancing.get("mgda_ub", tasks=list(tasks))
    z = balancer_features(ub, model, feats)
    assert len(z) == 1 and z[0] is model.backbone.shared_tokens and z[0].shape == (4, 5, 32)  # class token + 4 patches
    # every task output depends on the shared tokens, and all pre-fork parameters are reached through them
    losses = {t: tasks[t].loss(out[t], torch.stack([ds[i][t] for i in range(4)])) for t in tasks}
    info = ub.backward(losses, features=z, model=model)
    assert set(info["weights"]) == set(tasks)
    first = model.backbone.base.blocks[0].attn.qkv.weight
    assert first.grad is not None and bool(first.grad.abs().sum() > 0)
    # a method on the parameters keeps the per-task features (its faster split)
    assert balancer_features(balancing.get("pcgrad", tasks=list(tasks)), model, feats) is feats


def test_a_transform_instance_is_bound_to_the_run(tmp_path):
    ds = [build_dataset("tiny-random", s, tasks=["semseg", "depth"], image_size=16, n=8) for s in ("train", "val")]
    tasks = ds[0].make_tasks()
    cb = DTMECallback({"calib_batches": 1})  # no iteration given: resolved from the run's length
    m = mtlkit.Trainer(tiny_vit(tasks), tasks, ds[0], val_data=ds[1], balancer="mgda_ub", transforms=[cb],
                       iters=30, batch_size=4, out=tmp_path, predictions=False).fit()
    assert cb.at == 3 and m["dtme"]["expanded"] and m["dtme"]["iteration"] == 3
