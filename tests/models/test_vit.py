"""ViT backbone: timm-compatible presets and state-dict keys, checkpoint loading, feature layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.models import (
    VIT_PRESETS,
    VisionTransformer,
    ViTConfig,
    build_model,
    load_timm_checkpoint,
    resize_pos_embed,
    vit_config,
)
from mtlkit.models.vit import Attention
from mtlkit.tasks import make_task

D = 32


def small(img: int = 32, depth: int = 2, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(embed_dim=D, depth=depth, num_heads=2, patch_size=8, img_size=(img, img), **kw))


def test_presets_have_timm_dimensions() -> None:
    dims = {k: (c.embed_dim, c.depth, c.num_heads) for k, c in VIT_PRESETS.items()}
    assert dims["tiny"] == (192, 12, 3)  # ViT-Ti
    assert dims["small"] == (384, 12, 6)  # ViT-S
    assert dims["base"] == (768, 12, 12)  # ViT-B
    assert dims["large"] == (1024, 24, 16)  # ViT-L
    for name in ("tiny", "small", "base", "large"):
        c = VIT_PRESETS[name]
        assert (c.patch_size, c.mlp_ratio, c.qkv_bias) == (16, 4.0, True)
    assert VIT_PRESETS["micro"].patch_size == 8


def test_vit_config_overrides_and_unknown_preset() -> None:
    c = vit_config("tiny", 64, patch_size=8)
    assert (c.img_size, c.patch_size, c.embed_dim) == ((64, 64), 8, 192)
    assert vit_config("micro", (32, 48)).img_size == (32, 48)
    with pytest.raises(UnknownNameError, match="valid models: micro, tiny"):
        vit_config("huge")


def test_state_dict_keys_are_timm_names() -> None:
    m = small(depth=2)
    expected = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(2):
        expected += [
            f"blocks.{i}.norm1.weight",
            f"blocks.{i}.norm1.bias",
            f"blocks.{i}.attn.qkv.weight",
            f"blocks.{i}.attn.qkv.bias",
            f"blocks.{i}.attn.proj.weight",
            f"blocks.{i}.attn.proj.bias",
            f"blocks.{i}.norm2.weight",
            f"blocks.{i}.norm2.bias",
            f"blocks.{i}.mlp.fc1.weight",
            f"blocks.{i}.mlp.fc1.bias",
            f"blocks.{i}.mlp.fc2.weight",
            f"blocks.{i}.mlp.fc2.bias",
        ]
    expected += ["norm.weight", "norm.bias"]
    sd = m.state_dict()
    assert list(sd) == expected
    # timm's shapes
    assert sd["cls_token"].shape == (1, 1, D)
    assert sd["pos_embed"].shape == (1, 1 + 16, D)  # 32 / 8 = 4x4 grid + class token
    assert sd["patch_embed.proj.weight"].shape == (D, 3, 8, 8)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * D, D)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * D, D)
    assert sd["blocks.0.mlp.fc2.weight"].shape == (D, 4 * D)
    assert isinstance(m.blocks, torch.nn.ModuleList) and len(m.blocks) == 2


def test_attention_is_standard_multi_head_softmax_attention() -> None:
    torch.manual_seed(0)
    attn = Attention(D, num_heads=4)
    x = torch.randn(2, 5, D)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)  # timm's qkv layout: [q | k | v], heads contiguous inside each
    heads = [slice(h * 8, (h + 1) * 8) for h in range(4)]
    outs = [torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 8**0.5, -1) @ v[..., s] for s in heads]
    assert torch.allclose(attn(x), attn.proj(torch.cat(outs, -1)), atol=1e-5)


def test_default_out_indices() -> None:
    assert vit_config("tiny").resolved_out_indices() == (2, 5, 8, 11)  # 12 layers
    assert vit_config("large").resolved_out_indices() == (5, 11, 17, 23)
    assert vit_config("micro").resolved_out_indices() == (1, 2, 4, 5)  # 6 layers, evenly spaced, last included
    assert small(depth=2).out_indices == (0, 1)
    assert small(depth=3, out_indices=(0, -1)).out_indices == (0, 2)


def test_forward_returns_maps_of_chosen_layers() -> None:
    m = small(depth=3, out_indices=(0, 2))
    x = torch.randn(2, 3, 32, 32)
    feats = m(x)
    assert [f.shape for f in feats] == [(2, D, 4, 4)] * 2
    assert m.out_channels == [D, D]
    # by hand: layer 0 un-normed tokens, last layer through the final norm; class token dropped
    t = m.embed(x)
    t0 = m.blocks[0](t)
    t2 = m.blocks[2](m.blocks[1](t0))
    assert torch.allclose(feats[0], t0[:, 1:].transpose(1, 2).reshape(2, D, 4, 4), atol=1e-6)
    assert torch.allclose(feats[1], m.norm(t2)[:, 1:].transpose(1, 2).reshape(2, D, 4, 4), atol=1e-6)
    # patch order is row-major: token 1 + r * 4 + c is patch (r, c)
    x2 = x.clone()
    x2[:, :, 8:16, 24:32] += 1.0  # patch (1, 3) only
    diff = (m.patch_embed(x2) - m.patch_embed(x)).abs().sum(-1)
    assert diff[0].nonzero().flatten().tolist() == [1 * 4 + 3]


def test_bad_sizes_raise_mtlkit_error() -> None:
    with pytest.raises(MtlkitError, match="not divisible by the patch size 8"):
        build_model("micro", {"depth": make_task("depth")}, img_size=36)
    with pytest.raises(MtlkitError, match="divisible"):
        VisionTransformer(vit_config("micro", 30))
    with pytest.raises(MtlkitError, match="img_size"):
        small()(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------------------------ checkpoints


def save_timm_like(model: VisionTransformer, path: Path, **extra: torch.Tensor) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.update(extra)
    save_file(state, str(path))


def timm_head(num_classes: int = 10) -> dict[str, torch.Tensor]:
    return {"head.weight": torch.randn(num_classes, D), "head.bias": torch.zeros(num_classes)}


def test_load_same_grid_reproduces_the_model(tmp_path: Path) -> None:
    src = small(img=32)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the init a fresh model would have
    path = tmp_path / "vit.safetensors"
    save_timm_like(src, path, **timm_head())
    dst = VisionTransformer(src.config)
    ignored = load_timm_checkpoint(dst, str(path))
    assert sorted(ignored) == ["head.bias", "head.weight"]
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(src(x), dst(x), strict=True):
        assert torch.equal(a, b)


def test_load_resizes_position_embeddings(tmp_path: Path) -> None:
    src = small(img=64)  # 8x8 grid
    path = tmp_path / "vit.safetensors"
    save_timm_like(src, path, **timm_head())
    dst = small(img=32)  # 4x4 grid
    load_timm_checkpoint(dst, str(path))
    assert dst.pos_embed.shape == (1, 17, D)
    assert torch.equal(dst.pos_embed, resize_pos_embed(src.pos_embed.detach(), (4, 4)))
    assert torch.equal(dst.pos_embed[:, 0], src.pos_embed[:, 0])  # class token's embedding untouched
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    for k in dst_sd:
        if k != "pos_embed":
            assert torch.equal(dst_sd[k], src_sd[k]), k
    # a rectangular target grid also works, and a constant embedding stays constant
    const = torch.ones(1, 1 + 64, D)
    out = resize_pos_embed(const, (2, 6))
    assert out.shape == (1, 13, D) and torch.allclose(out, torch.ones_like(out), atol=1e-5)
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.ones(1, 1 + 12, D), (4, 4))


def test_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    src = small()
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(3 * D, D)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(MtlkitError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_timm_checkpoint(small(), str(path))


def test_missing_keys_file_and_pth_format(tmp_path: Path) -> None:
    src = small()
    state = {k: v.contiguous() for k, v in src.state_dict().items() if k != "norm.weight"}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(MtlkitError, match="norm.weight"):
        load_timm_checkpoint(small(), str(path))
    load_timm_checkpoint(small(), str(path), strict=False)
    with pytest.raises(MtlkitError, match="not found"):
        load_timm_checkpoint(small(), str(tmp_path / "nope.safetensors"))
    pth = tmp_path / "vit.pth"
    torch.save({"model": src.state_dict()}, pth)
    dst = small(depth=2)
    torch.nn.init.zeros_(dst.cls_token)
    load_timm_checkpoint(dst, str(pth))
    assert torch.equal(dst.cls_token, src.cls_token)


def test_build_model_loads_pretrained(tmp_path: Path) -> None:
    src = VisionTransformer(vit_config("micro", 64))
    path = tmp_path / "micro.safetensors"
    save_timm_like(src, path)
    model = build_model("micro", {"depth": make_task("depth")}, img_size=32, pretrained=str(path))
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert model.backbone.pos_embed.shape == (1, 17, 128)
