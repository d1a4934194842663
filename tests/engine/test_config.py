"""The nested run config: sections, flat keys, YAML files, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mtlkit.engine import Config
from mtlkit.errors import MtlkitError

ROOT = Path(__file__).resolve().parents[2]


def test_sections_and_flat_keys_are_one_config():
    a = Config(data={"name": "tiny-random", "image_size": 16}, optim={"lr": 1e-4}, run={"iters": 7},
               method={"name": "avgnorm", "options": {"params": "all"}}, transforms={"dtme": {"rho": 0.25}})
    b = Config(dataset="tiny-random", image_size=16, lr=1e-4, iters=7, method="avgnorm",
               method_options={"params": "all"}, dtme={"rho": 0.25})
    assert a == b
    assert a.data.name == "tiny-random" and a.optim.lr == 1e-4 and a.iters == 7 and a.get("method") == "avgnorm"
    assert a.transforms == {"dtme": {"rho": 0.25}} and a.dtme == {"rho": 0.25} and a.recon is None
    c = a.replace(dtme=None, recon={}, lr=2e-4)
    assert c.transforms == {"recon": {}} and c.optim.lr == 2e-4 and a.optim.lr == 1e-4


def test_yaml_round_trip_and_flags_win(tmp_path):
    cfg = Config(dataset="tiny-random", iters=9, strategy="selective", strategy_options={"warmup": 3})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert set(yaml.safe_load(p.read_text())) == {"data", "model", "method", "strategy", "transforms", "optim", "run"}
    again = Config.from_yaml(p, {"iters": 11})
    assert again.iters == 11 and again.strategy.options == {"warmup": 3} and again.data.name == "tiny-random"


@pytest.mark.parametrize("values, needle", [
    ({"itres": 3}, "unknown config key(s) itres"),
    ({"optim": {"learning_rate": 1}}, "unknown key(s) learning_rate in config section 'optim'"),
    ({"iters": 0}, "iters=0: must be a positive integer"),
    ({"run": {"iters": "many"}}, "iters='many'"),
    ({"optim": {"name": "lamb"}}, "optimizer='lamb'"),
    ({"transforms": {"dtme": 3}}, "transforms.dtme: options must be a mapping"),
    ({"data": [1]}, "section 'data' must be a mapping"),
])
def test_bad_config_is_one_line_naming_the_key(values, needle):
    with pytest.raises(MtlkitError) as e:
        Config.from_dict(values)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_configs_the_readme_names_exist_and_load():
    readme = (ROOT / "README.md").read_text()
    named = sorted(set(re.findall(r"configs/[\w.-]+\.ya?ml", readme)))
    assert named, "the README names no config file"
    for rel in named:
        cfg = Config.from_yaml(ROOT / rel)
        assert cfg.iters > 0 and cfg.data.name
