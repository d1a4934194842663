"""``--pretrained PATH``: checkpoints written by timm load through timm's mechanism and give timm's features;
position embeddings are resampled as timm does; bad checkpoints and network-only names fail with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlkit.cli import main as cli_main
from mtlkit.errors import MtlkitError
from mtlkit.models import FAMILIES, build_backbone, build_model, check_model, vit_out_indices
from mtlkit.tasks import make_task

from .families import FAMILY_CONFIGS, image


def timm_model(family: str, seed: int = 1):
    """timm's own full (classifier included) model of the family's test config, at a random init."""
    import timm

    name, kw, size = FAMILY_CONFIGS[family]
    torch.manual_seed(seed)
    arch_kw = dict(kw)
    if family != "vit" and "img_size" not in arch_kw and timm.models.get_pretrained_cfg(name).fixed_input_size:
        arch_kw["img_size"] = size
    if family == "vit":
        arch_kw["img_size"] = size
    if family == "resnet":
        arch_kw["output_stride"] = 8  # an architecture argument; the weights are the same
    if family == "hrnet":
        arch_kw["head"] = ""  # without the classifier's large 'incre' / final layers: a smaller file
    return timm.create_model(name, **arch_kw).eval()


def reference_features(family: str, model, x: torch.Tensor) -> list[torch.Tensor]:
    """The features mtlkit should give, computed by timm's model itself."""
    if family == "vit":
        idx = vit_out_indices(len(model.blocks))
        final, inter = model.forward_intermediates(x, indices=list(idx))
        g = model.patch_embed.grid_size
        last = final[:, model.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, *g)
        return [*inter[:-1], last]
    if family == "hrnet":  # HRNet's branches (timm's forward_intermediates gives the classifier's 'incre' maps)
        y = model.act2(model.bn2(model.conv2(model.act1(model.bn1(model.conv1(x))))))
        return list(model.stages(y))
    idx = FAMILIES[family].out_indices or vit_out_indices(len(model.blocks))
    return model.forward_intermediates(x, indices=list(idx), intermediates_only=True)


def write_checkpoints(model, tmp_path: Path, bin_too: bool) -> list[Path]:
    """timm's own writers: ``save_for_hf`` (model.safetensors, + pytorch_model.bin) and a training-style .pth."""
    from timm.models import save_for_hf

    save_for_hf(model, str(tmp_path), safe_serialization="both" if bin_too else True)
    pth = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "arch": "x", "state_dict": model.state_dict()}, pth)  # timm's CheckpointSaver layout
    return [tmp_path / "model.safetensors", pth] + ([tmp_path / "pytorch_model.bin"] if bin_too else [])


