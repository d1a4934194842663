"""TaskPrompter: the prompted block against timm's block, the task features against the official loops,
the refused shared representation, size checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import TaskPrompter

from ._support import make_batch, make_tasks, tiny_vit

CHANNELS = {"semseg": 5, "depth": 1, "normals": 3}


def _model(**kw) -> TaskPrompter:
    torch.manual_seed(0)
    args = dict(embed_dim=32, final_embed_dim=32, chan_nheads=4)
    args.update(kw)
    return TaskPrompter(tiny_vit(), CHANNELS, **args).eval()


def test_prompted_block_is_the_pretrained_block_on_prompts_and_patches() -> None:
    """Patches: exactly the ViT block on cat(prompts, patches); prompts too once token_trans1 is zero."""
    model = _model()
    blk = model.backbone.blocks[1]
    x, p = torch.randn(2, 64, 64), torch.randn(2, 3, 64)
    with torch.no_grad():
        ref = blk(torch.cat([p, x], 1))
        nx, np_, _ = model._block(1, blk, x, p)
        torch.testing.assert_close(nx, ref[:, 3:])
        nn.init.zeros_(model.token_trans1[1].weight)
        nn.init.zeros_(model.token_trans1[1].bias)
        _, np0, _ = model._block(1, blk, x, p)
        torch.testing.assert_close(np0, ref[:, :3])
        assert not torch.allclose(np_, np0)


def test_raw_attentions_match_the_official_windows() -> None:
    model = _model()
    blk = model.backbone.blocks[0]
    x, p = torch.randn(2, 64, 64), torch.randn(2, 3, 64)
    with torch.no_grad():
        _, _, (raw_spa, raw_chan) = model._block(0, blk, x, p)
        z = torch.cat([blk.norm1(p), blk.norm1(x)], 1)
        q, k, _ = blk.attn.qkv(z).reshape(2, 67, 3, 4, 16).permute(2, 0, 3, 1, 4)
        torch.testing.assert_close(raw_spa, q @ k.transpose(-2, -1))  # unscaled, pre-softmax
        chan_p = model.token_trans[0](blk.norm1(p)).reshape(2, 3, 8, 8)  # one value per patch
        xn = blk.norm1(x).transpose(1, 2).reshape(2, 64, 8, 8)
        for i in range(2):  # 2x2 windows of 4x4 patches
            for j in range(2):
                qw = chan_p[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].flatten(2)
                kw = xn[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].flatten(2)
                torch.testing.assert_close(raw_chan[..., i, j], qw @ kw.transpose(1, 2))


class _Grab(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x
        return x


@pytest.mark.parametrize("use_ctr", [False, True])
def test_task_features_follow_the_official_cal_task_feature(use_ctr: bool) -> None:
    """Per head: fmap * spatial weight + fmap; per window: fmap * channel weight + fmap (official loops)."""
    model = _model(embed_dim=64, use_ctr=use_ctr)
    grabs = {}
    for t in CHANNELS:
        model.fea_decode_spa[0][t] = nn.Identity()
        model.fea_decode_chan[0][t] = nn.Identity()
        grabs[t] = model.fea_fuse[0][t] = _Grab()
    tokens = torch.randn(2, 64, 64)
    raw_spa, raw_chan = torch.randn(2, 4, 67, 67), torch.randn(2, 3, 64, 2, 2)
    with torch.no_grad():
        out = model._task_features(tokens, (raw_spa, raw_chan), 0)
    x = tokens.transpose(1, 2).reshape(2, 64, 8, 8)
    feats = {}
    for j, t in enumerate(CHANNELS):
        w = raw_spa[:, :, j, 3:].reshape(2, 4, 8, 8)
        spa = torch.cat([w[:, h : h + 1] * x[:, 16 * h : 16 * h + 16] for h in range(4)], 1) + x
        rows = []
        for hi in range(2):
            rows.append(
                torch.cat(
                    [
                        raw_chan[:, j, :, hi, wi, None, None] * x[:, :, 4 * hi : 4 * hi + 4, 4 * wi : 4 * wi + 4]
                        for wi in range(2)
                    ],
                    3,
                )
            )
        chan = torch.cat(rows, 2) + x
        torch.testing.assert_close(grabs[t].seen, torch.cat([spa, chan], 1))
        feats[t] = grabs[t].seen
    for j, t in enumerate(CHANNELS):
        if use_ctr:
            w = model.ctr_attn_conv[0][t](raw_spa[:, :, j : j + 1, :3])
            ref = sum(w[:, :, :, k : k + 1] * feats[a] for k, a in enumerate(CHANNELS))
            torch.testing.assert_close(out[t], ref)
        else:
            torch.testing.assert_close(out[t], feats[t])


def test_no_shared_representation() -> None:
    model = _model()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(MtlkitError, match="no shared representation"):
        model.forward_features(x)
    with pytest.raises(MtlkitError, match="no shared representation"):
        model.forward_heads([x])
    out, feats = model(x, return_features=True)
    assert feats is None and set(out) == set(CHANNELS)
    assert not model.has_shared_representation
    assert {id(p) for p in model.shared_parameters()} >= {id(model.task_prompts)}


def test_reads_four_layers_and_no_aux() -> None:
    model = _model()
    assert model.layers == [0, 1, 2, 3]  # a 4-block ViT: blocks 1, 2, 3 and the normed last one
    batch = make_batch(CHANNELS, size=64)
    tasks = make_tasks(CHANNELS)
    out = model(batch["image"])
    assert model.aux == {}
    losses = model.task_losses(out, batch, tasks)
    for t, task in tasks.items():
        torch.testing.assert_close(losses[t], task.loss(out[t], batch[t]))


def test_size_checks() -> None:
    model = _model()
    with pytest.raises(MtlkitError, match="img_size"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(MtlkitError, match="chan_nheads"):
        TaskPrompter(tiny_vit(), CHANNELS, chan_nheads=8)
    with pytest.raises(MtlkitError, match="chan_nheads"):
        TaskPrompter(tiny_vit(), CHANNELS, chan_nheads=9)
    with pytest.raises(MtlkitError, match="four increasing"):
        TaskPrompter(tiny_vit(), CHANNELS, chan_nheads=4, layers=[0, 1, 2, 2])
    wrapped = tiny_vit()
    del wrapped.patch_size  # found on the wrapped timm PatchEmbed instead
    assert TaskPrompter(wrapped, CHANNELS, chan_nheads=4).patch_size == (8, 8)
    built = TaskPrompter(tiny_vit(), CHANNELS, img_size=(32, 32), embed_dim=16, final_embed_dim=16, chan_nheads=4)
    assert built.grid == (4, 4)
    assert built.token_trans[0].out_features == 16


def test_official_unused_last_prompt_update() -> None:
    torch.manual_seed(0)
    batch = make_batch(CHANNELS, size=64)
    tasks = make_tasks(CHANNELS)
    for official_unused in (True, False):
        model = _model(official_unused=official_unused).train()
        sum(model.task_losses(model(batch["image"]), batch, tasks).values()).backward()
        unreached = sorted(n for n, p in model.named_parameters() if p.grad is None)
        assert len(model.token_trans1) == (4 if official_unused else 3)
        assert unreached == (["token_trans1.3.bias", "token_trans1.3.weight"] if official_unused else [])
