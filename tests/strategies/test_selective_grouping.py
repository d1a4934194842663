"""Groupings: AffinityPropagation on a constructed affinity, its failure policy, and the ablation groupings."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from mtlkit.errors import MtlkitError
from mtlkit.strategies import (
    _grouping,
    affinity_groups,
    joint_groups,
    normalized_affinity,
    order_groups,
    random_groups,
    separate_groups,
)

TASKS = ["semseg", "depth", "normals", "edge"]


def two_clusters(members: tuple[set[int], set[int]], scale: np.ndarray | None = None) -> np.ndarray:
    """Positive affinity inside each cluster, negative across; self affinity positive."""
    a = np.zeros((4, 4))
    for s in range(4):
        for t in range(4):
            same = any(s in m and t in m for m in members)
            a[s, t] = 2e-3 if s == t else (1.5e-3 if same else -1e-3)
    if scale is not None:  # columns scaled: the normalisation by A[t, t] must undo it
        a = a * scale[None, :]
    return a


def test_normalisation_divides_columns_by_self_affinity_then_symmetrises():
    a = np.array([[2.0, 1.0], [3.0, 4.0]])
    x = normalized_affinity(a)
    # X[s, t] = A[s, t] / A[t, t]: [[1, 0.25], [1.5, 1]] -> symmetrised
    np.testing.assert_allclose(x, [[1.0, 0.875], [0.875, 1.0]])


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        (({0, 1}, {2, 3}), [["semseg", "depth"], ["normals", "edge"]]),
        (({0, 2}, {1, 3}), [["semseg", "normals"], ["depth", "edge"]]),
        (({0, 3}, {1, 2}), [["semseg", "edge"], ["depth", "normals"]]),
    ],
)
def test_two_obvious_clusters_are_found(members, expected):
    assert affinity_groups(two_clusters(members), TASKS) == expected
    scaled = two_clusters(members, scale=np.array([1.0, 10.0, 0.1, 3.0]))
    assert affinity_groups(scaled, TASKS) == expected


def test_equal_cross_affinities_give_one_group_whatever_their_sign():
    # AffinityPropagation with the median preference clusters by relative similarity, not by sign: with all
    # cross affinities equal it returns one cluster (scikit-learn's equal-similarities rule), as in the
    # official code. Uneven cross affinities split the tasks.
    assert affinity_groups(np.full((4, 4), 1e-3), TASKS) == [TASKS]
    a = np.full((4, 4), -1e-3)
    np.fill_diagonal(a, 1e-3)
    assert affinity_groups(a, TASKS) == [TASKS]
    a[0, 1:] = a[1:, 0] = -5e-3  # semseg conflicts more with everyone
    assert affinity_groups(a, TASKS) == [["semseg"], ["depth", "normals", "edge"]]


def test_unnormalisable_matrix_gives_no_groups():
    a = two_clusters(({0, 1}, {2, 3}))
    a[2, 2] = 0.0  # a task never measured yet: the official code would divide by zero
    assert affinity_groups(a, TASKS) is None
    assert affinity_groups(np.zeros((4, 4)), TASKS) is None


class _NeverConverges:
    """Stands in for AffinityPropagation: records its settings, warns like a non-converged fit."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        type(self).calls.append(kwargs)

    def fit_predict(self, x):
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
        self.cluster_centers_indices_ = np.array([0])  # degenerate clusters must not be used
        return np.zeros(len(x), dtype=int)


def test_non_convergence_is_retried_with_more_iterations_then_gives_up(monkeypatch):
    import sklearn.cluster

    _NeverConverges.calls = []
    monkeypatch.setattr(sklearn.cluster, "AffinityPropagation", _NeverConverges)
    assert affinity_groups(two_clusters(({0, 1}, {2, 3})), TASKS) is None
    calls = _NeverConverges.calls
    assert len(calls) == 10
    assert [c["convergence_iter"] for c in calls] == [50 + 100 * k for k in range(10)]
    assert all(c["max_iter"] > c["convergence_iter"] for c in calls)
    assert all(c["affinity"] == "precomputed" and c["preference"] is None for c in calls)
    assert len({c["random_state"] for c in calls}) == 10  # deterministic, but a fresh draw per attempt


def test_ablation_groupings():
    assert joint_groups(TASKS) == [TASKS]
    assert separate_groups(TASKS) == [[t] for t in TASKS]
    for size, sizes in ((2, [2, 2]), (3, [3, 1]), (4, [4]), (9, [4])):
        groups = random_groups(TASKS, random.Random(0), size=size)
        assert sorted(len(g) for g in groups) == sorted(sizes)
        assert sorted(t for g in groups for t in g) == sorted(TASKS)
    for count in (1, 2, 3, 4):
        groups = random_groups(TASKS, random.Random(0), count=count)
        assert len(groups) == count and sorted(t for g in groups for t in g) == sorted(TASKS)
    draws = {tuple(map(tuple, random_groups(TASKS, random.Random(s), size=2))) for s in range(30)}
    assert len(draws) == 3  # all three pairings of four tasks occur
    assert random_groups(TASKS, random.Random(5), size=2) == random_groups(TASKS, random.Random(5), size=2)
    with pytest.raises(MtlkitError):
        random_groups(TASKS, random.Random(0))
    with pytest.raises(MtlkitError):
        random_groups(TASKS, random.Random(0), size=0)


def test_group_order():
    groups = [["semseg", "edge"], ["depth"], ["normals"]]
    assert order_groups(groups, "forward", random.Random(0)) == groups
    assert order_groups(groups, "backward", random.Random(0)) == groups[::-1]
    seen = {tuple(map(tuple, order_groups(groups, "random", random.Random(s)))) for s in range(40)}
    assert len(seen) == 6  # every permutation of three groups
    assert groups == [["semseg", "edge"], ["depth"], ["normals"]]  # input untouched
    with pytest.raises(MtlkitError):
        order_groups(groups, "sideways", random.Random(0))


def test_canonical_order():
    assert _grouping.canonical([["edge", "depth"], ["normals", "semseg"]], TASKS) == [
        ["semseg", "normals"],
        ["depth", "edge"],
    ]
