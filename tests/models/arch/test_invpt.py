"""InvPT: intermediate supervision, the official unused modules, odd grids, per-task (DTME) encoder streams."""

from __future__ import annotations

import torch

from mtlkit.models.arch import InvPT

from ._support import make_batch, make_tasks, mtlkit_vit, tiny_vit

CHANNELS = {"semseg": 5, "depth": 1, "normals": 3}
SMALL = {"embed_dim": 32, "pred_channels": 16}


def test_task_losses_add_the_intermediate_prediction() -> None:
    torch.manual_seed(0)
    model = InvPT(tiny_vit(), CHANNELS, **SMALL)
    raw = {}
    hooks = [
        model.intermediate_head[t].register_forward_hook(lambda m, i, o, t=t: raw.__setitem__(t, o)) for t in CHANNELS
    ]
    batch = make_batch(CHANNELS, size=64)
    tasks = make_tasks(CHANNELS)
    out = model(batch["image"])
    for h in hooks:
        h.remove()
    losses = model.task_losses(out, batch, tasks)
    for t, task in tasks.items():
        assert raw[t].shape[-2:] == (4, 4)  # token grid 8x8 / downsample 2
        up = torch.nn.functional.interpolate(raw[t], size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(losses[t], task.loss(out[t], batch[t]) + task.loss(up, batch[t]))
    off = InvPT(tiny_vit(), CHANNELS, intermediate_supervision=False, **SMALL)
    out = off(batch["image"])
    assert off.aux == {}
    assert set(off.loss_terms(out, batch, tasks)["depth"]) == {"main"}


def test_official_unused_parameters_get_no_gradient() -> None:
    torch.manual_seed(0)
    batch = make_batch(CHANNELS, size=64)
    tasks = make_tasks(CHANNELS)
    for official_unused in (True, False):
        model = InvPT(mtlkit_vit(), CHANNELS, official_unused=official_unused, **SMALL)
        sum(model.task_losses(model(batch["image"]), batch, tasks).values()).backward()
        unreached = sorted(
            {n.split(".weight")[0].split(".bias")[0] for n, p in model.named_parameters() if p.grad is None}
        )
        if official_unused:
            assert unreached == [
                "blocks.0.attn.fuse_attn",
                "norm_mt",
                "redu_chan.0.depth",
                "redu_chan.0.normals",
                "redu_chan.0.semseg",
                "scale_embed.2",
            ]
        else:
            assert unreached == []


def test_stage_resolutions_and_odd_token_grids() -> None:
    """Stages at grid/2, grid, 2 grid; final features at 4 grid (1/4 of the input); a 7x7 grid works."""
    torch.manual_seed(0)
    model = InvPT(tiny_vit(), CHANNELS, **SMALL)
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o[0][0].shape[-2:]))) for b in model.blocks]
    model(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert sizes == [(4, 4), (8, 8), (16, 16)]
    odd = InvPT(tiny_vit(56), CHANNELS, **SMALL)
    out = odd(torch.randn(2, 3, 56, 56))
    assert out["semseg"].shape == (2, 5, 56, 56)


def test_attention_message_passing_reaches_later_stages() -> None:
    """Stages 2 and 3 fuse the previous stage's attention scores: their fuse convs get gradient."""
    torch.manual_seed(0)
    model = InvPT(tiny_vit(), CHANNELS, official_unused=False, **SMALL)
    assert model.blocks[0].attn.fuse_attn is None
    out = model(torch.randn(2, 3, 64, 64))
    out["depth"].mean().backward()
    for i in (1, 2):
        assert model.blocks[i].attn.fuse_attn.weight.grad.abs().sum() > 0


def test_per_task_encoder_streams() -> None:
    """With ``{task: maps}`` (DTME's forked encoder) each task's branch reads its own stream."""
    torch.manual_seed(0)
    model = InvPT(tiny_vit(), CHANNELS, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        shared = model.forward_heads(feats)
        same = model.forward_heads({t: feats for t in CHANNELS})
        other = [f + 1.0 for f in feats]
        forked = model.forward_heads({"semseg": feats, "depth": other, "normals": feats})
    for t in CHANNELS:
        torch.testing.assert_close(same[t], shared[t])
    # the decoder attends over all tasks jointly: changing depth's stream changes every task's output
    assert all(not torch.allclose(forked[t], shared[t]) for t in CHANNELS)


def test_dtme_expansion_of_the_encoder() -> None:
    """DTME (token modulation + expansion) on InvPT's ViT encoder: the encoder forks into task streams and each
    task's decoder branch reads its own; the joint decoder lets every loss reach every stream, so DTME's
    modules are shared parameters (a task's loss still never moves another task's own parameters)."""
    from mtlkit.dtme import apply_dtme

    from ._support import check_cut, check_split

    torch.manual_seed(0)
    model = InvPT(mtlkit_vit(), CHANNELS, official_unused=False, **SMALL)
    n_shared = len(model.shared_parameters())
    apply_dtme(model, {"version": 2, "tasks": list(CHANNELS), "tm_layers": [1], "te_layers": [2], "tokens": 2})
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert set(feats) == set(CHANNELS) and all(len(f) == 4 for f in feats.values())
    dtme = {id(p) for t in CHANNELS for p in model.backbone.task_specific_parameters(t)}
    assert dtme and dtme <= {id(p) for p in model.shared_parameters()}
    assert len(model.shared_parameters()) == n_shared + len(dtme)
    batch = make_batch(CHANNELS, size=64)
    tasks = make_tasks(CHANNELS)
    check_split(model, batch, tasks)
    check_cut(model, batch, tasks)
