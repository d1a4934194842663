import pytest
import torch

from mtlkit.dtme import DTME_SPEC_VERSION, analyze_token_space, apply_dtme, token_gradients
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


def test_rates_recomputed_independently_per_layer(tasks, batches):
    """Every layer's conflicts, recomputed by hand from that layer's own covariance, eigenbasis and token
    gradients, equal the analysis' (a basis from another layer gives other numbers)."""
    model = tiny_model(tasks)
    r = 10.0
    a = analyze_token_space(model, tasks, batches, num_batches=None, r=r)
    names = list(tasks)
    with torch.no_grad():
        outs = [manual_block_outputs(model, b["image"])[0] for b in batches]
    grads = []  # per batch, per layer: (T, B*N, D)
    for b in batches:
        o, feats = manual_block_outputs(model, b["image"], retain=True)
        preds = model.forward_heads(feats)
        per_task = []
        for t in names:
            g = torch.autograd.grad(tasks[t].loss(preds[t], b[t]), o, retain_graph=True)
            per_task.append([x.reshape(-1, 32).double() for x in g])
        grads.append([torch.stack([pt[layer] for pt in per_task]) for layer in range(4)])
    bases = []
    for layer in range(4):
        x = torch.cat([o[layer].reshape(-1, 32) for o in outs]).double()
        lam, u = torch.linalg.eigh(x.T @ x / x.shape[0])
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        tail = lam.sum() - lam.cumsum(0)
        k = int(torch.nonzero(lam.cumsum(0) >= r * tail)[0]) + 1
        assert a.layers[layer].k == k
        bases.append((u[:, :k], u[:, k:]))
    rates = []
    for layer in range(4):
        ur, un = bases[layer]
        pair_r = torch.zeros(3, 3, dtype=torch.float64)
        pair_n = torch.zeros(3, 3, dtype=torch.float64)
        for g in grads:
            gl = g[layer]
            for i in range(3):
                for j in range(3):
                    if i != j:
                        pair_r[i, j] += ((gl[i] @ ur) * (gl[j] @ ur)).sum(-1).lt(0).double().mean()
                        pair_n[i, j] += ((gl[i] @ un) * (gl[j] @ un)).sum(-1).lt(0).double().mean()
        pair_r /= len(grads)
        pair_n /= len(grads)
        torch.testing.assert_close(torch.tensor(a.layers[layer].range_pairs, dtype=torch.float64), pair_r)
        torch.testing.assert_close(torch.tensor(a.layers[layer].null_pairs, dtype=torch.float64), pair_n)
        rates.append((float(pair_r[0, 1] + pair_r[0, 2] + pair_r[1, 2]) / 3, float(pair_n[0, 1] + pair_n[0, 2]
                                                                                      + pair_n[1, 2]) / 3))
    assert a.range_rates() == pytest.approx([x for x, _ in rates]) and a.null_rates() == pytest.approx(
        [y for _, y in rates])
    # the layers differ, so a mix-up of bases would show
    assert len({round(x, 6) for x, _ in rates}) > 1 and len({round(y, 6) for _, y in rates}) > 1


def test_expanded_model_is_analysed_per_task_stream(tasks, batches):
    """At init TM is the identity, so each task's stream carries the shared tokens and gradients: the
    analysis of the expanded model equals the unexpanded one; the result names the streams."""
    model = tiny_model(tasks)
    plain = analyze_token_space(model, tasks, batches, num_batches=2)
    apply_dtme(model, {"tasks": list(tasks), "tm_layers": [0, 2], "te_layers": [], "version": DTME_SPEC_VERSION})
    expanded = analyze_token_space(model, tasks, batches, num_batches=2)
    assert plain.streams is None and expanded.streams == list(tasks)
    assert [layer.k for layer in expanded.layers] == [layer.k for layer in plain.layers]
    assert expanded.range_rates() == pytest.approx(plain.range_rates(), abs=0.02)  # a sign flip or two
    assert expanded.null_rates() == pytest.approx(plain.null_rates(), abs=0.02)
    assert expanded.covariance_tokens == plain.covariance_tokens
