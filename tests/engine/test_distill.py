"""``--distill url`` and ``--feature-distance`` in the Trainer (tiny synthetic runs, seconds)."""

import csv
import json
from pathlib import Path

import pytest
import torch

from mtlkit.engine import Trainer, load_model, train_teachers
from mtlkit.engine._state import load_resume
from mtlkit.errors import MtlkitError
from tests.faults.helpers import Stop, StopAt

TASKS = ["semseg", "depth"]


@pytest.fixture
def cfg(tiny_config):
    c = tiny_config.replace(tasks=TASKS, iters=4, eval_every=0)
    train_teachers(c.replace(distill="url"))  # the single-task teachers, cached once per test
    return c


def _bytes(model):
    return {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def _teacher_bytes(trainer):
    return {t: _bytes(m) for t, m in trainer.distill.teachers.items()}


@pytest.mark.parametrize(("method", "strategy"), [("equal", "joint"), ("avgnorm", "joint"), ("pcgrad", "joint"),
                                                  ("equal", "selective")])
def test_url_trains_with_every_method_and_strategy(cfg, method, strategy):
    c = cfg.replace(distill="url", method=method, strategy=strategy,
                    strategy_options={"warmup": 1} if strategy == "selective" else {})
    tr = Trainer(c)
    teachers_before = _teacher_bytes(tr)
    student_before = _bytes(tr.model)
    metrics = tr.fit()
    dist = tr.distill.distiller
    # teachers: frozen (same bytes, never a gradient), never in the student's checkpoint
    assert _teacher_bytes(tr) == teachers_before
    assert all(p.grad is None and not p.requires_grad for m in tr.distill.teachers.values() for p in m.parameters())
    saved = load_model(c.out)[0].state_dict()
    assert set(saved) == set(tr.model.state_dict())
    # student and adaptors moved; the adaptors' cosine schedule advanced once per iteration
    assert _bytes(tr.model) != student_before
    assert dist.scheduler.last_epoch == c.iters
    assert metrics["distill"]["weights"] == {"semseg": 1.0, "depth": 1.0}
    assert set(metrics["distill"]["distance"]) == set(TASKS)
    assert all(0 <= v <= 4 for v in metrics["distill"]["distance"].values())
    rows = list(csv.DictReader(open(Path(c.out) / "log.csv")))
    assert len(rows) == c.iters and {"distill/semseg", "distill/depth"} <= set(rows[0])
    state = load_resume(Path(c.out))
    assert set(state["distill"]["distiller"]["adaptors"]) == {k for k in dist.adaptors.state_dict()}


def test_adaptors_move_from_their_seeded_init(cfg):
    from mtlkit.distill import URLAdaptor

    tr = Trainer(cfg.replace(distill="url"))
    tr.fit()
    dist = tr.distill.distiller
    gen = torch.Generator().manual_seed(cfg.seed)  # the init the runtime drew (one generator, tasks in order)
    for t in TASKS:
        init = URLAdaptor(dist.adaptors[t].in_channels, dist.adaptors[t].out_channels, generator=gen)
        for a, b in zip(init.parameters(), dist.adaptors[t].parameters(), strict=True):
            assert a.shape == b.shape and not torch.equal(a, b)


def test_distillation_is_added_after_the_balancer(cfg):
    """With URL the student's gradient is the balancer's (PCGrad on the task losses alone) plus
    ∇ Σ_t λ_t D_t: the hook back-propagates the distillation first, the balancer accumulates on top."""
    from mtlkit.strategies._base import balanced_backward, compute_losses

    tr = Trainer(cfg.replace(distill="url", method="pcgrad"))
    batch = next(iter(tr._loader()))
    ctx = tr._context()
    params = [p for p in tr.model.parameters() if p.requires_grad]

    def grads():
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    def balancer_step(hook):
        tr.optimizer.zero_grad(set_to_none=True)
        losses, feats = compute_losses(ctx, batch)
        if hook:
            ctx.backward_hook(feats, batch, TASKS)
        distill_only = grads()
        torch.manual_seed(1)  # PCGrad's random task order
        info = balanced_backward(ctx, losses, feats)
        return distill_only, grads(), info

    distill, both, info_url = balancer_step(True)
    zero, alone, info_plain = balancer_step(False)
    assert all(z.abs().sum() == 0 for z in zero)
    assert any(d.abs().sum() > 0 for d in distill)
    for d, b, a in zip(distill, both, alone, strict=True):
        torch.testing.assert_close(b, a + d, atol=1e-6, rtol=1e-5)
    assert info_url["weights"] == info_plain["weights"]


@pytest.mark.parametrize(("method", "strategy"), [("equal", "joint"), ("pcgrad", "selective")])
def test_probe_leaves_the_trained_model_identical(cfg, tmp_path, method, strategy):
    opts = {"warmup": 1} if strategy == "selective" else {}
    cfg = cfg.replace(method=method, strategy=strategy, strategy_options=opts)
    plain = Trainer(cfg.replace(out=str(tmp_path / "plain")))
    plain.fit()
    probed = Trainer(cfg.replace(out=str(tmp_path / "probed"), feature_distance=True))
    metrics = probed.fit()
    assert _bytes(plain.model) == _bytes(probed.model)
    saved = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("plain", "probed")]
    assert saved[0] == saved[1]
    assert set(metrics["feature_distance"]) == set(TASKS)
    rows = list(csv.DictReader(open(tmp_path / "probed" / "log.csv")))
    assert {"feature_distance/semseg", "feature_distance/depth"} <= set(rows[0])
    assert "distill" not in metrics
    logged = [json.loads(line)["feature_distance"] for line in open(tmp_path / "probed" / "log.jsonl")]
    assert len(logged) == cfg.iters
    # the probe learns: its adaptors changed from their init
    assert probed.distill.probe.history[0][0] == 0


