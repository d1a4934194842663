"""ViT backbones: mtlkit presets are timm configurations; features, token layout and names as timm computes them."""

from __future__ import annotations

import pytest
import torch

from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.models import VIT_PRESETS, ViTBackbone, build_backbone, build_model, vit_out_indices
from mtlkit.tasks import make_task

#: small random-init ViTs of each kind the issue names (timm arguments; 32x32 images)
VARIANTS = {
    "class token": ("vit_base_patch16_224", dict(patch_size=8)),
    "registers + layer scale (DINOv2-like)": (
        "vit_base_patch14_reg4_dinov2", dict(patch_size=14, img=28, init_values=1e-5)
    ),
    "no class token": ("vit_base_patch16_224", dict(patch_size=8, class_token=False, global_pool="avg")),
    "CLIP pre-norm": ("vit_base_patch16_clip_224", dict(patch_size=8)),
}


def small_vit(arch: str, img: int = 32, depth: int = 4, **kw) -> ViTBackbone:
    torch.manual_seed(0)
    return build_backbone(arch, img, embed_dim=32, depth=depth, num_heads=2, **kw)


def variant(name: str) -> tuple[ViTBackbone, int]:
    arch, kw = VARIANTS[name]
    kw = dict(kw)
    img = kw.pop("img", 32)
    return small_vit(arch, img, **kw), img


def test_presets_are_timm_vision_transformers_with_timm_dimensions() -> None:
    from timm.models.vision_transformer import VisionTransformer

    dims = {}
    with torch.device("meta"):
        for name in VIT_PRESETS:
            bb = build_backbone(name, 64 if name == "micro" else 224)
            assert isinstance(bb.vit, VisionTransformer)
            blk = bb.vit.blocks[0]
            dims[name] = (bb.embed_dim, len(bb.blocks), blk.attn.num_heads, bb.vit.patch_embed.patch_size[0])
    assert dims == {
        "micro": (128, 6, 4, 8),
        "tiny": (192, 12, 3, 16),  # ViT-Ti
        "small": (384, 12, 6, 16),  # ViT-S
        "base": (768, 12, 12, 16),  # ViT-B
        "large": (1024, 24, 16, 16),  # ViT-L
    }
    assert VIT_PRESETS["tiny"].arch == "vit_tiny_patch16_224" and VIT_PRESETS["micro"].patch_size == 8


