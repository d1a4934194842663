import pytest
import torch
from safetensors.torch import load_file, save_file

from mtlkit.dtme import DTME_SPEC_VERSION, ExpandedBackbone, apply_dtme, apply_recon
from mtlkit.dtme._expand import transform_model
from mtlkit.engine.checkpoint import load_model, save_model
from mtlkit.errors import MtlkitError
from mtlkit.models import apply_transforms

from .helpers import random_batch, tiny_model

BUILD = {"name": "micro", "img_size": 16, "head": "linear", "embed_dim": 32, "depth": 4, "num_heads": 2}


def perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_token_modulation_at_init_leaves_outputs_unchanged(tasks):
    model = tiny_model(tasks)
    x = random_batch()["image"]
    before = model(x)
    apply_dtme(model, {"tasks": list(tasks), "tm_layers": [0, 1, 2, 3], "te_layers": []})
    after = model(x)
    for t in tasks:
        torch.testing.assert_close(after[t], before[t], rtol=1e-5, atol=1e-5)


def reference_stream(model, x, task, tm, te):
    """Task ``task``'s stream run alone, written out by hand: TM and TE of layer l act on block l's output,
    TE tokens pass block l + 1 and are dropped."""
    bb = model.backbone
    base = bb.base
    h = base.embed(x)
    n = h.shape[1]
    feats = []
    for i, blk in enumerate(base.blocks):
        h = blk(h)[:, :n]
        if i in tm:
            h = h * bb.modulators[str(i)].weight[task] + bb.modulators[str(i)].bias[task]
        if i in base.out_indices:
            feats.append(base.tokens_to_map(h, i))
        if i in te:
            e = bb.expanders[str(i)].tokens[task]
            h = torch.cat([h, e.expand(h.shape[0], -1, -1)], 1)
    return model.heads[task](feats, model.output_size)


def dtme_spec(tasks, tm, te, **kw):
    return {"tasks": list(tasks), "tm_layers": tm, "te_layers": te, "version": DTME_SPEC_VERSION, **kw}


def test_batched_forked_forward_equals_each_stream_alone(tasks):
    model = tiny_model(tasks)
    tm, te = [1, 3], [1, 2]
    apply_dtme(model, dtme_spec(tasks, tm, te, tokens=2))
    perturb(model)
    assert model.backbone.fork_layer == 2  # block 2 is the first to run once per task
    x = random_batch()["image"]
    out = model(x)
    for t in tasks:
        torch.testing.assert_close(out[t], reference_stream(model, x, t, tm, te), rtol=1e-5, atol=1e-5)
    # features taken before the fork are shared by all tasks; after it they differ
    feats = model.backbone(x)
    assert feats["semseg"][0] is feats["depth"][0]
    assert not torch.allclose(feats["semseg"][1], feats["depth"][1])
    # a subset of streams gives the same features for those tasks
    sub = model.backbone(x, tasks=["depth"])
    torch.testing.assert_close(sub["depth"][3], feats["depth"][3], rtol=1e-5, atol=1e-5)


def test_batchnorm_modulator_normalises_each_task_separately(tasks):
    model = tiny_model(tasks)
    apply_dtme(model, {"tasks": list(tasks), "tm_layers": [3], "te_layers": [], "modulator": "batchnorm"})
    mod = model.backbone.modulators["3"]
    x = torch.cat([torch.randn(2, 5, 32) * (i + 1) + i for i in range(3)])  # three streams, B = 2
    y = mod(x, list(tasks))
    for i, s in enumerate(y.chunk(3)):
        flat = s.reshape(-1, 32)
        torch.testing.assert_close(flat.mean(0), torch.zeros(32), atol=1e-5, rtol=0)
        assert mod.norms[list(tasks)[i]].running_mean.abs().sum() > 0


def test_task_specific_parameters_are_split_by_task(tasks):
    model = tiny_model(tasks)
    shared_before = {id(p) for p in model.shared_parameters()}
    apply_dtme(model, dtme_spec(tasks, [0, 2], [1], tokens=6))
    assert {id(p) for p in model.shared_parameters()} == shared_before
    for t in tasks:
        own = model.task_parameters(t)
        head = sum(p.numel() for p in model.heads[t].parameters())
        assert sum(p.numel() for p in own) == head + 2 * 2 * 32 + 6 * 32
        others = {id(p) for u in tasks if u != t for p in model.task_parameters(u)}
        assert not others & {id(p) for p in own}


