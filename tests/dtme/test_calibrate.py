import pytest
import torch

from mtlkit.dtme import analyze_token_space, apply_dtme, token_gradients
from mtlkit.errors import MtlkitError

from .helpers import random_batch, tiny_model, tiny_tasks


def manual_block_outputs(model, image, retain=False):
    bb = model.backbone
    x = bb.embed(image)
    outs, feats = [], []
    for i, blk in enumerate(bb.blocks):
        x = blk(x)
        if retain:
            x.retain_grad()
        outs.append(x)
        if i in bb.out_indices:
            feats.append(bb.tokens_to_map(x, i))
    return outs, feats


def test_covariance_and_spectrum_match_the_block_outputs(tasks, batches):
    model = tiny_model(tasks)
    a = analyze_token_space(model, tasks, batches, num_batches=None, r=10)
    assert a.covariance_batches == len(batches) == a.conflict_batches
    with torch.no_grad():
        outs = [manual_block_outputs(model, b["image"])[0] for b in batches]
    for layer in range(len(model.backbone.blocks)):
        x = torch.cat([o[layer].reshape(-1, 32) for o in outs]).double()
        expected = torch.linalg.eigvalsh(x.T @ x / x.shape[0]).flip(0)
        got = torch.tensor(a.layers[layer].eigenvalues, dtype=torch.float64)
        torch.testing.assert_close(got, expected.clamp_min(0), rtol=1e-6, atol=1e-9)
    assert a.covariance_tokens == len(batches) * 4 * 5


def test_token_gradients_equal_backward_per_task(tasks):
    model = tiny_model(tasks)
    batch = random_batch()
    grads, losses = token_gradients(model, tasks, batch)
    outs, feats = manual_block_outputs(model, batch["image"], retain=True)
    preds = model.forward_heads(feats)
    for ti, t in enumerate(tasks):
        for o in outs:
            o.grad = None
        loss = tasks[t].loss(preds[t], batch[t])
        torch.testing.assert_close(losses[t], loss.detach())
        loss.backward(retain_graph=True)
        for layer, o in enumerate(outs):
            assert o.grad.abs().sum() > 0  # every layer's tokens influence every task
            torch.testing.assert_close(grads[layer][ti], o.grad.reshape(-1, 32))


def test_result_structure_and_model_left_unchanged(tasks, batches):
    model = tiny_model(tasks, head="conv")  # BatchNorm in the heads: its running stats must be restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = analyze_token_space(model, tasks, batches, num_batches=2)
    assert a.conflict_batches == 2 and a.tasks == list(tasks)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    for layer in a.layers:
        for m in (torch.tensor(layer.range_pairs), torch.tensor(layer.null_pairs)):
            assert torch.equal(m, m.T) and torch.all(m.diagonal() == 0)
            assert 0 <= float(m.min()) and float(m.max()) <= 1
        assert 1 <= layer.k <= layer.dim == 32
        assert layer.variance_captured >= 100 / 101 - 1e-12
    assert set(a.timings) == {"covariance_s", "eigen_s", "conflicts_s"}


def test_full_range_space_has_no_null_conflicts(tasks, batches):
    a = analyze_token_space(tiny_model(tasks), tasks, batches, r=1e12)
    assert all(layer.k == 32 for layer in a.layers)
    assert a.null_rates() == [0.0] * 4
    assert max(a.range_rates()) > 0


def test_non_finite_batch_is_skipped(tasks, batches):
    model = tiny_model(tasks)
    bad = random_batch(seed=9)
    bad["image"][0, 0, 0, 0] = float("nan")
    clean = analyze_token_space(model, tasks, batches, num_batches=None)
    dirty = analyze_token_space(model, tasks, [batches[0], bad, *batches[1:]], num_batches=None)
    assert dirty.skipped_batches == 2  # once in each pass
    assert dirty.conflict_batches == clean.conflict_batches
    assert dirty.range_rates() == clean.range_rates()
    assert dirty.layers[2].eigenvalues == clean.layers[2].eigenvalues


def test_frozen_backbone_gives_the_same_analysis(tasks, batches):
    model = tiny_model(tasks)
    a = analyze_token_space(model, tasks, batches)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    b = analyze_token_space(model, tasks, batches)
    assert a.range_rates() == b.range_rates() and a.null_rates() == b.null_rates()


def test_bad_inputs_are_user_errors(tasks, batches):
    model = tiny_model(tasks)
    with pytest.raises(MtlkitError, match="at least two tasks"):
        analyze_token_space(model, tiny_tasks(1), batches)
    with pytest.raises(MtlkitError, match="no batches"):
        analyze_token_space(model, tasks, [])
    with pytest.raises(MtlkitError, match="with a length"):
        analyze_token_space(model, tasks, iter(batches), num_batches=None)
    apply_dtme(model, {"tasks": list(tasks), "tm_layers": [1], "te_layers": []})
    with pytest.raises(MtlkitError, match="already expanded"):
        analyze_token_space(model, tasks, batches)
