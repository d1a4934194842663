"""URL and the probe on mtlkit's own ViT MultiTaskModel (the backbone's last feature map, a token grid)."""

from __future__ import annotations

import torch

from mtlkit import balancing, make_task
from mtlkit.distill import FeatureDistanceProbe, URLDistiller, backward_with_distillation, build_teacher
from mtlkit.models import build_model

from .tiny import state_bytes

TASKS = {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth")}


def _vit(tasks):
    return build_model("micro", tasks, 32, depth=2)


def test_vit_student_with_url_and_probe():
    with torch.random.fork_rng():
        torch.manual_seed(9)
        cached = {t: _vit({t: task}).state_dict() for t, task in TASKS.items()}
    teachers = {t: build_teacher(lambda t=t: _vit({t: TASKS[t]}), cached[t]) for t in TASKS}
    before = {t: state_bytes(m) for t, m in teachers.items()}
    torch.manual_seed(0)
    model = _vit(TASKS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    balancer = balancing.get("pcgrad")
    x = torch.randn(2, 3, 32, 32)
    targets = {"semseg": torch.randint(0, 3, (2, 32, 32)), "depth": torch.rand(2, 1, 32, 32)}
    distiller = probe = None
    for it in range(2):
        opt.zero_grad(set_to_none=True)
        out, feats = model(x, return_features=True)
        if distiller is None:
            distiller = URLDistiller.from_example(teachers, feats, x, total_steps=2)
            probe = FeatureDistanceProbe.from_example(teachers, feats, x)
        distiller.zero_grad()
        tf = distiller.teacher_features(x)  # computed once, shared by URL and the probe
        total, dist = distiller.loss(feats, teacher_features=tf)
        losses = {t: TASKS[t].loss(out[t], targets[t]) for t in TASKS}
        info = backward_with_distillation(balancer, losses, total, shared=model.shared_parameters(),
                                          features=feats)
        opt.step()
        distiller.step()
        distiller.schedule_step()
        probe.step(feats, teacher_features=tf, iteration=it)
        assert set(dist) == set(TASKS) and all(0.0 <= v <= 4.0 for v in dist.values())
        assert info["distill_loss"] == float(total.detach())
    c = model.backbone.out_channels[-1]
    assert all(a.in_channels == [c] and a.out_channels == c for a in distiller.adaptors.values())
    assert {t: state_bytes(m) for t, m in teachers.items()} == before
    assert distiller.lr == 0.0 and len(probe.history) == 2
