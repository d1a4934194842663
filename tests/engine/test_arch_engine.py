"""``--arch`` through the engine: each architecture trains a few steps under equal / avgnorm / pcgrad /
selective (and DTME on InvPT), one loss per task includes the auxiliary terms, a task's loss never moves
another task's parameters through the step, refusals, single-task twins and the Δm reference kinds."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mtlkit import balancing, strategies
from mtlkit.engine import Config, Trainer, load_model, train_single_task_baselines
from mtlkit.engine._protocol import check_model
from mtlkit.engine.baselines import baseline_dir, baseline_key, reference_config
from mtlkit.errors import MtlkitError
from mtlkit.models.arch import MTAN, InvPT, MTINet, TaskPrompter
from mtlkit.models.arch._build import build_arch_model
from tests.models.arch._support import NYUD, make_batch, make_tasks

SIZE = 32
#: tiny settings per architecture: (backbone name, backbone overrides, arch options)
TINY = {
    "mtan": ("convnext_atto", {}, {"head_channels": 16}),
    "mtinet": ("ghostnet_050", {}, {}),
    "invpt": ("micro", {"depth": 4}, {"embed_dim": 32, "pred_channels": 16, "official_unused": False}),
    "taskprompter": ("micro", {"depth": 4}, {"embed_dim": 32, "final_embed_dim": 32, "chan_nheads": 4}),
}
CLASSES = {"mtan": MTAN, "mtinet": MTINet, "invpt": InvPT, "taskprompter": TaskPrompter}


def build(arch: str, channels: dict[str, int] = NYUD):
    torch.manual_seed(0)
    name, over, opts = TINY[arch]
    tasks = make_tasks(channels)
    return build_arch_model(name, tasks, SIZE, arch=arch, arch_options=opts, **over), tasks


def ctx_for(model, tasks, method: str = "equal", lr: float = 2e-3, **options):
    bal = balancing.get(method, tasks=list(tasks), **options)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=0.0)
    return strategies.StepContext(model=model, tasks=tasks, balancer=bal, optimizer=opt,
                                  needs_features=bal.needs_features)


def total_loss(model, tasks, batch) -> float:
    torch.manual_seed(0)  # the same dropout masks (MTAN's ASPP heads) before and after the steps
    with torch.no_grad():
        return float(sum(model.task_losses(model(batch["image"]), batch, tasks).values()))


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize(("method", "strategy"), [("equal", "joint"), ("avgnorm", "joint"), ("pcgrad", "joint"),
                                                  ("equal", "selective")])
def test_a_few_steps_lower_the_loss(arch: str, method: str, strategy: str) -> None:
    model, tasks = build(arch)
    assert isinstance(model, CLASSES[arch])
    batch = make_batch(NYUD, size=SIZE)
    ctx = ctx_for(model, tasks, method)
    strat = strategies.get(strategy, **({"grouping": "random", "group_size": 2} if strategy == "selective" else {}))
    check_model(model, list(tasks), balancer=ctx.balancer, strategy=strat)
    before = total_loss(model, tasks, batch)
    for i in range(4):
        ctx.iteration = i
        info = strat.step(batch, ctx)
        assert set(info["losses"]) == set(NYUD) and all(math.isfinite(v) for v in info["losses"].values())
        assert info["skipped"] == 0
    assert total_loss(model, tasks, batch) < before


@pytest.mark.parametrize("arch", list(TINY))
def test_one_tasks_loss_moves_no_other_tasks_parameters(arch: str) -> None:
    """Through the engine's step: weights (1, 0, 0, 0) and Adam without decay change only the first task's
    own parameters (and shared ones), never another task's (zero gradients leave Adam's update at 0)."""
    model, tasks = build(arch)
    batch = make_batch(NYUD, size=SIZE)
    first = next(iter(NYUD))
    ctx = ctx_for(model, tasks, "fixed", weights={t: float(t == first) for t in NYUD})
    snap = {id(p): p.detach().clone() for p in model.parameters()}
    strategies.get("joint").step(batch, ctx)
    moved = {id(p) for p in model.parameters() if not torch.equal(p, snap[id(p)])}
    assert moved & {id(p) for p in model.task_parameters(first)}
    assert moved & {id(p) for p in model.shared_parameters()}
    for t in list(NYUD)[1:]:
        assert not moved & {id(p) for p in model.task_parameters(t)}, f"{first}'s loss moved {t}'s parameters"


@pytest.mark.parametrize(("arch", "aux"), [("mtinet", 4), ("invpt", 1), ("mtan", 0), ("taskprompter", 0)])
def test_the_engine_loss_is_main_plus_auxiliary_terms(arch: str, aux: int) -> None:
    model, tasks = build(arch)
    batch = make_batch(NYUD, size=SIZE)
    ctx = ctx_for(model, tasks)
    torch.manual_seed(1)  # the same dropout masks (MTAN's ASPP heads) in both forwards
    losses, _ = strategies.compute_losses(ctx, batch)
    torch.manual_seed(1)
    terms = model.loss_terms(model(batch["image"]), batch, tasks)
    for t in tasks:
        assert len(terms[t]) == 1 + aux
        value = float(losses[t].detach())
        assert value == pytest.approx(float(sum(terms[t].values()).detach()), rel=1e-5)
        if aux:
            assert value > float(terms[t]["main"].detach())  # the official sum: main + each aux term, weight 1


def test_methods_on_one_shared_feature_are_refused_where_the_cut_splits() -> None:
    for arch in TINY:
        model, tasks = build(arch, {"semseg": NYUD["semseg"], "depth": 1})
        for method in ("mgda_ub", "graddrop"):
            bal = balancing.get(method, tasks=list(tasks))
            if arch == "mtinet":
                check_model(model, list(tasks), balancer=bal)
            else:
                with pytest.raises(MtlkitError, match=f"method '{method}'.*on=params"):
                    check_model(model, list(tasks), balancer=bal)


def test_dtme_refused_on_cnn_encoders_and_recon_on_taskprompter() -> None:
    from mtlkit.dtme import DTMECallback, ReconCallback

    two = {"semseg": NYUD["semseg"], "depth": 1}
    for arch, cb, match in (("taskprompter", ReconCallback({}, iters=4), "recon is not supported on --arch "
                             "taskprompter"), ("mtan", DTMECallback({}, iters=4), "CNN encoder")):
        model, tasks = build(arch, two)
        with pytest.raises(MtlkitError, match=match):
            check_model(model, list(tasks), balancer=balancing.get("equal", tasks=list(tasks)), transforms=[cb])
    model, tasks = build("taskprompter", two)  # DTME runs on TaskPrompter's prompted blocks
    check_model(model, list(tasks), balancer=balancing.get("equal", tasks=list(tasks)),
                transforms=[DTMECallback({}, iters=4)])


def arch_config(tmp_path, arch: str, **kw) -> Config:
    name, over, opts = TINY[arch]
    opts = {**opts, **({"backbone": over} if over else {})}
    return Config(dataset="tiny-random", image_size=SIZE, model=name, arch=arch, arch_options=opts, iters=3,
                  batch_size=4, eval_every=0, eval_batch_size=8, out=str(tmp_path / "run"), progress=False,
                  baseline_cache=str(tmp_path / "baselines"), **kw)


def _assert_reloads_exactly(model, out, arch: str, cls) -> None:
    """The run directory rebuilds the architecture and its outputs are bit-identical (eval mode)."""
    reloaded, spec = load_model(out)
    assert spec["build"]["arch"] == arch and isinstance(reloaded, cls)
    x = torch.randn(2, 3, SIZE, SIZE)
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    for t in a:
        assert torch.equal(a[t], b[t])


def test_dtme_on_invpt_through_the_trainer_and_reload(tmp_path) -> None:
    cfg = arch_config(tmp_path, "invpt", method="pcgrad",
                      dtme={"iteration": 1, "calib_batches": 2, "measure_inference": False, "rho": 0.5})
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    assert metrics["dtme"]["expanded_layers"]
    model = trainer.model
    assert getattr(model.backbone, "is_expanded", False)
    dtme = {id(p) for t in model.tasks for p in model.backbone.task_specific_parameters(t)}
    assert dtme and dtme <= {id(p) for p in model.shared_parameters()}  # InvPT's joint decoder mixes the streams
    _assert_reloads_exactly(model, cfg.out, "invpt", InvPT)


def test_dtme_on_taskprompter_through_the_trainer_and_reload(tmp_path) -> None:
    """--arch taskprompter --dtme: calibrates on the prompted blocks, expands, trains (the loss drops), its
    per-task modules are task-specific (stream t reaches only task t's loss) and the run reloads exactly."""
    cfg = arch_config(tmp_path, "taskprompter", lr=2e-3,
                      dtme={"iteration": 1, "calib_batches": 2, "measure_inference": False, "rho": 0.5})
    trainer = Trainer(cfg)
    batch = next(iter(trainer._loader()))  # the first training batch: its loss drops over the steps
    before = total_loss(trainer.model, trainer.tasks, batch)
    metrics = trainer.fit()
    assert metrics["dtme"]["expanded_layers"]
    model = trainer.model
    assert isinstance(model, TaskPrompter) and model.backbone.fork_layer is not None
    for t in model.tasks:
        own = {id(p) for p in model.backbone.task_specific_parameters(t)}
        assert own and own <= {id(p) for p in model.task_parameters(t)}
    _assert_reloads_exactly(model, cfg.out, "taskprompter", TaskPrompter)
    model.train()  # last: a train-mode forward moves the BatchNorm statistics
    assert total_loss(model, trainer.tasks, batch) < before


def test_single_task_twins_and_the_two_reference_kinds(tmp_path) -> None:
    cfg = arch_config(tmp_path, "mtinet", tasks=["semseg", "depth"])
    plain = cfg.replace(arch="shared", arch_options={})
    assert baseline_key(cfg) != baseline_key(plain)  # twins and plain baselines never share a cache entry
    assert baseline_key(reference_config(cfg.replace(baseline_kind="plain"))) == baseline_key(plain)
    assert baseline_key(plain) == baseline_key(plain.replace(baseline_kind="plain"))
    path = train_single_task_baselines(cfg, ["semseg", "depth"])
    assert path == baseline_dir(cfg) / "baselines.json"
    runs = json.loads(path.read_text())["runs"]
    for t, run in runs.items():
        twin, spec = load_model(run)
        assert isinstance(twin, MTINet) and twin.tasks == [t]
        assert twin.self_distillation  # the imbalance study's MTI-Net single-task: self-distillation
        assert spec["build"]["arch"] == "mtinet"
    metrics = Trainer(cfg).fit()
    assert metrics["baseline"] == str(path) and metrics["delta_m"] is not None
    # --baseline-kind plain: the plain single-task networks are the reference (none trained yet here)
    assert Trainer(cfg.replace(baseline_kind="plain", out=str(tmp_path / "p"))).baseline is None


def test_cli_refuses_bad_arch_names_and_options(tmp_path, capsys) -> None:
    from mtlkit.cli import main

    base = ["train", "--dataset", "tiny-random", "--iters", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--arch", "resnet"]) == 2
    assert "unknown architecture 'resnet'" in capsys.readouterr().err
    assert main([*base, "--arch", "mtan", "--arch-opt", "heads=3"]) == 2
    assert "has no option(s) ['heads']" in capsys.readouterr().err
    assert main([*base, "--arch-opt", "embed_dim=3"]) == 2
    assert "needs an architecture" in capsys.readouterr().err
    assert main([*base, "--arch", "invpt", "--baseline-kind", "twin"]) == 2
    assert "baseline_kind" in capsys.readouterr().err


def test_url_and_feature_distance_are_refused_on_architectures(tmp_path) -> None:
    from tests.conftest import TinyRandom

    model, tasks = build("mtinet", {"semseg": 3, "depth": 1})
    data = TinyRandom("train", tasks=list(tasks), image_size=SIZE)
    for kw in ({"distill": "url"}, {"feature_distance": True}):
        with pytest.raises(MtlkitError, match="--arch mtinet hands the engine its balancing cut"):
            Trainer(model, tasks, data, iters=1, out=tmp_path / "r", device="cpu", **kw)


def test_dtme_calibration_measures_the_training_objective() -> None:
    """DTME's conflicts on InvPT come from the losses it trains on: main + intermediate supervision."""
    from mtlkit.dtme._calibrate import task_losses

    model, tasks = build("invpt")
    batch = make_batch(NYUD, size=SIZE)
    got = task_losses(model, tasks, batch)
    terms = model.loss_terms(model(batch["image"]), batch, tasks)
    for t in tasks:
        assert set(terms[t]) == {"main", "inter"}
        assert float(got[t].detach()) == pytest.approx(float((terms[t]["main"] + terms[t]["inter"]).detach()), rel=1e-5)


@pytest.mark.parametrize("arch", list(TINY))
def test_every_twin_trains(arch: str) -> None:
    """The single-task twin (what --single-task builds for one task) steps and lowers its loss."""
    model, tasks = build(arch, {"normals": 3})
    assert model.tasks == ["normals"] and isinstance(model, CLASSES[arch])
    if arch == "mtinet":
        assert model.self_distillation
    batch = make_batch({"normals": 3}, size=SIZE)
    ctx = ctx_for(model, tasks, "equal")
    before = total_loss(model, tasks, batch)
    for i in range(3):
        ctx.iteration = i
        strategies.get("joint").step(batch, ctx)
    assert total_loss(model, tasks, batch) < before
