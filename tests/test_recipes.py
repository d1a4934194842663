"""The paper recipes in configs/ stay valid (benchmarks/check_recipes.py), and the validator catches bad ones."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_recipes", ROOT / "benchmarks" / "check_recipes.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

RECIPES = check.load_all(ROOT)


def test_every_recipe_is_valid():
    assert len(RECIPES) >= 30
    errors = [e for rid, r in RECIPES.items() for e in check.validate(rid, r)]
    assert errors == []


def test_main_exits_zero_without_paper_texts(tmp_path, capsys):
    assert check.main(["--papers", str(tmp_path)]) == 0
    assert "published numbers" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["rows"][1].update(method="adamw"), "unknown method"),
        (lambda r: r["rows"][1]["values"].pop(), "one entry per metric"),
        (lambda r: r["rows"][1]["values"].__setitem__(0, None), "without a null_reason"),
        (lambda r: r["rows"][1].update(setting="nope"), "not in settings"),
        (lambda r: r["delta_m"][0].update(baseline="nope"), "baseline row"),
        (lambda r: r.pop("cite"), "cite"),
        (lambda r: r["rows"][4]["options"].update(alfa=1.5), "unknown option"),
    ],
)
def test_validator_rejects(mutate, message):
    bad = copy.deepcopy(RECIPES["imbalance/tab2"])
    mutate(bad)
    errors = check.validate("imbalance/tab2", bad)
    assert any(message in e for e in errors), errors


def test_delta_m_recomputation_flags_a_wrong_number():
    r = copy.deepcopy(RECIPES["selective/tab3"])
    ok, bad = check.check_delta_m(RECIPES, "selective/tab3", r)
    assert ok > 0 and bad == []
    gd = next(row for row in r["rows"] if row["id"] == "gd")
    gd["values"][4] = -5.0  # printed -6.54; recomputed from the row's numbers
    _, bad = check.check_delta_m(RECIPES, "selective/tab3", r)
    assert len(bad) == 1 and "gd" in bad[0]
