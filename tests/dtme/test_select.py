import pytest

from mtlkit.dtme import expanded_layers, num_layers, select_layers
from mtlkit.errors import MtlkitError

# Range and null rankings that are not mirror images, so every selection gives other layers.
RANGE = [0.9, 0.8, 0.1, 0.2, 0.5, 0.3]  # most: 0, 1, 4, 5, 3, 2
NULL = [0.7, 0.1, 0.6, 0.2, 0.3, 0.95]  # most: 5, 0, 2, 4, 3, 1 (5 is the last layer: never a TE candidate)


@pytest.mark.parametrize(
    ("selection", "tm", "te"),
    [
        ("conflict", [0, 1, 4], [0, 2, 4]),  # TM: most range conflict; TE: most null conflict among 0..4
        ("reverse", [2, 3, 5], [1, 3, 4]),  # least conflict
        ("swap", [0, 2, 5], [0, 1, 4]),  # TM on the null ranking (all layers), TE on the range ranking (0..4)
    ],
)
def test_each_budget_on_a_made_up_table(selection, tm, te):
    assert select_layers(RANGE, NULL, rho=0.5, selection=selection, budget="each") == (tm, te)


@pytest.mark.parametrize(
    ("selection", "tm", "te"),
    [
        # rounds (TM0 .9, TE0 .7), (TM1 .8, TE2 .6): layers {0, 1, 2} fill n = 3; TM4 does not fit
        ("conflict", [0, 1], [0, 2]),
        # ascending: (TM2 .1, TE1 .1), (TM3 .2, TE3 .2); TM5 does not fit
        ("reverse", [2, 3], [1, 3]),
        # TM ranked by null, TE by range: (TM5 .95, TE0 .9), (TE1 .8 first, TM0 .7); TM2 does not fit
        ("swap", [0, 5], [0, 1]),
    ],
)
def test_total_budget_on_a_made_up_table(selection, tm, te):
    got = select_layers(RANGE, NULL, rho=0.5, selection=selection)
    assert got == (tm, te)
    assert len(expanded_layers(*got)) == num_layers(0.5, 6)


def test_reverse_and_swap_differ_from_each_other_and_from_conflict():
    for budget in ("total", "each"):
        picks = {s: select_layers(RANGE, NULL, rho=0.5, selection=s, budget=budget)
                 for s in ("conflict", "reverse", "swap")}
        assert len({(tuple(tm), tuple(te)) for tm, te in picks.values()}) == 3, budget


def test_total_budget_never_exceeds_round_rho_l():
    for rho in (0.1, 0.25, 0.5, 0.75, 1.0):
        for selection in ("conflict", "reverse", "swap", "random"):
            tm, te = select_layers(RANGE, NULL, rho=rho, selection=selection, seed=1)
            assert len(expanded_layers(tm, te)) <= num_layers(rho, 6)
    # the independent reading expands 4 of 6 layers at rho 0.5 here (TM 0, 1, 4; TE 0, 2, 4)
    assert len(expanded_layers(*select_layers(RANGE, NULL, rho=0.5, budget="each"))) == 4


def test_apply_modes():
    assert select_layers(RANGE, NULL, rho=0.5, apply="tm-only") == ([0, 1, 4], [])
    assert select_layers(RANGE, NULL, rho=0.5, apply="te-only") == ([], [0, 2, 4])
    # a layer may get both
    assert select_layers([0.9, 0.1], [0.9, 0.1], rho=0.5) == ([0], [0])


def test_the_last_layer_gets_te_only_when_allowed():
    null = [0.0, 0.0, 0.0, 1.0]
    assert select_layers([0.0] * 4, null, rho=0.25, apply="te-only") == ([], [0])
    assert select_layers([0.0] * 4, null, rho=0.25, apply="te-only", te_candidates=range(4)) == ([], [3])


def test_random_selection_is_seeded_and_sized():
    a = select_layers(RANGE, NULL, rho=0.5, selection="random", seed=3, budget="each")
    assert a == select_layers(RANGE, NULL, rho=0.5, selection="random", seed=3, budget="each")
    assert len(a[0]) == len(a[1]) == 3 and set(a[0]) <= set(range(6)) and set(a[1]) <= set(range(5))
    draws = {tuple(select_layers(RANGE, NULL, rho=0.5, selection="random", seed=s)[0]) for s in range(20)}
    assert len(draws) > 1
    for s in range(20):
        assert len(expanded_layers(*select_layers(RANGE, NULL, rho=0.5, selection="random", seed=s))) == 3


def test_ties_go_to_the_earlier_layer():
    assert select_layers([0.5, 0.5, 0.5, 0.1], [0.0] * 4, rho=0.5, budget="each") == ([0, 1], [0, 1])
    assert select_layers([0.5, 0.5, 0.5, 0.1], [0.0] * 4, rho=0.5) == ([0, 1], [0, 1])


def test_total_budget_compares_ranks_not_rates_across_spaces():
    # null rates all above the range rates still leave room for TM: the rounds alternate the two rankings
    range_rates = [0.30, 0.35, 0.40, 0.45, 0.44, 0.43]
    null_rates = [0.60, 0.61, 0.62, 0.58, 0.57, 0.70]
    # rounds (TE2 .62 first, TM3 .45), (TE1 .61, TM4 .44): TM4 would be a 4th layer
    assert select_layers(range_rates, null_rates, rho=0.5) == ([3], [1, 2])



@pytest.mark.parametrize(("rho", "depth", "n"), [(0.5, 12, 6), (0.25, 12, 3), (0.25, 6, 2), (0.5, 5, 3),
                                                 (0.01, 6, 1), (0.0, 6, 0), (1.0, 4, 4)])
def test_number_of_layers(rho, depth, n):
    assert num_layers(rho, depth) == n


def test_bad_options():
    with pytest.raises(MtlkitError, match="valid: conflict"):
        select_layers(RANGE, NULL, selection="best")
    with pytest.raises(MtlkitError, match="tm-only"):
        select_layers(RANGE, NULL, apply="neither")
    with pytest.raises(MtlkitError, match="rho"):
        select_layers(RANGE, NULL, rho=1.5)
    with pytest.raises(MtlkitError, match="valid: total, each"):
        select_layers(RANGE, NULL, budget="both")
