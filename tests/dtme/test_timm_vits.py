"""DTME and Recon on timm VisionTransformers of every kind (class token, registers + layer scale, no class token,
CLIP pre-norm) and on the Tab. VIII architectures of the imbalance study, at random init."""

from __future__ import annotations

import pytest
import torch

from mtlkit.dtme import DTMEConfig, ExpandedBackbone, ReconConfig, apply_dtme, expand, recon_expand
from mtlkit.errors import MtlkitError
from mtlkit.models import build_backbone, build_model

from .helpers import random_batch, tiny_tasks

#: name -> (timm architecture, small timm arguments, image size)
KINDS = {
    "tiny ViT (class token)": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=4, num_heads=2, patch_size=8), 16),
    "DINOv2-style (patch 14, 4 registers, layer scale)": (
        "vit_base_patch14_reg4_dinov2", dict(embed_dim=32, depth=4, num_heads=2, init_values=1e-5), 28,
    ),
    "CLIP-style (pre-norm)": ("vit_base_patch16_clip_224", dict(embed_dim=32, depth=4, num_heads=2, patch_size=8), 16),
    "no class token": (
        "vit_base_patch16_224", dict(embed_dim=32, depth=4, num_heads=2, patch_size=8, class_token=False,
                                     global_pool="avg"), 16,
    ),
}


def model_of(kind: str, tasks: dict, seed: int = 0):
    arch, kw, size = KINDS[kind]
    torch.manual_seed(seed)
    return build_model(arch, tasks, size, **kw), size


