"""The layering of the package, checked by import-linter (contracts in pyproject.toml): errors / registry ->
metrics, tasks -> models, data -> balancing, strategies, transforms -> engine -> cli; no cycles."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]

importlinter = pytest.importorskip("importlinter")


def test_contracts_name_the_layers_in_order():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in conf["contracts"] if c["type"] == "layers")["layers"]
    flat = [name.strip() for layer in layers for name in layer.split("|")]
    order = ["mtlkit.cli", "mtlkit.engine", "mtlkit.strategies", "mtlkit.balancing", "mtlkit.models",
             "mtlkit.tasks", "mtlkit.metrics", "mtlkit._registry", "mtlkit.errors"]
    assert [n for n in flat if n in order] == order
    assert "mtlkit.dtme" in flat and "mtlkit.data" in flat


def test_no_layer_imports_a_higher_one_and_no_cycles():
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert code == 0, "import-linter contracts broken: run `lint-imports` for the offending imports"
