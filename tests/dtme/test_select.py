import pytest

from mtlkit.dtme import num_layers, select_layers
from mtlkit.errors import MtlkitError

RANGE = [0.1, 0.5, 0.3, 0.9, 0.2, 0.4]  # ranked: 3, 1, 5, 2, 4, 0
NULL = [0.6, 0.1, 0.8, 0.3, 0.7, 0.2]  # ranked: 2, 4, 0, 3, 5, 1


@pytest.mark.parametrize(
    ("selection", "tm", "te"),
    [
        ("conflict", [1, 3, 5], [0, 2, 4]),  # TM: most range conflict, TE: most null conflict
        ("reverse", [0, 2, 4], [1, 3, 5]),  # least conflict
        ("swap", [0, 2, 4], [1, 3, 5]),  # TM on the null ranking, TE on the range ranking
    ],
)
def test_selection_modes_on_a_made_up_table(selection, tm, te):
    assert select_layers(RANGE, NULL, rho=0.5, selection=selection) == (tm, te)


def test_apply_modes():
    assert select_layers(RANGE, NULL, rho=0.5, apply="tm-only") == ([1, 3, 5], [])
    assert select_layers(RANGE, NULL, rho=0.5, apply="te-only") == ([], [0, 2, 4])
    # a layer may get both
    assert select_layers([0.9, 0.1], [0.9, 0.1], rho=0.5) == ([0], [0])


def test_random_selection_is_seeded_and_sized():
    a = select_layers(RANGE, NULL, rho=0.5, selection="random", seed=3)
    assert a == select_layers(RANGE, NULL, rho=0.5, selection="random", seed=3)
    assert len(a[0]) == len(a[1]) == 3 and set(a[0] + a[1]) <= set(range(6))
    draws = {tuple(select_layers(RANGE, NULL, rho=0.5, selection="random", seed=s)[0]) for s in range(20)}
    assert len(draws) > 1


def test_ties_go_to_the_earlier_layer():
    assert select_layers([0.5, 0.5, 0.5, 0.1], [0.0] * 4, rho=0.5) == ([0, 1], [0, 1])


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
