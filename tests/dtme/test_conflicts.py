import torch

from mtlkit.dtme import ConflictAccumulator, pair_conflict_counts, project


def test_pair_counts_on_hand_made_coordinates():
    # 3 tasks, 4 tokens, 2 dims
    c = torch.tensor(
        [
            [[1.0, 0], [1, 0], [0, 1], [1, 1]],
            [[-1.0, 0], [1, 0], [0, -1], [1, -1]],  # vs task 0: -1, 1, -1, 0 -> 2 conflicts (0 is none)
            [[-2.0, 1], [-1, 0], [3, 3], [0, 0]],  # vs 0: -2, -1, 3, 0 -> 2; vs 1: 2, -1, -3, 0 -> 2
        ]
    )
    expected = torch.tensor([[0, 2, 2], [2, 0, 2], [2, 2, 0]])
    assert torch.equal(pair_conflict_counts(c), expected)


def test_empty_space_has_no_conflicts():
    assert pair_conflict_counts(torch.zeros(3, 5, 0)).sum() == 0


def test_range_and_null_conflicts_follow_the_signs_of_each_component():
    # basis = identity, k = 1: the range coordinate is x, the null coordinate is y
    basis = torch.eye(2, dtype=torch.float64)
    g = torch.tensor(
        [
            [[1.0, 1], [1, -1], [2, 3]],  # task 0, three tokens
            [[-1.0, 1], [1, 1], [-1, -1]],  # task 1: range signs differ at tokens 0, 2; null at 1, 2
        ]
    )
    acc = ConflictAccumulator(2)
    acc.update(*project(g, basis, 1))
    assert acc.range_pairs()[0, 1] == 2 / 3
    assert acc.null_pairs()[0, 1] == 2 / 3
    # a second batch without conflicts halves the averaged rates
    acc.update(*project(g.abs(), basis, 1))
    assert acc.range_pairs()[0, 1] == 1 / 3
    assert acc.batches == 2


def test_layer_rate_is_the_mean_over_pairs():
    pairs = torch.tensor([[0.0, 0.2, 0.4], [0.2, 0.0, 0.9], [0.4, 0.9, 0.0]])
    assert abs(ConflictAccumulator.layer_rate(pairs) - 0.5) < 1e-12
    assert ConflictAccumulator.layer_rate(torch.zeros(1, 1)) == 0.0
