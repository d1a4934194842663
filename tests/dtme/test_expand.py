"""DTME and Recon inside the Trainer (on the ``tiny-random`` dataset of tests/conftest.py): expansion mid-run,
optimizer / schedule, metrics, checkpoints, CLI."""

import json

import pytest
import torch

from mtlkit.cli import main as cli_main
from mtlkit.dtme import (
    DTMECallback,
    DTMEConfig,
    ExpandedBackbone,
    ReconConfig,
    TokenSpaceAnalysis,
    calibration_batches_for,
    expand,
    forward_flops,
    make_callbacks,
)
from mtlkit.engine import TrainConfig, Trainer
from mtlkit.engine.checkpoint import load_model
from mtlkit.errors import MtlkitError

from .helpers import tiny_model


def config(tmp_path, **kw):
    base = dict(dataset="tiny-random", tasks=["semseg", "depth"], image_size=16, model="micro", iters=4,
                batch_size=4, eval_every=0, eval_batch_size=8, out=str(tmp_path / "run"),
                baseline_cache=str(tmp_path / "cache"), progress=False)
    return TrainConfig.from_dict({**base, **kw})


def test_dtme_expands_once_mid_run_and_reloads(tmp_path, capsys):
    cfg = config(tmp_path, dtme={"iteration": 2, "calib_batches": 2, "tokens": 2, "final_analysis": True})
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    model = trainer.model
    assert isinstance(model.backbone, ExpandedBackbone)
    d = metrics["dtme"]
    assert d["expanded"] and d["iteration"] == 2
    tm, te = d["tm_layers"], d["te_layers"]
    assert d["expanded_layers"] == sorted(set(tm) | set(te)) and len(d["expanded_layers"]) == 3  # rho 0.5 of 6
    assert d["expanded_ratio"] == 0.5 and d["depth"] == 6 and 5 not in te
    assert d["params_added"] == 2 * 128 * (2 * len(tm) + 2 * len(te))  # 2 tasks x D x (TM: 2, TE: m per layer)
    assert d["param_overhead_pct"] == pytest.approx(100 * d["params_added"] / trainer.initial_params)
    assert d["token_space"]["k"] == [layer.k for layer in TokenSpaceAnalysis.load(tmp_path / "run" /
                                                                                   "token_space.json").layers]
    # inference cost: FLOP counts recomputed on the final and a fresh model; time ratio consistent
    x = torch.randn(4, 3, 16, 16)
    fresh = Trainer(config(tmp_path / "fresh")).model
    assert d["inference_flops_per_image_before"] == pytest.approx(forward_flops(fresh, x))
    assert d["inference_flops_per_image_after"] == pytest.approx(forward_flops(model, x))
    assert d["inference_flops_ratio"] == pytest.approx(
        d["inference_flops_per_image_after"] / d["inference_flops_per_image_before"])
    assert d["inference_flops_ratio"] > 1  # blocks after the fork run once per task
    assert d["inference_flops_overhead_per_task_pct"] == pytest.approx(100 * (d["inference_flops_ratio"] - 1) / 2)
    assert d["inference_ratio"] == pytest.approx(d["inference_s_per_image_after"] / d["inference_s_per_image_before"])
    # the calibration time split (paper Tab. 6) and the per-layer table were printed
    assert set(d["token_space"]["timings"]) == {"covariance_s", "eigen_s", "conflicts_s"}
    printed = capsys.readouterr().out
    assert "| layer | k / D |" in printed and f"TM layers {tm}, TE layers {te}" in printed
    assert "covariance" in printed and "eigendecomposition" in printed and "conflicts" in printed
    # the end-of-training analysis (paper Tab. 14)
    assert (tmp_path / "run" / "token_space_end.json").is_file()
    assert set(d["conflict_change"]["all"]) == {"layers", "range", "null"}
    assert cli_main(["analyze", str(tmp_path / "run"), "--only", "tokens"]) == 0
    assert (tmp_path / "run" / "plots" / "token_conflict_change.png").is_file()
    # the new parameters are in the optimizer and the LR schedule, and they trained
    group = trainer.optimizer.param_groups[-1]
    assert group["name"] == "dtme" and len(trainer.scheduler.base_lrs) == len(trainer.optimizer.param_groups)
    assert group["initial_lr"] == cfg.lr * cfg.lr_ts and group["lr"] == trainer.optimizer.param_groups[0]["lr"]
    w = model.backbone.modulators[str(d["tm_layers"][0])].weight["semseg"]
    assert not torch.equal(w, torch.ones_like(w))
    # written with the run: analysis JSON, metrics, rebuildable checkpoint
    run = tmp_path / "run"
    a = TokenSpaceAnalysis.load(run / "token_space.json")
    assert a.expansion["tm_layers"] == d["tm_layers"] and len(a.layers) == 6
    assert json.loads((run / "metrics.json").read_text())["dtme"]["tm_layers"] == d["tm_layers"]
    spec = json.loads((run / "model.json").read_text())
    assert [t["name"] for t in spec["transforms"]] == ["dtme"]
    loaded, _ = load_model(run)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    loaded.eval()
    for t in ("semseg", "depth"):
        assert torch.equal(loaded(x)[t], model(x)[t])
    # mtlkit eval works on it
    assert cli_main(["eval", str(run), "--batch-size", "8", "--device", "cpu"]) == 0