def test_parameter_overhead_by_hand(tasks):
    # backbone: patch 3*8*8*32+32, cls 32, pos 5*32, 4 blocks of 12*32^2 + 13*32, final norm 2*32
    backbone = (3 * 64 * 32 + 32) + 32 + 5 * 32 + 4 * (12 * 32 * 32 + 13 * 32) + 64
    # linear heads on 4 concatenated 32-channel maps: semseg 3, depth 1, normals 3 outputs
    heads = (128 * 3 + 3) + (128 + 1) + (128 * 3 + 3)
    model = tiny_model(tasks)
    spec = dtme_spec(tasks, [0, 2], [1], tokens=6)
    _, rep = transform_model(model, "dtme", spec, None)
    assert rep["params_before"] == backbone + heads == 58151
    assert rep["params_added"] == 3 * (2 * 2 * 32 + 1 * 6 * 32) == 960
    assert rep["param_overhead_pct"] == pytest.approx(100 * 960 / 58151)
    # Recon: one block becomes three copies (the shared one is dropped)
    model = tiny_model(tasks)
    _, rep = transform_model(model, "recon", {"tasks": list(tasks), "layers": [2]}, None)
    assert rep["params_added"] == 2 * (12 * 32 * 32 + 13 * 32)
    assert rep["param_overhead_pct"] == pytest.approx(100 * 25408 / 58151)


def test_recon_copies_start_equal_and_stay_separate(tasks):
    model = tiny_model(tasks)
    x = random_batch()["image"]
    before = model(x)
    apply_recon(model, {"tasks": list(tasks), "layers": [1, 2]})
    after = model(x)
    for t in tasks:
        torch.testing.assert_close(after[t], before[t], rtol=1e-5, atol=1e-5)
    copies = model.backbone.base.blocks[2].copies
    with torch.no_grad():
        copies["semseg"].mlp.fc2.bias.add_(1.0)
    changed = model(x)
    assert not torch.allclose(changed["semseg"], after["semseg"])
    torch.testing.assert_close(changed["depth"], after["depth"], rtol=1e-5, atol=1e-5)
    assert set(map(id, copies["depth"].parameters())) <= set(map(id, model.task_parameters("depth")))
    assert not set(map(id, copies["depth"].parameters())) & set(map(id, model.shared_parameters()))


@pytest.mark.parametrize(
    "transforms",
    [
        [{"name": "dtme", "spec": {"tasks": ["semseg", "depth", "normals"], "tm_layers": [1, 3], "te_layers": [0, 2],
                                   "tokens": 3, "modulator": "affine", "version": DTME_SPEC_VERSION}}],
        [{"name": "dtme", "spec": {"tasks": ["semseg", "depth", "normals"], "tm_layers": [2], "te_layers": [],
                                   "tokens": 6, "modulator": "batchnorm"}}],
        [{"name": "recon", "spec": {"tasks": ["semseg", "depth", "normals"], "layers": [3]}}],
    ],
)
def test_save_and_load_of_an_expanded_model_gives_identical_outputs(tasks, tmp_path, transforms):
    model = apply_transforms(tiny_model(tasks), transforms)
    perturb(model)
    x = random_batch()["image"]
    model(x)  # a train-mode pass moves BatchNorm running statistics
    model.eval()
    expected = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    rebuilt = apply_transforms(tiny_model(tasks, seed=5), transforms)
    rebuilt.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    rebuilt.eval()
    got = rebuilt(x)
    for t in tasks:
        assert torch.equal(got[t], expected[t])
    # and through the engine's checkpoint files (model.json + model.safetensors)
    spec = {"build": {**BUILD, "tasks": {t: dict(task.params) for t, task in tasks.items()}}, "transforms": transforms}
    save_model(model, spec, tmp_path)
    loaded, _ = load_model(tmp_path)
    loaded.eval()
    assert isinstance(loaded.backbone, ExpandedBackbone)
    for t in tasks:
        assert torch.equal(loaded(x)[t], expected[t])


def test_expansion_errors(tasks):
    model = tiny_model(tasks)
    with pytest.raises(MtlkitError, match="out of range"):
        apply_dtme(model, {"tasks": list(tasks), "tm_layers": [4], "te_layers": []})
    model = tiny_model(tasks)
    apply_dtme(model, {"tasks": list(tasks), "tm_layers": [1], "te_layers": []})
    with pytest.raises(MtlkitError, match="already has a token modulator"):
        apply_dtme(model, {"tasks": list(tasks), "tm_layers": [1], "te_layers": []})
    with pytest.raises(MtlkitError, match="expanded for tasks"):
        apply_dtme(model, {"tasks": ["depth"], "tm_layers": [2], "te_layers": []})
    with pytest.raises(MtlkitError, match="valid: affine"):
        apply_dtme(tiny_model(tasks), {"tasks": list(tasks), "tm_layers": [1], "modulator": "film"})
    with pytest.raises(MtlkitError, match="last block"):
        apply_dtme(tiny_model(tasks), dtme_spec(tasks, [], [3]))
    # a spec written before TE moved to the output of its block is refused, not silently reinterpreted
    with pytest.raises(MtlkitError, match="version"):
        apply_dtme(tiny_model(tasks), {"tasks": list(tasks), "tm_layers": [], "te_layers": [1]})


