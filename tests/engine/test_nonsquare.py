"""Non-square inputs (NYUD-v2 trains at 448x576): ``image_size: [H, W]`` through config, data, model, DTME,
checkpoint reload, the CLI's ``HxW`` and the recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.engine import Trainer, load_model
from mtlkit.engine import reproduce as rp
from mtlkit.engine.config import Config
from mtlkit.errors import MtlkitError

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, **kw) -> Config:
    return Config(dataset="synthetic-nyud", image_size=[32, 48], model="micro", iters=3, batch_size=2,
                  eval_every=0, out=str(tmp_path / "run"), progress=False, tasks=["semseg", "depth"],
                  dataset_options={"num_train": 4, "num_val": 2, "num_test": 2}, **kw)


def test_training_and_reload_keep_height_and_width(tmp_path):
    cfg = _cfg(tmp_path, dtme={"iteration": 1, "calib_batches": 1, "measure_inference": False})
    trainer = Trainer.from_config(cfg)
    trainer.fit()
    x = torch.randn(1, 3, 32, 48)
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(x)
    assert out["semseg"].shape[-2:] == (32, 48) and out["depth"].shape[-2:] == (32, 48)
    model, _ = load_model(cfg.out)
    model.eval()
    with torch.no_grad():
        again = model(x)
    assert torch.allclose(again["semseg"], out["semseg"], atol=1e-5)


def test_config_and_cli_forms():
    from mtlkit.cli import _image_size

    assert _image_size("448x576") == [448, 576] and _image_size("64") == 64
    Config(image_size=[448, 576]).validate()
    for bad in ([448], [0, 4], "big", [4.5, 4]):
        with pytest.raises(MtlkitError, match="image_size"):
            Config.from_dict({"image_size": bad}).validate()


def test_recipes_pass_the_papers_height_and_width(tmp_path):
    recipe = rp.load_recipe("imbalance/tab6", ROOT / "configs")
    jobs = [j for j in rp.plan(recipe, tmp_path, data_root=str(tmp_path)) if not j.skip]
    assert jobs and all(j.config["image_size"] == [448, 576] for j in jobs)
    assert not any("square" in n for j in jobs for n in j.notes)