def test_frozen_backbone_only_trains_heads_and_token_modules(tmp_path):
    trainer = Trainer(config(tmp_path, dtme={"iteration": 1, "calib_batches": 2, "freeze": True}))
    trainer.callbacks[0].on_iteration_start(trainer, 1)
    base = {k: v.clone() for k, v in trainer.model.backbone.base.state_dict().items()}
    assert trainer.model.shared_parameters() == []
    trainer.iteration = 1
    trainer.fit()
    for k, v in trainer.model.backbone.base.state_dict().items():
        assert torch.equal(v, base[k]), k


def test_recon_converts_the_most_conflicting_block(tmp_path):
    trainer = Trainer(config(tmp_path, recon={"iteration": 1, "calib_batches": 2, "layers": 1}))
    metrics = trainer.fit()
    r = metrics["recon"]
    assert len(r["layers"]) == 1 and r["layers"][0] == max(range(6), key=lambda i: (r["conflict_rate"][i], -i))
    block = 12 * 128 * 128 + 13 * 128
    assert r["params_added"] == block  # two copies replace one shared block
    loaded, _ = load_model(tmp_path / "run")
    x = torch.randn(2, 3, 16, 16)
    trainer.model.eval()
    loaded.eval()
    assert torch.equal(loaded(x)["depth"], trainer.model(x)["depth"])
    assert (tmp_path / "run" / "recon_conflicts.json").is_file()


def test_cli_flags(tmp_path):
    out = tmp_path / "cli"
    rc = cli_main(["train", "--dataset", "tiny-random", "--tasks", "semseg,depth", "--image-size", "16",
                   "--iters", "3", "--batch-size", "4", "--eval-every", "0", "--out", str(out), "--no-progress",
                   "--dtme", "iteration=1,calib_batches=1", "--dtme-opt", "selection=reverse", "--dtme-opt",
                   "mode=te-only"])
    assert rc == 0
    d = json.loads((out / "metrics.json").read_text())["dtme"]
    assert d["tm_layers"] == [] and len(d["te_layers"]) == 3 and d["options"]["selection"] == "reverse"
    assert cli_main(["analyze", str(out), "--only", "tokens"]) == 0
    assert (out / "plots" / "token_conflicts.png").is_file()
    # bad options fail before training, naming the valid ones
    assert cli_main(["train", "--dataset", "tiny-random", "--out", str(tmp_path / "x"), "--dtme", "rh=1"]) == 2
    assert cli_main(["train", "--dataset", "tiny-random", "--out", str(tmp_path / "x"), "--dtme",
                     "--recon"]) == 2


def test_options_are_validated():
    with pytest.raises(MtlkitError, match="valid: iteration"):
        DTMEConfig.from_dict({"ratio": 3})
    with pytest.raises(MtlkitError, match="selection"):
        DTMEConfig.from_dict({"selection": "best"})
    with pytest.raises(MtlkitError, match="'all'"):
        DTMEConfig.from_dict({"calib_batches": 0})
    assert DTMEConfig.from_dict({"calib_batches": "all"}).calib_batches is None
    with pytest.raises(MtlkitError, match="not before the end"):
        DTMECallback({"iteration": 10}, iters=10)
    assert DTMECallback({}, iters=300).at == 30 and DTMECallback({}, iters=5000).at == 100
    with pytest.raises(MtlkitError, match="budget"):
        DTMEConfig.from_dict({"budget": "union"})
    with pytest.raises(MtlkitError, match="final_analysis"):
        DTMEConfig.from_dict({"final_analysis": "yes"})
    with pytest.raises(MtlkitError, match="not both"):
        ReconConfig.from_dict({"layers": 2, "share": 0.5})
    assert ReconConfig.from_dict({"share": 0.25}).num_layers(12) == 3


def test_calibration_set_defaults_to_the_papers_per_dataset():
    # App. B.3: the whole training set on NYUD-v2 and PASCAL-Context, 100 random mini-batches on Taskonomy
    assert calibration_batches_for("nyud") is None and calibration_batches_for("pascal-context") is None
    assert calibration_batches_for("taskonomy") == 100 and calibration_batches_for("synthetic-nyud") == 100
    assert DTMEConfig().calib_batches == "auto" and DTMEConfig().resolved_calib_batches() == 100

    class Cfg:
        dtme, recon, iters = {}, None, 1000

    for dataset, expected in (("nyud", None), ("pascal-context", None), ("taskonomy", 100)):
        Cfg.dataset = dataset
        assert make_callbacks(Cfg)[0].config.calib_batches == expected
    Cfg.dtme = {"calib_batches": 7}
    assert make_callbacks(Cfg)[0].config.calib_batches == 7  # an explicit number wins


def test_expand_in_a_custom_loop(tasks, batches):
    model = tiny_model(tasks)
    res = expand(model, tasks, batches, DTMEConfig(rho=0.25, budget="each", calib_batches=2, measure_inference=False))
    assert res.spec["tm_layers"] and res.spec["te_layers"]
    assert {id(p) for p in res.new_parameters} == {
        id(p) for t in tasks for p in model.backbone.task_specific_parameters(t)
    }
    assert "inference_ratio" not in res.report
    with pytest.raises(MtlkitError, match="already expanded"):
        expand(model, tasks, batches, DTMEConfig(calib_batches=1, measure_inference=False))
