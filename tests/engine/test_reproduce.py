"""``mtlkit reproduce``: every recipe plans at --small scale into valid configs, a real tiny run of one recipe,
resume without retraining, sharding, skip reasons keyed on the config schema, and the table writer on a
constructed result set (published / measured numbers and Δm in the right cells)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit.engine import reproduce as rp
from mtlkit.engine.config import TrainConfig
from mtlkit.errors import MtlkitError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = rp.list_recipes(ROOT / "configs")


def test_list_finds_every_recipe() -> None:
    assert len(RECIPES) >= 30 and "dtme/tab7" in RECIPES and "imbalance/tab2" in RECIPES


@pytest.mark.parametrize("rid", sorted(RECIPES))
def test_every_recipe_plans_small_into_valid_configs(rid: str, tmp_path: Path, monkeypatch) -> None:
    from mtlkit import cli

    monkeypatch.setattr("mtlkit.models.check_model", lambda *a, **k: None)  # names only: no model build
    recipe = rp.load_recipe(rid, ROOT / "configs")
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0], root=ROOT / "configs")
    assert jobs, rid
    rows = {j.row for j in jobs}
    assert {r["id"] for r in recipe["rows"]} <= rows  # every printed row is a job (or a skipped one)
    for j in jobs:
        if j.skip:
            assert isinstance(j.skip, str) and j.skip
            continue
        assert j.config["dataset"].startswith("synthetic-"), (rid, j.row)
        cfg = TrainConfig.from_dict(j.config)
        cfg.validate()
        cli.check_names(cfg)  # method / strategy / dtme options resolve


def test_dry_run_cli_trains_nothing(tmp_path: Path, capsys) -> None:
    from mtlkit.cli import main

    out = tmp_path / "t7"
    assert main(["reproduce", "dtme/tab7", "--small", "--dry-run", "--out", str(out), "--recipes",
                 str(ROOT / "configs")]) == 0
    text = capsys.readouterr().out
    assert "todo single_task" in text and "| Recon [22] | 31.92 / - |" in text
    assert not (out / "rows").exists()
    assert main(["reproduce", "nope/tab0", "--recipes", str(ROOT / "configs")]) == 2
    assert main(["reproduce", "dtme/tab7", "--recipes", str(ROOT / "configs")]) == 2  # paper scale needs data


def test_paper_scale_config_follows_the_protocol(tmp_path: Path) -> None:
    recipe = rp.load_recipe("dtme/tab7", ROOT / "configs")
    jobs = rp.plan(recipe, tmp_path, data_root="/data/nyud", pretrained="/ckpt/vit.safetensors")
    j = next(j for j in jobs if j.row == "joint")
    c = j.config
    assert (c["dataset"], c["data_root"], c["iters"], c["batch_size"], c["lr"], c["weight_decay"]) == \
        ("nyud", "/data/nyud", 60000, 6, 2.0e-5, 1.0e-6)
    assert c["model"] == {"name": "vit_base_patch16_384.augreg_in21k_ft_in1k",
                          "pretrained": "/ckpt/vit.safetensors", "head": "conv"}
    assert c["eval_every"] == 1000 and c["image_size"] == [448, 576]  # the paper's H x W, no substitute
    assert not any("448x576" in n for n in j.notes)
    dt = next(j for j in jobs if j.row == "dtme").config["dtme"]
    assert dt["rho"] == 0.5 and dt["calib_batches"] == "all"
    assert [j.row for j in jobs][0] == "single_task"  # the baseline of dtme/tab1 runs first


def test_grid_weights_and_search_variants(tmp_path: Path) -> None:
    recipe = rp.load_recipe("imbalance/tab2", ROOT / "configs")
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0])
    grid = next(j for j in jobs if j.row == "resnet18.grid_search" and j.dataset == "nyud")
    assert grid.config["weights"] == {k: float(v) for k, v in recipe["protocol"]["grid_weights"]["nyud"].items()}
    gn = [j for j in jobs if j.row == "resnet18.gradnorm" and j.dataset == "nyud"]
    assert sorted(j.variant for j in gn) == ["alpha=0.5", "alpha=1.5"]  # small.search
    assert {j.config["method_options"]["alpha"] for j in gn} == {0.5, 1.5}


def test_skips_key_on_the_config_schema(tmp_path: Path, monkeypatch) -> None:
    recipe = rp.load_recipe("imbalance/tab2", ROOT / "configs")
    fields = rp._config_fields() - {"arch", "distill"}
    monkeypatch.setattr(rp, "_config_fields", lambda: fields)
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0])
    mtan = next(j for j in jobs if j.row == "mtan.uniform")
    url = next(j for j in jobs if j.row == "resnet18.url")
    assert "model.arch" in mtan.skip and "method.distill" in url.skip
    monkeypatch.setattr(rp, "_config_fields", lambda: fields | {"arch", "distill"})
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0])
    mtan = next(j for j in jobs if j.row == "mtan.uniform")
    url = next(j for j in jobs if j.row == "resnet18.url")
    assert mtan.skip is None and mtan.config["model"]["arch"] == "mtan"
    assert url.skip is None and url.config["distill"] == "url" and url.config["method"] == "equal"
    unsup = next(j for j in rp.plan(rp.load_recipe("selective/tab_d5", ROOT / "configs"), tmp_path, small=True)
                 if j.row == "heterogeneous")
    assert "not an mtlkit grouping" in unsup.skip


def test_shard_partitions_the_jobs(tmp_path: Path, monkeypatch) -> None:
    jobs = rp.plan(rp.load_recipe("dtme/tab7", ROOT / "configs"), tmp_path, small=True)
    parts = [rp.shard(jobs, f"{i}/3") for i in range(3)]
    assert sorted(j.key for p in parts for j in p) == sorted(j.key for j in jobs)
    assert not set(j.key for j in parts[0]) & set(j.key for j in parts[1])
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert [j.key for j in rp.shard(jobs, None)] == [j.key for j in parts[1]]
    with pytest.raises(MtlkitError, match="--shard"):
        rp.shard(jobs, "3/3")


def _tasks(semseg: float, depth: float, normals: float, edge: float) -> dict:
    return {"tasks": {"semseg": {"mIoU": semseg}, "depth": {"rmse": depth}, "normals": {"mean": normals},
                      "edge": {"odsF": edge}}}


def test_table_writer_puts_numbers_in_the_right_cells(tmp_path: Path) -> None:
    recipe = rp.load_recipe("dtme/tab7", ROOT / "configs")
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0, 1])
    results = {
        "single_task|nyud|0|": _tasks(40.0, 0.50, 20.0, 50.0),
        "single_task|nyud|1|": _tasks(40.0, 0.50, 20.0, 50.0),
        "joint|nyud|0|": _tasks(44.0, 0.55, 20.0, 50.0),  # Δm = (10 - 10 + 0 + 0) / 4 = 0
        "joint|nyud|1|": _tasks(42.0, 0.45, 22.0, 55.0),  # Δm = (5 + 10 - 10 + 10) / 4 = 3.75
        "dtme|nyud|0|": _tasks(30.0, 0.60, 20.0, 50.0),
    }
    measured = rp.measured_values(recipe, results)
    assert "single_task" not in measured  # a baseline of another recipe: used, not printed
    joint = measured["joint"]
    assert joint["values"][:4] == pytest.approx([43.0, 0.50, 21.0, 52.5])
    assert joint["std"][0] == pytest.approx(1.4142135, rel=1e-6) and joint["seeds"] == 2
    assert joint["values"][4] is None  # extra-parameter column: not measured
    table = rp.write_table(recipe, measured, tmp_path / "tab", jobs, small=True)
    md = (tmp_path / "tab" / "table.md").read_text()
    assert "| Joint | 34.13 / 43.00 (+8.87) | 0.673 / 0.50 (-0.17) | 22.51 / 21.00 (-1.51) |" in md
    assert "| Recon [22] | 31.92 / - |" in md and "not run yet" in md
    assert table["rows"][2]["ours"][0] == 30.0
    rows = (tmp_path / "tab" / "table.csv").read_text().splitlines()
    assert "joint,Joint,nyud.semseg,mIoU,34.13,43.0,8.869999999999997,1.4142135623730951" in rows


def test_delta_m_columns_are_measured_against_the_baseline_row(tmp_path: Path) -> None:
    recipe = rp.load_recipe("dtme/tab1", ROOT / "configs")
    nyud = ["nyud.semseg", "nyud.depth", "nyud.normals", "nyud.edge"]
    d = next(x for x in recipe["delta_m"] if x["key"] == "nyud.delta_m")
    assert d["over"] == nyud
    results = {
        f"{d['baseline']}|nyud|0|": _tasks(40.0, 0.50, 20.0, 50.0),
        "multi_task|nyud|0|": _tasks(42.0, 0.45, 22.0, 55.0),
    }
    measured = rp.measured_values(recipe, results)
    keys = [m["key"] for m in recipe["metrics"]]
    assert measured["multi_task"]["values"][keys.index("nyud.delta_m")] == pytest.approx(3.75)


def test_small_run_resumes_without_retraining(tmp_path: Path, monkeypatch) -> None:
    """imbalance/tab6 at a toy size: single-task baselines + Grid Search + AvgNorm on the shared micro ViT and on
    MTAN (a random-init ResNet-18 stands in at --small); a rerun trains nothing."""
    recipe = rp.load_recipe("imbalance/tab6", ROOT / "configs")
    jobs = rp.plan(recipe, tmp_path, small=True, seeds=[0], iters=2)
    for j in jobs:
        if not j.skip:
            j.config.update(image_size=32, batch_size=4, dataset_options={"num_train": 8, "num_val": 4,
                                                                          "num_test": 4})
            j.config["model"] = {**j.config["model"], "pretrained": None, "head": "linear"}
    status = rp.run(jobs, progress=False)
    mtan = [j for j in jobs if j.row.startswith("mtan.")]
    assert len(mtan) == 2 and all(j.config["model"]["name"] == rp.SMALL_CNN and j.config["model"]["arch"] == "mtan"
                                  for j in mtan)
    assert sorted(status.values()) == ["trained"] * 5, status
    assert not [j.row for j in jobs if j.skip]
    measured = rp.measured_values(recipe, rp.collect(jobs))
    avg = measured["resnet18.avgnorm"]["values"]
    keys = [m["key"] for m in recipe["metrics"]]
    assert all(avg[keys.index(k)] is not None for k in ("nyud.semseg", "nyud.depth", "nyud.delta_m"))
    mtan_avg = measured["mtan.avgnorm"]["values"]
    assert mtan_avg[keys.index("nyud.delta_m")] is not None
    stamp = {j.key: (j.out / "metrics.json").stat().st_mtime_ns for j in jobs if not j.skip}
    # a killed run: one row lost its metrics.json -> only that row trains again
    lost = next(j for j in jobs if j.row == "resnet18.avgnorm")
    (lost.out / "metrics.json").unlink()
    status = rp.run(jobs, progress=False)
    assert status[lost.key] == "trained"
    assert [v for k, v in status.items() if k != lost.key] == ["done (kept)"] * 4
    for j in jobs:
        if not j.skip and j.key != lost.key:
            assert (j.out / "metrics.json").stat().st_mtime_ns == stamp[j.key]
    table = rp.write_table(recipe, rp.measured_values(recipe, rp.collect(jobs)), tmp_path, jobs, small=True)
    assert json.loads((tmp_path / "table.json").read_text())["rows"][0]["status"] == "1 seed(s)"
    assert "skipped" not in table["markdown"]
    assert f"{rp.SMALL_CNN} from random init stands in" in table["markdown"]
    # a row that fails (no metrics.json, an error.txt) is reported in the status column, the others go on
    failing = next(j for j in jobs if j.row == "mtan.avgnorm")
    (failing.out / "metrics.json").unlink()
    (failing.out / "error.txt").write_text("--arch mtan needs a CNN backbone\n")
    table = rp.write_table(recipe, rp.measured_values(recipe, rp.collect(jobs)), tmp_path, jobs, small=True)
    assert "| failed: --arch mtan needs a CNN backbone |" in table["markdown"]


def test_iters_override_keeps_the_expansion_share(tmp_path: Path) -> None:
    recipe = rp.load_recipe("dtme/tab7", ROOT / "configs")
    jobs = {j.row: j for j in rp.plan(recipe, tmp_path, small=True, seeds=[0], iters=30)}
    assert jobs["dtme"].config["dtme"]["iteration"] == 3  # small: 30 of 300 iterations
    assert jobs["dtme"].config["iters"] == 30
    short = {j.row: j for j in rp.plan(recipe, tmp_path, small=True, seeds=[0], iters=2)}
    assert short["dtme"].config["dtme"]["iteration"] == 1


def test_selective_multiscale_head_is_the_linear_head_on_four_block_features(tmp_path: Path) -> None:
    """The selective code's head (blocks 3/6/9 + normed last, concatenated, 1x1 conv) is mtlkit's ``linear`` head
    on a ViT's default features: no substitute, no note."""
    from mtlkit.models.backbones import vit_out_indices

    recipe = rp.load_recipe("selective/tab3", ROOT / "configs")
    jobs = [j for j in rp.plan(recipe, tmp_path, small=True, seeds=[0]) if not j.skip]
    assert jobs and all(j.config["model"]["head"] == "linear" for j in jobs)
    assert not any("multiscale" in n for j in jobs for n in j.notes)
    assert vit_out_indices(12) == (2, 5, 8, 11)  # select_list [3, 6, 9] (1-based) + the last block
