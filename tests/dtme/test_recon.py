import torch

from mtlkit.dtme import parameter_conflicts
from mtlkit.dtme._recon import most_conflicting, pairwise_cosine

from .helpers import tiny_model


def test_pairwise_cosine_by_hand():
    g = torch.tensor([[1.0, 0, 0], [-1.0, 1, 0], [0.0, 0, 0]])
    cos = pairwise_cosine(g)
    assert abs(float(cos[0, 1]) + 2**-0.5) < 1e-12
    assert float(cos[0, 2]) == 0.0 and float(cos[2, 2]) == 0.0  # a zero gradient conflicts with nothing


def test_conflict_counts_match_per_block_gradients(tasks, batches):
    model = tiny_model(tasks)
    res = parameter_conflicts(model, tasks, batches, num_batches=None)
    names = list(tasks)
    expected = torch.zeros(4, 3, 3, dtype=torch.float64)
    for b in batches:
        out = model(b["image"])
        for layer, blk in enumerate(model.backbone.blocks):
            ps = list(blk.parameters())
            grads = [torch.autograd.grad(tasks[t].loss(out[t], b[t]), ps, retain_graph=True) for t in names]
            g = torch.stack([torch.cat([x.reshape(-1) for x in gs]) for gs in grads]).double()
            cos = torch.nn.functional.cosine_similarity(g[:, None], g[None], dim=-1)
            expected[layer] += ((cos < 0) & ~torch.eye(3, dtype=torch.bool)).double()
    assert expected.sum() > 0  # the random tasks do conflict somewhere
    torch.testing.assert_close(torch.tensor(res.pair_rates, dtype=torch.float64), expected / len(batches))
    iu = torch.triu_indices(3, 3, 1)
    assert res.rates == [float(m[iu[0], iu[1]].mean()) for m in expected / len(batches)]
    assert all(p.grad is None for p in model.parameters())


def test_most_conflicting_layers():
    assert most_conflicting([0.1, 0.7, 0.7, 0.3], 2) == [1, 2]
    assert most_conflicting([0.1, 0.7, 0.7, 0.3], 1) == [1]


def test_recon_expand_with_default_options_resolves_the_calibration_set(tasks, batches):
    from mtlkit.dtme import ReconConfig, recon_expand

    model = tiny_model(tasks)
    res = recon_expand(model, tasks, batches, ReconConfig(measure_inference=False))  # calib_batches="auto"
    assert res.analysis.batches == len(batches)  # auto without a dataset: up to 100 batches
    assert res.spec["layers"] == [max(range(4), key=lambda i: (res.analysis.rates[i], -i))]
