"""``mtlkit pretrain`` for CNNs (SimSiam): the loss on hand-computed inputs, the tensor augmentations against
torchvision, a few steps end to end whose checkpoint loads through ``--pretrained``, determinism, objective
dispatch and mismatch errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mtlkit.engine._simsiam import (
    SimSiam,
    adjust_hue,
    color_jitter,
    crop_boxes,
    crop_resize_flip,
    gaussian_blur,
    simsiam_loss,
    simsiam_view,
)
from mtlkit.engine.pretrain import PretrainConfig, command_line, pretrain, sha256_file
from mtlkit.errors import MtlkitError

TINY = dict(model="resnet18", image_size=32, steps=3, batch_size=4, images=4, log_every=1, proj_dim=16, pred_dim=8)


def test_loss_hand_values_and_stop_gradient() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert simsiam_loss(z, z, z, z).item() == pytest.approx(-1.0)  # p along z: the minimum
    assert simsiam_loss(-z, -z, z, z).item() == pytest.approx(1.0)
    p1 = torch.tensor([[1.0, 1.0], [0.0, 1.0]], requires_grad=True)  # cos 1/sqrt2 and 1 against z
    p2 = torch.tensor([[0.0, 3.0], [1.0, 0.0]], requires_grad=True)  # cos 0 and 0
    z1 = z.clone().requires_grad_(True)
    loss = simsiam_loss(p1, p2, z1, z.clone().requires_grad_(True))
    assert loss.item() == pytest.approx(-((1 / math.sqrt(2) + 1) / 2 + 0.0) / 2)
    loss.backward()
    assert z1.grad is None and p1.grad is not None  # the stop-gradient: only the predictions get gradients


def test_projector_and_predictor_shapes_follow_the_official_builder() -> None:
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    enc.num_features = 6
    m = SimSiam(enc, dim=10, pred_dim=4)
    lin = [x for x in m.projector if isinstance(x, torch.nn.Linear)]
    assert [tuple(x.weight.shape) for x in lin] == [(6, 6), (6, 6), (10, 6)] and all(x.bias is None for x in lin)
    assert not m.projector[-1].affine  # BN(dim, affine=False) closes the projector
    assert [tuple(x.weight.shape) for x in m.predictor if isinstance(x, torch.nn.Linear)] == [(4, 10), (10, 4)]
    p1, p2, z1, z2 = m(torch.randn(5, 12), torch.randn(5, 12))
    assert p1.shape == z1.shape == (5, 10) and not z1.requires_grad and p1.requires_grad


def test_crop_resize_flip_against_torchvision() -> None:
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(2, 3, 8, 8)
    whole = torch.tensor([[0.0, 0.0, 8, 8]] * 2)
    torch.testing.assert_close(crop_resize_flip(x, whole, torch.tensor([False, True])),
                               torch.stack([x[0], x[1].flip(-1)]), atol=1e-6, rtol=0)
    box = torch.tensor([[2.0, 1.0, 4, 6]] * 2)  # top 2, left 1, h 4, w 6 -> resized to 8 x 8
    ours = crop_resize_flip(x, box, torch.tensor([False, False]))
    ref = tvf.resized_crop(x, 2, 1, 4, 6, [8, 8], antialias=False)
    # equal away from the box's edge (there torchvision clamps to the crop, grid_sample reads the neighbours)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(500, (64, 64), g)
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    assert (boxes[:, 0] + boxes[:, 2] <= 64).all() and (boxes[:, 1] + boxes[:, 3] <= 64).all()
    assert area.min() >= 0.2 - 0.03 and area.max() <= 1.0 and 0.5 < area.mean() < 0.7  # U(0.2, 1): mean 0.6


def test_color_ops_match_torchvision() -> None:
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(3, 3, 5, 5)
    shift = torch.tensor([0.1, -0.07, 0.0])
    ref = torch.stack([tvf.adjust_hue(x[i], float(shift[i])) for i in range(3)])
    torch.testing.assert_close(adjust_hue(x, shift), ref, atol=1e-5, rtol=0)
    # one image, p=1: our jitter with its drawn factors equals torchvision's ops in the drawn order
    g = torch.Generator().manual_seed(3)
    out = color_jitter(x[:1], g, p=1.0)
    g = torch.Generator().manual_seed(3)
    torch.rand(1, generator=g)
    f = [0.6 + 0.8 * torch.rand(1, generator=g), 0.6 + 0.8 * torch.rand(1, generator=g),
         0.6 + 0.8 * torch.rand(1, generator=g), -0.1 + 0.2 * torch.rand(1, generator=g)]
    order = torch.argsort(torch.rand(1, 4, generator=g), dim=1)[0].tolist()
    ops = [tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue]
    ref = x[0]
    for op in order:
        ref = ops[op](ref, float(f[op]))
    # torchvision's grey weighs red 0.2989, ours (PIL's convert("L"), the official code's images) 0.299
    torch.testing.assert_close(out[0], ref, atol=2e-4, rtol=0)
    assert not torch.allclose(out[0], x[0], atol=1e-2)


def test_gaussian_blur_keeps_constants_and_the_mean() -> None:
    x = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([0.5, 1.5])), x)
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    out = gaussian_blur(img, torch.tensor([1.0]))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    t = torch.arange(-3.0, 4.0)
    k = torch.exp(-t**2 / 2)
    k = k / k.sum()  # separable: the centre is k0 * k0
    assert out[0, 0, 4, 4].item() == pytest.approx(float(k[3] ** 2), rel=1e-5)
    v = simsiam_view(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0))
    assert v.shape == (4, 3, 32, 32) and torch.isfinite(v).all()


def test_objective_dispatch_and_mismatch_errors() -> None:
    assert PretrainConfig().objective == "mae" and PretrainConfig().lr == 1e-3 and PretrainConfig().steps == 1000
    cnn = PretrainConfig(model="resnet18")
    assert (cnn.objective, cnn.lr, cnn.weight_decay, cnn.warmup_steps, cnn.min_lr) == ("simsiam", 0.05, 1e-4, 0, 0.0)
    with pytest.raises(MtlkitError, match="objective mae pretrains the ViT presets"):
        PretrainConfig(model="resnet18", objective="mae").check()
    with pytest.raises(MtlkitError, match="objective simsiam pretrains CNNs"):
        PretrainConfig(model="micro", objective="simsiam").check()
    with pytest.raises(MtlkitError, match="unknown pretrain objective 'byol'"):
        PretrainConfig(objective="byol")
    from mtlkit.engine._simsiam import build_simsiam

    with pytest.raises(MtlkitError, match="is a ViT"):
        build_simsiam("vit_tiny_patch16_224", 64)
    from mtlkit.cli import main

    assert main(["pretrain", "--model", "resnet18", "--objective", "mae", "--out", "/tmp/unused-simsiam"]) == 2
    # the command line records only what differs from the objective's defaults
    cmd = command_line(PretrainConfig(model="resnet18", steps=5), "o")
    assert cmd == "mtlkit pretrain --model resnet18 --steps 5 --out o"
    assert command_line(PretrainConfig(), "o") == "mtlkit pretrain --out o"


def test_few_steps_change_weights_and_load_through_pretrained(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from mtlkit.engine._simsiam import build_simsiam

    result = pretrain(PretrainConfig(**TINY), tmp_path, progress=False)
    ckpt = Path(result["checkpoint"])
    assert ckpt.name == "resnet18_simsiam.safetensors"
    prov = json.loads(Path(result["provenance"]).read_text())
    assert prov["sha256"] == sha256_file(ckpt) and prov["config"]["objective"] == "simsiam"
    assert "mask_ratio" not in prov["config"] and prov["config"]["proj_dim"] == 16
    assert [c["step"] for c in prov["loss_curve"]] == [1, 2, 3]
    assert all(-1.0 <= c["loss"] <= 1.0 for c in prov["loss_curve"])
    state = load_file(str(ckpt))
    assert "layer4.1.conv2.weight" in state and not any(k.startswith(("fc", "projector", "predictor")) for k in state)
    torch.manual_seed(0)  # the same init the run started from
    init = build_simsiam("resnet18", 32, 16, 8).encoder.state_dict()
    assert not torch.equal(init["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert not torch.equal(init["bn1.running_mean"], state["bn1.running_mean"])

    from mtlkit.models import build_model
    from mtlkit.tasks import make_task

    model = build_model("resnet18", {"depth": make_task("depth")}, 32, pretrained=str(ckpt))
    own = model.backbone.model.state_dict()
    for k in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_var"):
        assert torch.equal(own[k], state[k]), k
    from mtlkit.models.arch import build_arch_model

    mtan = build_arch_model("resnet18", {"depth": make_task("depth")}, 32, arch="mtan", pretrained=str(ckpt))
    own = {k.split("model.", 1)[-1]: v for k, v in mtan.state_dict().items() if "layer3.0.conv1.weight" in k}
    assert own and all(torch.equal(v, state["layer3.0.conv1.weight"]) for v in own.values())


def test_a_few_steps_on_fixed_views_lower_the_loss() -> None:
    from mtlkit.engine._simsiam import build_simsiam

    torch.manual_seed(0)
    model = build_simsiam("resnet18", 32, 16, 8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    x1, x2 = simsiam_view(x, g), simsiam_view(x, g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(6):
        loss = simsiam_loss(*model(x1, x2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.05, losses


def test_same_seed_same_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = PretrainConfig(**{**TINY, "steps": 2})
    a = load_file(pretrain(cfg, tmp_path / "a", progress=False)["checkpoint"])
    b = load_file(pretrain(cfg, tmp_path / "b", progress=False)["checkpoint"])
    for k in a:  # CPU kernels may reorder float sums between runs: equal to rounding, not bit for bit
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    c = load_file(pretrain(PretrainConfig(**{**TINY, "steps": 2, "seed": 1}), tmp_path / "c",
                           progress=False)["checkpoint"])
    assert not torch.allclose(a["layer1.0.conv1.weight"], c["layer1.0.conv1.weight"])


def test_an_identical_run_is_cached_and_force_or_a_change_retrains(tmp_path: Path) -> None:
    cfg = PretrainConfig(**{**TINY, "steps": 1})
    first = pretrain(cfg, tmp_path, progress=False)
    ckpt = Path(first["checkpoint"])
    stamp = ckpt.stat().st_mtime_ns
    again = pretrain(PretrainConfig(**{**TINY, "steps": 1}), tmp_path, progress=False)
    assert again["cached"] and again["sha256"] == first["sha256"] and ckpt.stat().st_mtime_ns == stamp
    assert "cached" not in pretrain(cfg, tmp_path, progress=False, force=True)
    assert "cached" not in pretrain(PretrainConfig(**{**TINY, "steps": 1, "seed": 1}), tmp_path, progress=False)
    raw = bytearray(ckpt.read_bytes())
    raw[-1] ^= 0xFF  # bytes that no longer match the recorded sha256
    ckpt.write_bytes(bytes(raw))
    assert "cached" not in pretrain(PretrainConfig(**{**TINY, "steps": 1, "seed": 1}), tmp_path, progress=False)