@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_timm_checkpoint_gives_timm_features(family: str, tmp_path: Path) -> None:
    src = timm_model(family)
    name, kw, size = FAMILY_CONFIGS[family]
    x = image(size)
    with torch.no_grad():
        expected = reference_features(family, src, x)
    paths = write_checkpoints(src, tmp_path, bin_too=family == "vit")
    for path in paths:
        torch.manual_seed(123)  # a different init: everything must come from the file
        model = build_model(name, {"depth": make_task("depth")}, size, pretrained=str(path), **kw).eval()
        with torch.no_grad():
            got = model.backbone(x)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("arch", "kw"), [
    ("vit_base_patch16_224", dict(patch_size=8)),  # class token in the position embedding
    ("vit_base_patch14_reg4_dinov2", dict(patch_size=8, init_values=1e-5)),  # registers, no class pos-embed
])
def test_position_embeddings_are_resampled_as_timm_does(arch: str, kw: dict, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    small = dict(embed_dim=32, depth=2, num_heads=2, **kw)
    src = timm.create_model(arch, img_size=32, **small)  # 4x4 grid
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    bb = build_backbone(arch, 48, pretrained=str(path), **small)  # 6x6 grid
    prefix = 0 if src.no_embed_class else src.num_prefix_tokens
    expected = resample_abs_pos_embed(src.pos_embed.detach(), (6, 6), (4, 4), num_prefix_tokens=prefix)
    assert bb.vit.pos_embed.shape == expected.shape
    torch.testing.assert_close(bb.vit.pos_embed.detach(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(bb.vit.blocks[1].mlp.fc1.weight, src.blocks[1].mlp.fc1.weight, rtol=0, atol=0)


def test_a_tagged_name_loads_with_a_file_and_presets_load_timm_checkpoints(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model("vit_tiny_patch16_224", img_size=64, embed_dim=128, depth=6, num_heads=4, patch_size=8)
    path = tmp_path / "micro.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = build_model("micro", {"depth": make_task("depth")}, img_size=32, pretrained=str(path))
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert model.backbone.vit.pos_embed.shape == (1, 17, 128)  # resampled from 8x8 to 4x4 + class token
    tagged = "vit_tiny_patch16_224.augreg_in21k"
    bb = build_backbone(tagged, 64, pretrained=str(path), embed_dim=128, depth=6, num_heads=4, patch_size=8)
    assert torch.equal(bb.vit.norm.weight, src.norm.weight)
    check_model(tagged, 224, pretrained=str(path))  # the CLI's check before training accepts name + file
    with pytest.raises(MtlkitError, match="--pretrained PATH"):
        check_model(tagged, 224)
    # a run's model is rebuilt at random init on purpose before its own weights are loaded
    assert build_backbone(tagged, 32, pretrained=False, depth=1).vit.pos_embed.shape == (1, 5, 192)
    with pytest.raises(MtlkitError, match="never downloads"):
        build_backbone(tagged, 32, pretrained=True)


def test_bad_checkpoints_fail_with_one_line(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    kw = dict(embed_dim=32, depth=2, num_heads=2, patch_size=8)
    src = timm.create_model("vit_base_patch16_224", img_size=32, **kw)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "blocks.1.norm2.weight"}, str(partial))
    with pytest.raises(MtlkitError, match=r"lacks 1 weights .*blocks\.1\.norm2\.weight.*mtlkit models --check"):
        build_backbone("vit_base_patch16_224", 32, pretrained=str(partial), **kw)
    with pytest.raises(MtlkitError, match="does not fit model") as err:
        build_backbone("vit_base_patch16_224", 32, pretrained=str(partial), **{**kw, "embed_dim": 64})
    assert "\n" not in str(err.value)
    other = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(other))
    with pytest.raises(MtlkitError, match="lacks"):
        build_backbone("vit_base_patch16_224", 32, pretrained=str(other), **kw)
    with pytest.raises(MtlkitError, match="checkpoint not found"):
        build_backbone("vit_base_patch16_224", 32, pretrained=str(tmp_path / "nope.safetensors"), **kw)


def test_models_check_prints_missing_and_unexpected_keys(tmp_path: Path, capsys) -> None:
    import timm
    from safetensors.torch import save_file

    state = timm.create_model("resnet18").state_dict()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if k != "layer4.1.bn2.bias"}, str(path))
    assert cli_main(["models", "--check", "resnet18", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["missing (1): layer4.1.bn2.bias", "unexpected (2): fc.bias, fc.weight"]
    hrnet = tmp_path / "hrnet.safetensors"  # a family whose features_only arguments the full model lacks
    save_file({k: v.contiguous() for k, v in timm.create_model("hrnet_w18_small").state_dict().items()}, str(hrnet))
    assert cli_main(["models", "--check", "hrnet_w18_small", str(hrnet)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "missing (0): -"


def test_train_refuses_a_network_only_name_before_any_data(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = cli_main(["train", "--dataset", "tiny-random", "--model", "vit_base_patch16_224.augreg_in21k",
                   "--iters", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--pretrained PATH" in err
    assert not out.exists()


def test_cli_trains_a_timm_cnn_from_a_checkpoint_and_evaluates_the_run(tmp_path: Path, capsys) -> None:
    import timm
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    src = timm.create_model("resnet10t")  # the smallest timm ResNet (5M): CPU seconds
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    run = tmp_path / "run"
    rc = cli_main(["train", "--dataset", "tiny-random", "--image-size", "16", "--model", "resnet10t",
                   "--tasks", "depth", "--pretrained", str(path), "--iters", "2", "--batch-size", "4",
                   "--out", str(run), "--no-progress", "--lr", "1e-12", "--weight-decay", "0"])
    assert rc == 0, capsys.readouterr().err
    saved = load_file(str(run / "model.safetensors"))
    # the backbone started from the file (an lr of 1e-12 leaves it there): stem and last conv as timm wrote them
    torch.testing.assert_close(saved["backbone.model.conv1.0.weight"], src.conv1[0].weight, rtol=0, atol=1e-9)
    torch.testing.assert_close(saved["backbone.model.layer4.0.conv2.weight"], src.layer4[0].conv2.weight,
                               rtol=0, atol=1e-9)
    assert cli_main(["eval", str(run), "--batch-size", "8", "--device", "cpu"]) == 0
