"""Checkpoints of built-in models reload by name, including timm names with a pretrained tag."""

from __future__ import annotations

import torch

from mtlkit.engine.checkpoint import load_model, save_model
from mtlkit.models import build_model
from mtlkit.tasks import make_task


def test_a_tagged_timm_model_reloads_without_its_pretrained_file(tmp_path):
    # the run started from a checkpoint file (pretrained tag); reloading must not ask for that file again
    name = "vit_tiny_patch16_224.augreg_in21k"
    build = {"name": name, "img_size": 32, "head": "linear", "patch_size": 16}
    model = build_model(tasks={"depth": make_task("depth")}, pretrained=False, **build)
    save_model(model, {"build": {**build, "tasks": {"depth": {}}}, "transforms": []}, tmp_path)
    again, spec = load_model(tmp_path)
    assert spec["build"]["name"] == name
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