def test_resume_with_url_is_exact(cfg, tmp_path):
    full = cfg.replace(distill="url", feature_distance=True, eval_every=2, out=str(tmp_path / "full"))
    Trainer(full).fit()
    part = full.replace(out=str(tmp_path / "part"))
    t = Trainer(part)
    t.callbacks.append(StopAt(2))
    with pytest.raises(Stop):
        t.fit()
    resumed = Trainer(part)
    resumed.fit(resume=True)
    a = load_model(tmp_path / "full")[0].state_dict()
    b = load_model(tmp_path / "part")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_options_and_missing_teachers_are_user_errors(cfg, tmp_path):
    with pytest.raises(MtlkitError, match="no option"):
        Trainer(cfg.replace(distill="url", distill_options={"alpha": 1}))
    with pytest.raises(MtlkitError, match="must be url"):
        cfg.replace(distill="kd")
    with pytest.raises(MtlkitError, match="teachers"):
        Trainer(cfg.replace(distill="url", baseline_cache=str(tmp_path / "empty")))



def test_methods_lists_url_with_paper_and_options(capsys):
    from mtlkit.cli import main

    assert main(["methods"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("url "))
    assert "distillation" in row and "Li, Liu & Bilen" in row and "IJCV 2023" in row
    assert "weights=official" in row and "lr=0.01" in row and "weight_decay=0.0005" in row


def test_cli_trains_the_teachers_then_distils(tiny_config, tmp_path, monkeypatch):
    from mtlkit.cli import main

    monkeypatch.setenv("MTLKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code = main(["train", "--dataset", "tiny-random", "--image-size", "16", "--tasks", "semseg,depth", "--iters", "2",
                 "--batch-size", "4", "--eval-every", "0", "--distill", "url", "--distill-opt", "weights=equal",
                 "--distill-opt", "schedule=constant", "--feature-distance", "every=1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    base = json.loads(next((tmp_path / "cache" / "baselines").glob("*/baselines.json")).read_text())
    assert set(base["runs"]) == {"semseg", "depth"}  # the teachers were trained first (the Δm cache)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"]["weights"] == {"semseg": 1.0, "depth": 1.0} and metrics["delta_m"] is not None
    assert set(metrics["feature_distance"]) == {"semseg", "depth"}
    assert main(["train", "--dataset", "tiny-random", "--distill", "url", "--distill-opt", "alpha=1",
                 "--out", str(tmp_path / "bad")]) == 2


def test_url_under_fp16_scales_the_distillation_like_the_task_losses(cfg, tmp_path, monkeypatch):
    """Under fp16 the hook back-propagates S·Σ λ_t D_t (S: the GradScaler's scale, 2^16 here) and the
    adaptors step on the unscaled gradient: their first gradient matches the fp32 run's, not S times it."""
    from mtlkit.distill import URLDistiller

    seen: list[list[torch.Tensor]] = []
    step = URLDistiller.step

    def record(self, sync_grads=None):
        seen.append([p.grad.clone() for p in self.parameters()])
        return step(self, sync_grads)

    monkeypatch.setattr(URLDistiller, "step", record)
    firsts = {}
    for precision in ("fp32", "fp16"):
        seen.clear()
        tr = Trainer(cfg.replace(distill="url", precision=precision, out=str(tmp_path / precision)))
        tr.fit()
        firsts[precision] = seen[0]
    assert tr.precision.scaler.get_scale() >= 2.0**15
    for a, b in zip(firsts["fp32"], firsts["fp16"], strict=True):
        ratio = float(b.norm() / a.norm())
        assert 0.9 < ratio < 1.1


def test_users_own_model_with_its_single_task_teachers(tmp_path):
    """A user's SharedBottom MLP (vector features): teachers are single-task models of the same architecture,
    given as objects; without them (and without baseline runs of a built-in model) the error names the fix."""
    from tests.engine.tabular import TASKS as TAB
    from tests.engine.tabular import Rows, mlp

    torch.manual_seed(0)
    teachers = {t: mlp([t]) for t in TAB}
    before = {t: _bytes(m) for t, m in teachers.items()}
    model = mlp(TAB)
    tr = Trainer(model, TAB, Rows(64, 0), balancer="pcgrad", iters=3, batch_size=16, inputs="features",
                 out=tmp_path / "run", distill="url", teachers=teachers, feature_distance=True)
    metrics = tr.fit()
    assert {t: _bytes(m) for t, m in teachers.items()} == before
    assert set(metrics["distill"]["distance"]) == set(TAB) and set(metrics["feature_distance"]) == set(TAB)
    assert metrics["distill"]["weights"] == dict.fromkeys(TAB, 1.0)  # tasks URL's official λ does not name
    with pytest.raises(MtlkitError, match="teachers"):
        Trainer(mlp(TAB), TAB, Rows(64, 0), iters=3, inputs="features", out=tmp_path / "bad", distill="url")


def test_user_model_baseline_runs_cannot_be_rebuilt_as_teachers(tmp_path):
    from mtlkit.engine import Baselines
    from tests.engine.tabular import TASKS as TAB
    from tests.engine.tabular import Rows, mlp

    runs = {}
    for t in TAB:
        (tmp_path / t).mkdir()
        (tmp_path / t / "model.json").write_text(json.dumps({"class": "mtlkit.models.SharedBottom"}))
        (tmp_path / t / "model.safetensors").write_bytes(b"")
        runs[t] = str(tmp_path / t)
    base = Baselines("k", tmp_path / "baselines.json", test=dict.fromkeys(TAB, 1.0), runs=runs)
    with pytest.raises(MtlkitError, match="pass teachers="):
        Trainer(mlp(TAB), TAB, Rows(64, 0), iters=3, inputs="features", out=tmp_path / "r", distill="url",
                baseline=base)
