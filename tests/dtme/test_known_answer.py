"""DTME on a constructed model whose per-layer range / null conflict rates are known by construction
(tests/dtme/helpers.py: layer l's tokens span the axis e_l, the readouts fix every token gradient)."""

import pytest
import torch

from mtlkit.dtme import DTMEConfig, analyze_token_space, conflict_change, expand

from .helpers import KNOWN_NULL_RATES, KNOWN_RANGE_RATES, constructed_model


def test_analysis_finds_the_constructed_rates_layer_by_layer():
    model, tasks, batches = constructed_model()
    a = analyze_token_space(model, tasks, batches, num_batches=None)
    assert [layer.k for layer in a.layers] == [1, 1, 1, 1]
    for layer in range(4):  # each layer's gradients on its own basis: any other basis gives other rates
        assert a.layers[layer].range_rate == pytest.approx(KNOWN_RANGE_RATES[layer], abs=1e-12), layer
        assert a.layers[layer].null_rate == pytest.approx(KNOWN_NULL_RATES[layer], abs=1e-12), layer
        assert a.layers[layer].range_pairs[0][1] == a.layers[layer].range_pairs[1][0]


@pytest.mark.parametrize(
    ("options", "tm", "te"),
    [
        # merged ranking: TM0 1, TE1 1 fill n = 2 layers; TM2 (2/3) does not fit
        ({}, [0], [1]),
        # TM: most range conflict (0, 2); TE: most null conflict among the layers with a next block (1, 2)
        ({"budget": "each"}, [0, 2], [1, 2]),
        # TM scored by null conflict, TE by range conflict: TE0 1, TM1 1
        ({"selection": "swap"}, [1], [0]),
        ({"selection": "reverse", "budget": "each"}, [1, 3], [0, 2]),
    ],
)
def test_expand_puts_tm_on_range_conflicts_and_te_on_null_conflicts(options, tm, te):
    model, tasks, batches = constructed_model()
    res = expand(model, tasks, batches, DTMEConfig(measure_inference=False, **options))
    assert (res.report["tm_layers"], res.report["te_layers"]) == (tm, te)
    assert res.report["expanded_layers"] == sorted(set(tm) | set(te))
    assert res.report["expanded_ratio"] == len(set(tm) | set(te)) / 4
    assert res.report["token_space"]["range_conflict_rate"] == pytest.approx(KNOWN_RANGE_RATES, abs=1e-6)
    assert sorted(model.backbone.modulators) == [str(i) for i in tm]
    assert sorted(model.backbone.expanders) == [str(i) for i in te]
    # the printed table: k / D, variance share, both rates and the marks of every layer
    rows = [line for line in res.summary.splitlines() if line.startswith("| ") and line[2].isdigit()]
    for layer, row in enumerate(rows):
        marks = f"| {'TM' if layer in tm else ''} | {'TE' if layer in te else ''} |"
        assert row == (f"| {layer} | 1 / 4 | 100.00% | {KNOWN_RANGE_RATES[layer]:.4f} | "
                       f"{KNOWN_NULL_RATES[layer]:.4f} {marks}")
    assert f"TM layers {tm}, TE layers {te}: {len(set(tm) | set(te))} of 4 layers expanded" in res.summary


def test_expanded_model_is_measured_on_each_tasks_own_stream():
    model, tasks, batches = constructed_model()
    start = analyze_token_space(model, tasks, batches)
    expand(model, tasks, batches, DTMEConfig(measure_inference=False, mode="tm-only", rho=0.25))
    assert list(model.backbone.modulators) == ["0"]
    same = analyze_token_space(model, tasks, batches)  # TM is the identity at init: nothing changes
    assert same.streams == ["a", "b"]
    assert same.range_rates() == start.range_rates() and same.null_rates() == start.null_rates()
    # task b's modulator flips the sign of its tokens at layer 0: its gradient w.r.t. X_0 flips (w ⊙ V),
    # so the range conflicts there vanish and the null parts now conflict; later layers (per stream,
    # task b read from its own stream) keep their rates
    with torch.no_grad():
        model.backbone.modulators["0"].weight["b"].fill_(-1.0)
    end = analyze_token_space(model, tasks, batches)
    assert end.range_rates() == pytest.approx([0.0, *KNOWN_RANGE_RATES[1:]], abs=1e-12)
    assert end.null_rates() == pytest.approx([1.0, *KNOWN_NULL_RATES[1:]], abs=1e-12)
    start.expansion = {"tm_layers": [0], "te_layers": []}
    change = conflict_change(start, end)
    assert change["tm_layers"]["range"] == {"start": 1.0, "end": 0.0, "reduction": 1.0}
    assert change["tm_layers"]["null"] == {"start": 0.0, "end": 1.0, "reduction": -1.0}
    assert change["all"]["range"]["reduction"] == pytest.approx(0.25)
    assert "te_layers" not in change


def test_rho_zero_expands_nothing_and_keeps_one_stream():
    """``rho=0`` is the without-DTME control of the paper's Tab. 14: the same analyses, no modules."""
    model, tasks, batches = constructed_model()
    res = expand(model, tasks, batches, DTMEConfig(rho=0.0, measure_inference=False))
    assert res.report["expanded_layers"] == [] and res.report["params_added"] == 0
    after = analyze_token_space(model, tasks, batches)
    assert after.streams is None and after.range_rates() == pytest.approx(KNOWN_RANGE_RATES, abs=1e-12)