def batches(size: int, n: int = 2) -> list[dict]:
    return [random_batch(2, size, seed=s) for s in range(n)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_token_modulation_at_init_keeps_the_outputs(kind: str, tasks) -> None:
    model, size = model_of(kind, tasks)
    model.eval()
    x = random_batch(2, size)["image"]
    with torch.no_grad():
        before = model(x)
        apply_dtme(model, {"tasks": list(tasks), "tm_layers": [0, 1, 2, 3], "te_layers": []})
        after = model(x)
    for t in tasks:
        torch.testing.assert_close(after[t], before[t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_task_tokens_follow_prefix_and_patch_tokens_and_are_dropped_after_the_block(kind: str, tasks) -> None:
    model, size = model_of(kind, tasks)
    model.eval()
    apply_dtme(model, {"version": 2, "tasks": list(tasks), "tm_layers": [], "te_layers": [1], "tokens": 2})
    bb = model.backbone
    assert isinstance(bb, ExpandedBackbone)
    base = bb.base
    x = random_batch(2, size)["image"]
    task = list(tasks)[1]
    with torch.no_grad():
        got = model(x)[task]
        # by hand: the task's 2 tokens of layer 1 extend block 1's output (after the P prefix and N patch tokens),
        # go through block 2 and are dropped after it
        h = base.embed(x)
        n = h.shape[1]
        sl = base.token_slices()
        assert n == sl["patch"].stop and sl["prefix"].stop == base.num_prefix_tokens
        feats = []
        for i, blk in enumerate(base.blocks):
            if i == 2:
                e = bb.expanders["1"].tokens[task].expand(h.shape[0], -1, -1)
                h = blk(torch.cat([h, e], 1))[:, :n]
            else:
                h = blk(h)
            if i in base.out_indices:
                feats.append(base.tokens_to_map(h, i))
        ref = model.heads[task](feats, model.output_size)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_dtme_and_recon_expand_every_kind(kind: str) -> None:
    tasks = tiny_tasks(2)
    model, size = model_of(kind, tasks)
    result = expand(model, tasks, batches(size), DTMEConfig(calib_batches=2, tokens=2, measure_inference=False))
    tm, te = result.spec["tm_layers"], result.spec["te_layers"]
    assert len(set(tm) | set(te)) == 2 and tm and te  # rho 0.5 of 4 blocks in all (budget=total), TM and TE take turns
    # the token space of every block was analysed (all tokens: prefix and patch ones)
    base = model.backbone.base
    assert [layer.layer for layer in result.analysis.layers] == list(range(len(base.blocks)))
    assert all(layer.dim == base.embed_dim for layer in result.analysis.layers)
    out = model(random_batch(2, size)["image"])
    assert {t: v.shape[-2:] for t, v in out.items()} == dict.fromkeys(tasks, (size, size))
    model, size = model_of(kind, tasks)
    x = random_batch(2, size)["image"]
    model.eval()
    with torch.no_grad():
        before = model(x)
    recon_expand(model, tasks, batches(size), ReconConfig(layers=1, calib_batches=2, measure_inference=False))
    with torch.no_grad():
        after = model(x)
    for t in tasks:  # task copies start as the shared block
        torch.testing.assert_close(after[t], before[t], rtol=1e-5, atol=1e-5)


#: imbalance study Tab. VIII (the tags name weights; random init builds the architecture)
TAB8 = ["vit_base_patch16_384.augreg_in1k", "vit_base_patch16_224.augreg_in21k",
        "vit_base_patch16_384.augreg_in21k_ft_in1k", "vit_base_patch16_clip_384", "samvit_base_patch16",
        "vit_base_patch16_224.dino", "vit_base_patch14_reg4_dinov2"]
#: their architectures -> (embed dim, patch, prefix tokens, image size used here)
TAB8_ARCHS = {
    "vit_base_patch16_384": (768, 16, 1, 32),
    "vit_base_patch16_224": (768, 16, 1, 32),
    "vit_base_patch16_clip_384": (768, 16, 1, 32),
    "samvit_base_patch16": (768, 16, 0, 32),
    "vit_base_patch14_reg4_dinov2": (768, 14, 5, 28),
}


def test_tab8_names_are_these_architectures() -> None:
    import timm

    assert all(timm.is_model(n) for n in TAB8)
    assert {n.partition(".")[0] for n in TAB8} == set(TAB8_ARCHS)


@pytest.mark.parametrize("arch", list(TAB8_ARCHS))
def test_tab8_architectures_full_size_on_the_meta_device(arch: str) -> None:
    dim, patch, prefix, size = TAB8_ARCHS[arch]
    with torch.device("meta"):
        bb = build_backbone(arch, size)
        feats = bb(torch.empty(2, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [(2, dim, size // patch, size // patch)] * 4
    assert 85e6 < sum(p.numel() for p in bb.parameters()) < 90e6  # ViT-B
    if hasattr(bb, "embed"):
        assert bb.num_prefix_tokens == prefix and len(bb.blocks) == 12 and bb.out_indices == (2, 5, 8, 11)


@pytest.mark.parametrize("arch", list(TAB8_ARCHS))
def test_tab8_architectures_train_and_take_dtme(arch: str) -> None:
    """Each architecture at random init with its own patch, tokens, norms and layer scale (width and depth
    reduced to keep CPU seconds): features of the right shape, and DTME on every plain ViT among them."""
    _, patch, prefix, size = TAB8_ARCHS[arch]
    tasks = tiny_tasks(2)
    torch.manual_seed(0)
    model = build_model(arch, tasks, size, embed_dim=32, depth=4, num_heads=2)
    feats = model.backbone(random_batch(2, size)["image"])
    assert [tuple(f.shape) for f in feats] == [(2, 32, size // patch, size // patch)] * 4
    if arch.startswith("samvit"):
        # SAM's blocks work on (B, H, W, D) windows, not a (B, N, D) token sequence: no token space to analyse
        with pytest.raises(MtlkitError, match="token"):
            expand(model, tasks, batches(size), DTMEConfig(calib_batches=1, measure_inference=False))
        return
    assert model.backbone.num_prefix_tokens == prefix
    result = expand(model, tasks, batches(size), DTMEConfig(calib_batches=2, tokens=2, measure_inference=False))
    assert result.spec["tm_layers"] and result.spec["te_layers"]
    out = model(random_batch(2, size)["image"])
    assert all(v.shape[-2:] == (size, size) for v in out.values())