def test_default_feature_blocks_follow_the_official_select_lists() -> None:
    assert vit_out_indices(12) == (2, 5, 8, 11)  # select_list [3, 6, 9] + the last block (1-based)
    assert vit_out_indices(24) == (5, 11, 17, 23)  # ViT-L: [6, 12, 18] + the last
    assert vit_out_indices(6) == (1, 2, 4, 5)
    assert vit_out_indices(2) == (0, 1)
    assert small_vit("vit_base_patch16_224", patch_size=8, out_indices=(0, -1)).out_indices == (0, 3)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_features_are_timm_forward_intermediates(name: str) -> None:
    bb, img = variant(name)
    bb.eval()
    x = torch.randn(2, 3, img, img)
    feats = bb(x)
    g = bb.grid
    final, inter = bb.vit.forward_intermediates(x, indices=list(bb.out_indices))
    assert [tuple(f.shape) for f in feats] == [(2, 32, *g)] * 4
    for a, b in zip(feats[:-1], inter[:-1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # the last block's output through the final norm: timm's returned features, patch tokens only
    p = bb.num_prefix_tokens
    expected = final[:, p:].transpose(1, 2).reshape(2, 32, *g)
    assert torch.allclose(feats[-1], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "prefix", "slices"),
    [
        ("class token", ("cls",), {"cls": (0, 1), "reg": (0, 0), "patch": (1, 17)}),
        ("registers + layer scale (DINOv2-like)", ("cls", "reg0", "reg1", "reg2", "reg3"),
         {"cls": (0, 1), "reg": (1, 5), "patch": (5, 9)}),
        ("no class token", (), {"cls": (0, 0), "reg": (0, 0), "patch": (0, 16)}),
        ("CLIP pre-norm", ("cls",), {"cls": (0, 1), "reg": (0, 0), "patch": (1, 17)}),
    ],
)
def test_token_layout_is_named(name: str, prefix: tuple, slices: dict) -> None:
    bb, img = variant(name)
    assert bb.prefix_token_names == prefix and bb.num_prefix_tokens == len(prefix)
    got = {k: (s.start, s.stop) for k, s in bb.token_slices().items() if k not in ("prefix", "dist")}
    assert got == slices
    tokens = bb.embed(torch.randn(1, 3, img, img))
    assert tokens.shape == (1, len(prefix) + bb.num_patches, 32)
    # embed() is exactly what timm runs before its blocks (prefix tokens, position embeddings, norm_pre)
    vit = bb.vit
    x = torch.randn(1, 3, img, img)
    ref = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    assert torch.equal(bb.embed(x), ref)


def test_deit_distillation_token_is_named() -> None:
    bb = small_vit("deit_tiny_distilled_patch16_224", patch_size=8)
    assert bb.prefix_token_names == ("cls", "dist") and bb.token_slices()["dist"] == slice(1, 2)
    assert bb(torch.randn(1, 3, 32, 32))[0].shape == (1, 32, 4, 4)


def test_clip_pre_norm_and_layer_scale_are_used() -> None:
    clip, _ = variant("CLIP pre-norm")
    assert isinstance(clip.vit.norm_pre, torch.nn.LayerNorm)
    dino, _ = variant("registers + layer scale (DINOv2-like)")
    assert type(dino.blocks[0].ls1).__name__ == "LayerScale" and dino.vit.no_embed_class


def test_patch_order_is_row_major_in_the_maps() -> None:
    bb = small_vit("vit_base_patch16_224", patch_size=8)
    bb.eval()
    x = torch.randn(1, 3, 32, 32)
    x2 = x.clone()
    x2[:, :, 8:16, 24:32] += 1.0  # patch (row 1, col 3) only
    tok = bb.embed(x2) - bb.embed(x)
    assert tok.abs().sum(-1)[0].nonzero().flatten().tolist() == [1 + 1 * 4 + 3]
    # a map position (r, c) is the block's token of patch (r, c): block 0's output differs everywhere by
    # attention, but the embedding map of patch tokens puts the changed patch at (1, 3)
    m = bb.tokens_to_map(tok, 0)
    assert (m.abs().sum(1)[0] > 0).nonzero().tolist() == [[1, 3]]


def test_unused_classifier_and_late_blocks_are_dropped() -> None:
    bb = small_vit("vit_base_patch16_224", patch_size=8, depth=5, out_indices=(0, 2))
    assert len(bb.blocks) == 3  # blocks after the last feature would get no gradient
    names = [n for n, _ in bb.named_parameters()]
    assert not any(n.startswith(("vit.head", "vit.fc_norm")) for n in names)
    feats = bb(torch.randn(2, 3, 32, 32))
    sum(f.sum() for f in feats).backward()
    assert all(p.grad is not None for p in bb.parameters())
    last = {id(p) for p in bb.last_layer_parameters()}
    assert last == {id(p) for p in bb.blocks[-1].parameters()} | {id(p) for p in bb.norm.parameters()}


def test_recon_can_replace_a_block() -> None:
    bb = small_vit("vit_base_patch16_224", patch_size=8)
    new = torch.nn.Identity()
    bb.blocks[1] = new
    assert bb.vit.blocks[1] is new


def test_bad_names_and_sizes_raise_one_line_errors() -> None:
    with pytest.raises(MtlkitError, match="not divisible by the patch size 8"):
        build_model("micro", {"depth": make_task("depth")}, img_size=36)
    with pytest.raises(MtlkitError, match="not divisible by the patch size 14"):
        build_backbone("vit_base_patch14_reg4_dinov2", 32, depth=1)
    with pytest.raises(MtlkitError, match="img_size"):
        small_vit("vit_base_patch16_224", patch_size=8)(torch.randn(1, 3, 64, 64))
    with pytest.raises(UnknownNameError, match="valid models: micro, tiny, small, base, large or a timm model"):
        build_backbone("vit_huge_nonexistent", 32)
    with pytest.raises(MtlkitError, match="--pretrained PATH") as err:
        build_backbone("vit_base_patch16_224.augreg_in21k", 32)
    assert "\n" not in str(err.value) and "'vit_base_patch16_224' for random init" in str(err.value)
    with pytest.raises(MtlkitError, match="never downloads"):
        build_backbone("hf-hub:timm/vit_base_patch16_224.augreg_in21k", 32)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_gramian_modules_own_every_parameter_once_and_leave_the_state_dict_as_timm_writes_it(name):
    bb, img = variant(name)
    keys = set(bb.state_dict())
    modules = bb.gramian_modules()
    owned = [id(p) for m in modules for p in m.parameters()]
    assert len(owned) == len(set(owned))
    assert set(owned) == {id(p) for p in bb.parameters()}
    assert set(bb.state_dict()) == keys and not any("_embedding" in k for k in keys)


    def hooked(m):  # TorchJD's rule: the highest modules that own parameters directly
        if any(True for _ in m.parameters(recurse=False)):
            return [m]
        return [h for c in m.children() for h in hooked(c)]

    targets = [h for m in modules for h in hooked(m)]
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in targets]
    bb(torch.randn(2, 3, img, img))
    for h in handles:
        h.remove()
    assert {id(m) for m in calls} == {id(m) for m in targets}  # every module the engine hooks really runs