def test_analysed_and_expanded_tokens_are_the_same_positions(tasks):
    """TM and TE of layer l act on X_l, the tensor the analysis hooks as block l's output; TE's tokens
    enter block l + 1 behind X_l and leave after it."""
    from mtlkit.dtme._calibrate import _Layers

    model = tiny_model(tasks)
    x = random_batch()["image"]
    with _Layers(model) as layers, torch.no_grad():
        model(x)
    analysed = [layers.tokens(o, x.shape[0]) for o in layers.outputs]  # what the analysis reads as X_l
    layer, names = 1, list(tasks)
    apply_dtme(model, dtme_spec(tasks, [layer], [layer], tokens=2))
    bb = model.backbone
    seen = {}
    bb.modulators[str(layer)].register_forward_hook(lambda m, a, o: seen.update(tm_in=a[0], tm_out=o))
    bb.expanders[str(layer)].register_forward_hook(lambda m, a, o: seen.update(te_in=a[0], te_out=o))
    bb.blocks[layer + 1].register_forward_pre_hook(lambda m, a: seen.update(next_in=a[0]))
    bb.blocks[layer + 1].register_forward_hook(lambda m, a, o: seen.update(next_out=o))
    with torch.no_grad():
        model(x)
    n = analysed[layer].shape[1]
    streams = len(names)
    # TM's input is X_l of every stream, TE's input is TM's output (X_l modulated; X_l at init)
    torch.testing.assert_close(seen["tm_in"], analysed[layer].repeat(streams, 1, 1), rtol=0, atol=0)
    assert seen["te_in"] is seen["tm_out"]
    torch.testing.assert_close(seen["te_in"], analysed[layer].repeat(streams, 1, 1), rtol=0, atol=0)
    # block l + 1 reads X_l in positions [:n] and the task tokens behind them
    assert seen["next_in"] is seen["te_out"] and seen["next_in"].shape[1] == n + 2
    torch.testing.assert_close(seen["next_in"][:, :n], analysed[layer].repeat(streams, 1, 1), rtol=0, atol=0)
    for i, t in enumerate(names):
        stream = seen["next_in"][i * x.shape[0]:(i + 1) * x.shape[0]]
        assert torch.equal(stream[:, n:], bb.expanders[str(layer)].tokens[t].expand(x.shape[0], -1, -1))
    # the task tokens change what block l + 1 gives X_{l+1}; blocks up to l are untouched
    assert not torch.allclose(seen["next_out"][:, :n], analysed[layer + 1].repeat(streams, 1, 1))
    assert layers.num_tokens == n


def count_block_rows(model):
    """Forward pre-hooks counting the sequences every block (and every Recon copy) processes."""
    rows = {"n": 0}

    def hook(module, args):
        rows["n"] += args[0].shape[0]

    bb = model.backbone
    for blk in bb.blocks:
        for m in (blk.copies.values() if hasattr(blk, "copies") else [blk]):
            m.register_forward_pre_hook(hook)
    return rows


@pytest.mark.parametrize("kind", ["dtme", "recon"])
def test_one_task_runs_only_its_stream(tasks, kind):
    model = tiny_model(tasks)
    if kind == "dtme":
        apply_dtme(model, dtme_spec(tasks, [1], [2], tokens=2))
    else:
        apply_recon(model, {"tasks": list(tasks), "layers": [2]})
    perturb(model)
    model.eval()
    x = random_batch()["image"]
    rows = count_block_rows(model)
    b, depth, fork, t_num = x.shape[0], 4, model.backbone.fork_layer, len(tasks)
    with torch.no_grad():
        full = model(x)
        assert rows["n"] == b * fork + t_num * b * (depth - fork)
        for t in tasks:
            rows["n"] = 0
            alone = model(x, tasks=[t])
            assert list(alone) == [t] and rows["n"] == b * depth  # one stream through every block
            torch.testing.assert_close(alone[t], full[t], rtol=1e-5, atol=1e-5)
