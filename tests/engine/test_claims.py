"""The claims suite: the verdict rule on constructed numbers, the claims' measures on constructed results, and
one claim end to end at the tiny scale."""

from __future__ import annotations

import json
import math

import pytest

from mtlkit.engine import claims as C
from mtlkit.errors import MtlkitError


def test_verdict_directional_uses_twice_the_pooled_std():
    a, b = [3.0, 3.2, 2.8], [1.0, 1.2, 0.8]  # both std 0.2, pooled 0.2: diff 2.0 > 0.4
    assert C.pooled_std(a, b) == pytest.approx(0.2)
    assert C.verdict(a, b) == "holds"
    assert C.verdict(b, a) == "reversed"
    assert C.verdict(a, b, sign=-1) == "reversed"
    assert C.verdict(b, a, sign=-1) == "holds"
    # diff 0.3 < 2 x 0.2: not resolved, whatever the direction
    assert C.verdict([1.3, 1.5, 1.1], b) == "not resolved at this scale"
    # just above and just below the margin
    assert C.verdict([x + 0.41 for x in b], b) == "holds"
    assert C.verdict([x + 0.39 for x in b], b) == "not resolved at this scale"


def test_verdict_equivalence_and_missing_values():
    b = [1.0, 1.2, 0.8]
    assert C.verdict([1.5, 1.7, 1.3], b, tolerance=1.0) == "holds"  # |0.5| <= max(0.4, 1.0)
    assert C.verdict([2.5, 2.7, 2.3], b, tolerance=1.0) == "does not hold"
    assert C.verdict([], b) == "not resolved at this scale"
    assert C.verdict([float("nan")], b) == "not resolved at this scale"
    # one seed has no spread: never a verdict, however large the difference
    assert C.verdict([100.0], [0.0]) == "not resolved at this scale"
    assert C.verdict([100.0], b) == "not resolved at this scale"
    assert C.verdict([1.0], [1.0], tolerance=1.0) == "not resolved at this scale"
    with pytest.raises(MtlkitError, match="sign"):
        C.verdict(b, b, sign=0)


def _results(primary_by_run: dict[str, dict[str, float]], **extra) -> dict:
    base = {"test": {"semseg": 40.0, "depth": 0.5}}
    r = {"_baseline": base}
    for name, primary in primary_by_run.items():
        r[name] = {"primary": primary, **extra.get(name, {})}
    return r


def test_measures_on_constructed_results():
    r = _results({"equal": {"semseg": 44.0, "depth": 0.6},  # M = +10%, -20%
                  "grid-a": {"semseg": 44.0, "depth": 0.5}, "grid-b": {"semseg": 40.0, "depth": 0.5},
                  "grid-c": {"semseg": 36.0, "depth": 0.5}, "grid-d": {"semseg": 40.0, "depth": 0.45},
                  "avgnorm": {"semseg": 42.0, "depth": 0.5}},
                 **{"grid-a": {"val_delta_m": 5.0}, "grid-b": {"val_delta_m": 0.0}, "grid-c": {"val_delta_m": -5.0},
                    "grid-d": {"val_delta_m": 1.0}})
    by_id = {c.id: c for c in C.CLAIMS}
    assert by_id["uniform-loses"].measure(r) == pytest.approx((-20.0, 0.0))
    assert C.dm(r, "equal") == pytest.approx(-5.0)
    assert C.grid_best(r) == "grid-a"  # chosen on validation Δm, not on the test numbers
    assert by_id["grid-recovers"].measure(r) == pytest.approx((5.0, -5.0))
    assert by_id["avgnorm-grid"].measure(r) == pytest.approx((2.5, 5.0))
    r["equal-quarter"] = {"primary": {"semseg": 36.0, "depth": 0.65}}  # M = -10%, -30%
    assert C.gain_spread(r, "equal") == pytest.approx(30.0)  # +10 - (-20)
    assert by_id["less-data-imbalanced"].measure(r) == pytest.approx((20.0, 30.0))


def test_gradient_norm_spread_and_rank_measures():
    norms = [{"a": 1.0, "b": 1.0}] * 3 + [{"a": 1.0, "b": math.e}] * 3
    m = {"_grad_norms": norms}
    assert C._norm_spread(m, last=False) == pytest.approx(0.0)
    assert C._norm_spread(m, last=True) == pytest.approx(1.0)
    r = {"avgnorm": {"method_report": {"average_weights": {"a": 0.5, "b": 2.0, "c": 1.0}}},
         "grid-a": {"val_delta_m": 1.0, "_weights": {"a": 1.0, "b": 2.0, "c": 1.5}}}
    assert C._spearman(*C._weights(r)) == pytest.approx(1.0)


def test_every_run_of_every_claim_builds_a_valid_config():
    from mtlkit.engine.config import Config

    for scale in C.SCALES.values():
        tasks = scale.base["tasks"]
        for name in C.needed_runs(C.CLAIMS):
            Config.from_dict({**scale.base, **C.run_overrides(name, tasks, scale)})
    with pytest.raises(MtlkitError, match="unknown claims run"):
        C.run_overrides("nope", ["semseg"], C.SCALES["tiny"])


def test_one_claim_end_to_end_at_the_tiny_scale(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setitem(C.SCALES, "tiny", dataclasses.replace(C.SCALES["tiny"], seeds=(0,)))
    report = C.run_claims(tmp_path, "tiny", ["uniform-loses"], log=lambda s: None)
    (row,) = report["claims"]
    assert row["id"] == "uniform-loses" and len(row["a"]) == 1 and row["errors"] == []
    assert row["verdict"] in C.VERDICTS
    assert json.loads((tmp_path / "claims.json").read_text())["claims"][0]["verdict"] == row["verdict"]
    assert "uniform MTL loses" in (tmp_path / "claims.md").read_text()
    with pytest.raises(MtlkitError, match="unknown claim"):
        C.run_claims(tmp_path, "tiny", ["nope"])
    with pytest.raises(MtlkitError, match="seeds"):
        C.run_claims(tmp_path, "tiny", ["uniform-loses"], seeds=[7])


def test_report_only_tabulates_what_exists_without_training(tmp_path):
    report = C.run_claims(tmp_path, "tiny", ["grid-recovers"], log=lambda s: None, train=False)
    (row,) = report["claims"]
    assert row["a"] == [] and row["verdict"] == "not resolved at this scale"
    assert not (tmp_path / "runs").exists()


def test_cli_seeds_subset_is_checked_against_the_scale(tmp_path, capsys):
    from mtlkit.cli import main

    assert main(["bench", "--suite", "claims", "--scale", "tiny", "--seeds", "9", "--report-only",
                 "--out", str(tmp_path)]) == 2
    assert "not in the 'tiny' scale's seeds" in capsys.readouterr().err
    assert main(["bench", "--suite", "claims", "--scale", "tiny", "--seeds", "1", "--report-only",
                 "--claims", "grid-recovers", "--out", str(tmp_path)]) == 0
