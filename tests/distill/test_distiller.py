"""URLDistiller: distances and λ, frozen teachers, what is saved, the order with the balancer, resume, learning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mtlkit import balancing
from mtlkit.distill import (
    OFFICIAL_LR,
    FeatureExtractor,
    URLDistiller,
    backward_with_distillation,
    resolve_weights,
)
from mtlkit.errors import MtlkitError

from .tiny import TASKS, state_bytes, task_losses, tiny_model


class Const(nn.Module):
    """A teacher that returns a fixed feature whatever the input."""

    def __init__(self, feature: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("feature", feature)

    def forward(self, x):
        return self.feature


def _vec_map(v: list[float]) -> torch.Tensor:
    return torch.tensor(v)[None, :, None, None].expand(1, -1, 2, 2).contiguous()


def _teachers(seed: int = 1, tasks=TASKS) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {t: FeatureExtractor(tiny_model((t,))) for t in tasks}


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _train(model, distiller, x, steps, balancer=None, opt=None):
    balancer = balancer or balancing.get("equal")
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        distiller.zero_grad()
        out, feats = model(x, return_features=True)
        total, dist = distiller.loss(feats, x)
        backward_with_distillation(balancer, task_losses(out, x), total,
                                   shared=model.shared_parameters(), features=feats)
        opt.step()
        distiller.step()
        distiller.schedule_step()
        history.append(dist)
    return history


# ------------------------------------------------------------------------------------ distances and λ
def test_identity_student_equals_teacher_gives_zero():
    torch.manual_seed(0)
    student = tiny_model().eval()
    teachers = {t: FeatureExtractor(copy.deepcopy(student)) for t in TASKS}
    x = _batch()
    feats = student.forward_features(x)
    d = URLDistiller.from_example(teachers, feats, x)
    for a in d.adaptors.values():
        a.set_identity()
    total, dist = d.loss(feats, x)
    assert set(dist) == set(TASKS)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in dist.values())
    assert total.item() == pytest.approx(0.0, abs=1e-6)


def test_known_offset_weighted_by_official_lambda():
    # per position: student (3, 4) vs teacher (1, 0) -> 0.8; λ(semseg)=1, λ(normals)=2 (nyu_url.py line 200)
    teacher = _vec_map([1.0, 0.0])
    d = URLDistiller({"semseg": Const(teacher), "normals": Const(teacher)}, 2, 2)
    for a in d.adaptors.values():
        a.set_identity()
    total, dist = d.loss([_vec_map([3.0, 4.0])], inputs=torch.zeros(1))
    assert dist == pytest.approx({"semseg": 0.8, "normals": 0.8}, abs=1e-6)
    assert total.item() == pytest.approx(1 * 0.8 + 2 * 0.8, abs=1e-6)
    # several student features: each adapted, resized to the teacher's size, their distances summed
    d2 = URLDistiller({"semseg": Const(teacher)}, [2, 2], 2, select=[0, 1])
    d2.adaptors["semseg"].set_identity()
    low = _vec_map([3.0, 4.0])[:, :, :1, :1]  # 1x1 map, bilinearly resized to the teacher's 2x2
    _, dist2 = d2.loss([low, _vec_map([5.0, 0.0])], teacher_features={"semseg": teacher})
    assert dist2["semseg"] == pytest.approx(0.8 + 0.0, abs=1e-6)


def test_forked_per_task_streams():
    teacher = _vec_map([1.0, 0.0])
    d = URLDistiller({"semseg": Const(teacher), "depth": Const(teacher)}, 2, 2)
    for a in d.adaptors.values():
        a.set_identity()
    forked = {"semseg": [_vec_map([2.0, 0.0])], "depth": [_vec_map([0.0, 1.0])]}
    _, dist = d.loss(forked, inputs=torch.zeros(1))
    assert dist == pytest.approx({"semseg": 0.0, "depth": 2.0}, abs=1e-6)


def test_weights_official_equal_and_overrides():
    tasks = ["semseg", "depth", "normals", "edge"]
    assert resolve_weights(tasks) == {"semseg": 1.0, "depth": 1.0, "normals": 2.0, "edge": 1.0}
    assert resolve_weights(tasks, "equal") == dict.fromkeys(tasks, 1.0)
    assert resolve_weights(tasks, {"edge": 5, "normal": 3}) == {"semseg": 1.0, "depth": 1.0, "normals": 3.0,
                                                                "edge": 5.0}
    with pytest.raises(MtlkitError, match="unknown task 'parts'"):
        resolve_weights(tasks, {"parts": 1})
    with pytest.raises(MtlkitError, match=">= 0"):
        resolve_weights(tasks, {"edge": -1})


def test_from_example_reads_channels():
    torch.manual_seed(0)
    student, x = tiny_model(c2=12), _batch()
    feats = student.forward_features(x)
    d = URLDistiller.from_example(_teachers(), feats, x, select=[0, -1])
    assert {t: a.in_channels for t, a in d.adaptors.items()} == {t: [8, 12] for t in TASKS}
    assert {t: a.out_channels for t, a in d.adaptors.items()} == dict.fromkeys(TASKS, 12)


# ------------------------------------------------------------------------------------ frozen teachers
def test_teachers_stay_frozen_while_adaptors_and_student_move():
    teachers = _teachers()
    for m in teachers.values():
        m.train()  # the distiller must freeze them anyway (BatchNorm would otherwise update its statistics)
    before_t = {t: state_bytes(m) for t, m in teachers.items()}
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    d = URLDistiller.from_example(teachers, student.forward_features(x), x, select=[0, -1])
    before_s, before_a = state_bytes(student), state_bytes(d.adaptors)
    _train(student, d, x, steps=3)
    for t, m in teachers.items():
        assert not m.training
        assert all(not p.requires_grad and p.grad is None for p in m.parameters())
        assert state_bytes(m) == before_t[t]  # weights and BatchNorm statistics, bit for bit
    after_s, after_a = state_bytes(student), state_bytes(d.adaptors)
    assert all(after_a[k] != before_a[k] for k in before_a)
    assert any(after_s[k] != before_s[k] for k in before_s if "backbone.conv" in k)


def test_state_dict_holds_adaptors_and_optimizer_never_teachers():
    teachers = _teachers()
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    keys = set(student.state_dict())
    d = URLDistiller.from_example(teachers, student.forward_features(x), x, total_steps=10)
    _train(student, d, x, steps=1)
    state = d.state_dict()
    assert set(state) == {"tasks", "weights", "adaptors", "optimizer", "scheduler", "recent"}
    assert set(state["adaptors"]) == {f"{t}.convs.0.weight" for t in TASKS}
    assert len(state["optimizer"]["state"]) == len(TASKS)  # Adam moments of the adaptors only
    teacher_ptrs = {v.data_ptr() for m in teachers.values() for v in m.state_dict().values()}
    assert not teacher_ptrs & {v.data_ptr() for v in state["adaptors"].values()}
    assert set(student.state_dict()) == keys  # nothing leaks into the student's checkpoint
    assert d.parameters() == list(d.adaptors.parameters())


def test_exact_resume():
    x = _batch()

    def build():
        torch.manual_seed(0)
        student = tiny_model()
        d = URLDistiller.from_example(_teachers(), student.forward_features(x), x, total_steps=6)
        return student, torch.optim.Adam(student.parameters(), lr=1e-2), d

    student, opt, d = build()
    _train(student, d, x, steps=4, opt=opt)
    straight = state_bytes(student), state_bytes(d.adaptors), d.lr

    student, opt, d = build()
    _train(student, d, x, steps=2, opt=opt)
    saved = copy.deepcopy((student.state_dict(), opt.state_dict(), d.state_dict()))
    student, opt, d = build()
    student.load_state_dict(saved[0])
    opt.load_state_dict(saved[1])
    d.load_state_dict(saved[2])
    _train(student, d, x, steps=2, opt=opt)
    assert (state_bytes(student), state_bytes(d.adaptors), d.lr) == straight
    assert len(d.recent) == 4 and d.final() == pytest.approx(
        {t: sum(r[t] for r in d.recent) / 4 for t in TASKS})
    with pytest.raises(MtlkitError, match="tasks"):
        URLDistiller(_teachers(tasks=("depth",)), 12, 12).load_state_dict(saved[2])


def test_cosine_schedule_over_total_steps():
    d = URLDistiller(_teachers(), 12, 12, total_steps=10)
    assert d.lr == pytest.approx(OFFICIAL_LR)
    d.step()  # no gradients yet: Adam skips every parameter
    for _ in range(5):
        d.schedule_step()
    assert d.lr == pytest.approx(OFFICIAL_LR / 2)
    for _ in range(5):
        d.schedule_step()
    assert d.lr == pytest.approx(0.0, abs=1e-12)
    const = URLDistiller(_teachers(), 12, 12)
    const.step()
    const.schedule_step()
    assert const.lr == OFFICIAL_LR
    assert const.optimizer.defaults["weight_decay"] == 5e-4


# ------------------------------------------------------------------------------------ with the balancer
def _grads(model, distiller) -> list[torch.Tensor]:
    params = list(model.parameters()) + distiller.parameters()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


@pytest.mark.parametrize("method", ["equal", "avgnorm", "pcgrad"])
def test_distillation_is_added_after_the_balancer(method):
    """g = g_balancer(task losses) + ∇ Σ λ D: the balancer never sees the distillation loss."""
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    d = URLDistiller.from_example(_teachers(), student.forward_features(x), x)

    def run(with_tasks: bool, with_distill: bool) -> list[torch.Tensor]:
        student.zero_grad(set_to_none=True)
        d.zero_grad()
        out, feats = student(x, return_features=True)
        total, _ = d.loss(feats, x)
        kw = {"shared": student.shared_parameters(), "features": feats,
              "last_shared": student.last_shared_parameters()}
        if with_tasks and with_distill:
            backward_with_distillation(balancing.get(method), task_losses(out, x), total, **kw)
        elif with_tasks:
            balancing.get(method).backward(task_losses(out, x), **kw)
        else:
            total.backward()
        return _grads(student, d)

    both, tasks_only, distill_only = run(True, True), run(True, False), run(False, True)
    for g, a, b in zip(both, tasks_only, distill_only, strict=True):
        torch.testing.assert_close(g, a + b, rtol=1e-5, atol=1e-7)
    assert any(b.abs().sum() > 0 for b in distill_only[: len(list(student.parameters()))])
    if method == "equal":  # a plain weighted sum: same as one backward of Σ L + Σ λ D (nyu_url.py line 215)
        student.zero_grad(set_to_none=True)
        d.zero_grad()
        out, feats = student(x, return_features=True)
        total, _ = d.loss(feats, x)
        (sum(task_losses(out, x).values()) + total).backward()
        for g, ref in zip(both, _grads(student, d), strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7)


def test_training_with_the_distiller_lowers_the_distance():
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    d = URLDistiller.from_example(_teachers(), student.forward_features(x), x)
    assert d.final() == {}
    hist = _train(student, d, x, steps=25)
    first, last = hist[0], hist[-1]
    for t in TASKS:
        assert last[t] < 0.5 * first[t], (t, first[t], last[t])


def test_nonfinite_distillation_loss_is_left_out():
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    out, feats = student(x, return_features=True)
    bad = feats[-1].sum() * float("nan")
    with pytest.warns(RuntimeWarning, match="left out"):
        info = backward_with_distillation(balancing.get("equal"), task_losses(out, x), bad)
    assert info["distill_nonfinite"] == 1
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in student.parameters())
    assert student.backbone.conv1.weight.grad is not None  # the task losses still trained


def test_half_precision_features():
    teacher = _vec_map([1.0, 0.0])
    d = URLDistiller({"semseg": Const(teacher.half())}, 2, 2)
    d.adaptors["semseg"].set_identity()
    _, dist = d.loss([_vec_map([3.0, 4.0]).half()], inputs=torch.zeros(1))
    assert dist["semseg"] == pytest.approx(0.8, abs=1e-3)


def test_step_passes_the_adaptor_gradients_to_sync_grads():
    torch.manual_seed(0)
    student, x = tiny_model(), _batch()
    d = URLDistiller.from_example(_teachers(), student.forward_features(x), x)
    total, _ = d.loss(student.forward_features(x), x)
    total.backward()
    seen = []
    d.step(sync_grads=lambda params: seen.append([p is q and p.grad is not None
                                                  for p, q in zip(params, d.parameters(), strict=True)]))
    assert seen == [[True] * len(TASKS)]
