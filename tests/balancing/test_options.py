"""``--method-opt`` parsing, option checking and the ``mtlkit methods`` table."""

from __future__ import annotations

import pytest

from mtlkit import balancing
from mtlkit.errors import MtlkitError, UnknownNameError


def test_parse_method_options_yaml_values_and_dotted_keys():
    opts = balancing.parse_method_options(["c=0.4", "on=features", "weights.edge=50", "weights.depth=2",
                                           "max_iters=null", "flag=true", "pref=[1, 2]"])
    assert opts == {"c": 0.4, "on": "features", "weights": {"edge": 50, "depth": 2}, "max_iters": None,
                    "flag": True, "pref": [1, 2]}
    assert balancing.parse_method_options(["weights={semseg: 1, edge: 50}"]) == {"weights": {"semseg": 1, "edge": 50}}
    with pytest.raises(MtlkitError, match="key=value"):
        balancing.parse_method_options(["c0.4"])


def test_options_reach_the_method_and_bad_ones_name_the_valid_ones():
    assert balancing.get("mgda", max_iters=7).max_iters == 7
    fixed = balancing.get("fixed", **balancing.parse_method_options(["weights.edge=50"]))
    assert fixed.fixed == {"edge": 50}
    with pytest.raises(MtlkitError, match="valid: c"):
        balancing.get("cagrad", cc=0.4)
    with pytest.raises(UnknownNameError, match="avgnorm"):
        balancing.get("avgnrom")
    with pytest.raises(MtlkitError, match="on must be"):
        balancing.get("pcgrad", on="tokens")


def test_methods_table_lists_every_method_with_kind_paper_and_options():
    table = balancing.methods_table()
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["name", "kind", "paper"]
    for n in balancing.BALANCERS.names():
        row = next(line for line in lines if line.startswith(n + " "))
        cls = balancing.BALANCERS.get(n)
        assert cls.kind in row and cls.paper in row
    assert "c=0.4" in next(line for line in lines if line.startswith("cagrad "))
    assert "strategy" in table  # update strategies are listed too
    notes = next(line for line in lines if line.startswith("selective:"))
    assert "lr_ts" in notes and "x4 on NYUD-v2" in notes and "x5 on PASCAL-Context" in notes
    assert "x1 on Taskonomy" in notes and "decay 1e-4 on Taskonomy" in notes
    assert "scale=mean" in table  # the scale convention is stated


def test_methods_on_the_representation_say_so():
    """What the trainer reads to refuse on=features with a backbone that forks per task (DTME / Recon)."""
    assert balancing.get("mgda_ub").needs_shared_representation
    assert balancing.get("graddrop").needs_shared_representation
    assert not balancing.get("mgda").needs_shared_representation
    assert not balancing.get("graddrop", on="params", variant="element").needs_shared_representation
    assert not balancing.get("equal").needs_shared_representation


def test_heads_and_scale_options_are_validated():
    with pytest.raises(MtlkitError, match="heads must be"):
        balancing.get("mgda", heads="scaled")
    with pytest.raises(MtlkitError, match="no option"):  # GradDrop has no weights to give the heads
        balancing.get("graddrop", heads="weights")
    with pytest.raises(MtlkitError, match="scale must be"):
        balancing.get("cagrad", scale="avg")
    with pytest.raises(MtlkitError, match="max_norm"):
        balancing.get("fairgrad", max_norm=-1)
    with pytest.raises(MtlkitError, match="init"):
        balancing.get("uw", init="zero")
    with pytest.raises(MtlkitError, match="window"):
        balancing.get("dwa", window=0)
    with pytest.raises(MtlkitError, match="solver"):
        balancing.get("mgda", solver="qp")
