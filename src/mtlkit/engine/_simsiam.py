"""SimSiam pretraining of a CNN backbone (``mtlkit pretrain --model resnet18``; :mod:`mtlkit.engine.pretrain`).

SimSiam (Chen & He, *Exploring Simple Siamese Representation Learning*, CVPR 2021), following the official code
(github facebookresearch/simsiam at a7bc177):

- encoder (``simsiam/builder.py`` L24): the timm backbone with global average pooling and no classifier
  (``num_classes=0``); timm's ResNets zero-initialise the last BN of each residual block (``zero_init_last``), as
  the official ``zero_init_residual=True``.
- projector (L27-36): 3-layer MLP, ``Linear(C, C, no bias) BN ReLU Linear(C, C, no bias) BN ReLU Linear(C, dim)
  BN(affine=False)`` with C the encoder's width; the official last Linear has a frozen bias before the BN, which
  the BN removes, so ours has none.
- predictor (L39-42): 2-layer bottleneck ``Linear(dim, pred_dim, no bias) BN ReLU Linear(pred_dim, dim)``.
- loss (builder.py L55-61, ``main_simsiam.py`` L295): ``-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2``, each view
  through the encoder separately (BN statistics per view).
- optimiser (``main_simsiam.py`` L157, L190-201, L359-366 and the README's ``--fix-pred-lr``): SGD, momentum 0.9,
  weight decay 1e-4 on every parameter, ``lr = base_lr x batch / 256`` with base 0.05, half-cycle cosine to 0
  (per step here, per epoch there), the predictor at the constant initial lr.
- augmentations (``main_simsiam.py`` L229-239, ``simsiam/loader.py`` L11-32), two independent views per image:
  RandomResizedCrop scale (0.2, 1), ratio (3/4, 4/3); ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (its four
  ops in a random order per image, as torchvision); RandomGrayscale p 0.2; Gaussian blur sigma U(0.1, 2) with
  p 0.5; horizontal flip; ImageNet normalisation.

Our choices (CPU scale, stated once): 64 x 64 scenes from the same synthetic stream as MAE (no decoded photos), the
augmentations on batched tensors (crop, resize and flip as one bilinear ``grid_sample``; the blur sigma scaled
by image size / 224, the paper's crop size, and applied as a reflect-padded separable Gaussian); projector
output ``dim`` 512 and predictor bottleneck 128 (the paper's 2048 / 512 for ResNet-50, same 4:1 ratio); the
encoder at its classification stride (the downstream ResNet is dilated to stride 8 by ``mtlkit train``, which
changes no weight's shape); 600 steps of batch 64 (the paper: 100-800 epochs of ImageNet, batch 512).
The saved ``state_dict`` is the timm encoder's (``num_classes=0``): ``--pretrained`` loads it like any timm
checkpoint of that architecture.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError

OBJECTIVE = "SimSiam (Chen & He 2021): negative cosine of predictor output and stop-gradient projection, 2 views"
AUGMENTATION = ("2 views: RandomResizedCrop(0.2, 1) + hflip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, "
                "Gaussian blur sigma U(0.1, 2) x size/224 p 0.5")
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L") in the official (PIL) pipeline


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``-(cos(p1, sg(z2)).mean() + cos(p2, sg(z1)).mean()) / 2`` (main_simsiam.py L295): in [-1, 1], -1 when each
    prediction points along the other view's projection; no gradient reaches ``z``."""
    cos = F.cosine_similarity
    return -(cos(p1, z2.detach(), dim=1).mean() + cos(p2, z1.detach(), dim=1).mean()) * 0.5


class SimSiam(nn.Module):
    """A timm encoder (pooled features, ``self.encoder``) + SimSiam's projector and predictor."""

    def __init__(self, encoder: nn.Module, dim: int = 512, pred_dim: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        c = int(encoder.num_features)
        self.projector = nn.Sequential(
            nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Linear(c, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        """-> (p1, p2, z1, z2) with z detached (builder.py L55-61)."""
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        return self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach()


def build_simsiam(model: str, image_size: int, dim: int = 512, pred_dim: int = 128) -> SimSiam:
    """The timm CNN named ``model`` (``num_classes=0``: pooled features) wrapped with the projector and predictor."""
    from mtlkit.models.backbones import VIT_PRESETS, resolve
    from mtlkit.models.backbones._timm import timm_family

    if model in VIT_PRESETS:
        raise MtlkitError(f"objective simsiam pretrains CNN backbones; {model!r} is a ViT preset: use --objective mae")
    arch, kw = resolve(model)
    fam = timm_family(arch)
    if fam is not None and fam.name in ("vit", "samvit"):
        raise MtlkitError(f"objective simsiam pretrains CNN backbones; {model!r} is a ViT: pretrain a ViT preset "
                          "(micro, tiny, ...) with --objective mae")
    import timm
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch)
    if pcfg is not None and pcfg.fixed_input_size:
        kw["img_size"] = image_size
    try:
        encoder = timm.create_model(arch, num_classes=0, **kw)
    except (TypeError, AssertionError, ValueError) as e:
        raise MtlkitError(f"cannot build model {model!r} for SimSiam at image size {image_size}: {e}") from e
    if not hasattr(encoder, "num_features"):
        raise MtlkitError(f"model {model!r} has no pooled feature width (num_features); SimSiam needs one")
    return SimSiam(encoder, dim, pred_dim)


# ----------------------------------------------------------------------------- augmentations on tensors
def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def crop_boxes(n: int, size: tuple[int, int], g: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
               attempts: int = 10) -> torch.Tensor:
    """torchvision ``RandomResizedCrop.get_params`` for ``n`` images: (n, 4) integer boxes (top, left, h, w); the
    first of ``attempts`` draws that fits, else the whole image (its fallback for an image whose ratio is inside
    ``ratio``)."""
    height, width = size
    area = height * width
    target = area * _uniform(n * attempts, scale[0], scale[1], g).view(n, attempts)
    aspect = torch.exp(_uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), g)).view(n, attempts)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    u = torch.rand(n, 2, generator=g)
    boxes = torch.zeros(n, 4)
    for k in range(n):
        if first[k] < 0:
            boxes[k] = torch.tensor([0.0, 0.0, height, width])
            continue
        hk, wk = h[k, first[k]], w[k, first[k]]
        top = torch.floor(u[k, 0] * (height - hk + 1))
        left = torch.floor(u[k, 1] * (width - wk + 1))
        boxes[k] = torch.stack([top, left, hk, wk])
    return boxes


def crop_resize_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image to its box (top, left, h, w), resize bilinearly back to the image size, mirror where
    ``flip``: one ``grid_sample`` (align_corners=False maps output pixel centres onto the box's pixel grid)."""
    n, _, height, width = x.shape
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = (w / width) * torch.where(flip, -1.0, 1.0)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f.view(-1, 1, 1, 1) * a + (1 - f.view(-1, 1, 1, 1)) * b).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue`` on RGB in [0, 1]: hue (HSV) rotated by ``shift`` (fraction of a turn)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eqc, torch.ones_like(maxc), maxc)
    crd = torch.where(eqc, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.fmod(h + shift.view(-1, 1, 1) + 1.0, 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    sel = torch.stack([i == k for k in range(6)], 1).to(x.dtype)  # (n, 6, H, W)
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = [sum(sel[:, k] * table[k][c] for k in range(6)) for c in range(3)]
    return torch.stack(out, 1)


def color_jitter(x: torch.Tensor, g: torch.Generator, strength=(0.4, 0.4, 0.4, 0.1), p: float = 0.8) -> torch.Tensor:
    """``RandomApply([ColorJitter(b, c, s, h)], p)``: brightness, contrast, saturation, hue factors drawn per image,
    applied in a random order per image (torchvision's ``randperm(4)``)."""
    n = x.shape[0]
    bri, con, sat, hue = strength
    apply = torch.rand(n, generator=g) < p
    factors = [_uniform(n, 1 - bri, 1 + bri, g), _uniform(n, 1 - con, 1 + con, g), _uniform(n, 1 - sat, 1 + sat, g),
               _uniform(n, -hue, hue, g)]
    order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
    x = x.clone()
    for pos in range(4):
        for op in range(4):
            sel = apply & (order[:, pos] == op)
            if not sel.any():
                continue
            xs, f = x[sel], factors[op][sel]
            if op == 0:
                xs = (xs * f.view(-1, 1, 1, 1)).clamp(0, 1)
            elif op == 1:
                xs = _blend(xs, _gray(xs).mean(dim=(1, 2, 3), keepdim=True), f)
            elif op == 2:
                xs = _blend(xs, _gray(xs), f)
            else:
                xs = adjust_hue(xs, f)
            x[sel] = xs
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian of per-image ``sigma`` (pixels), radius ceil(3 sigma_max), reflect padding."""
    n, c, height, width = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, height - 1, width - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, K)
    y = F.pad(x.reshape(1, n * c, height, width), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, height, width)


def simsiam_view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One augmented view of images ``x`` (N, 3, H, W) in [0, 1] -> ImageNet-normalised (main_simsiam.py L229-239;
    the flip, last there, is drawn with the crop: it commutes with the colour ops and the symmetric blur)."""
    from mtlkit.data._base import IMAGENET_MEAN, IMAGENET_STD

    n, _, height, width = x.shape
    boxes = crop_boxes(n, (height, width), g)
    flip = torch.rand(n, generator=g) < 0.5
    x = crop_resize_flip(x, boxes, flip)
    x = color_jitter(x, g)
    gray = torch.rand(n, generator=g) < 0.2
    x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    blur = torch.rand(n, generator=g) < 0.5
    sigma = _uniform(n, 0.1, 2.0, g) * (max(height, width) / 224.0)
    if blur.any():
        x = torch.where(blur.view(-1, 1, 1, 1), gaussian_blur(x, sigma), x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- training
def train_simsiam(cfg: Any, images: Callable[[int], torch.Tensor], schedule: Callable[[int], float],
                  progress: bool = True) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], float]:
    """``cfg.steps`` SimSiam steps on ``images(step)`` ((B, 3, H, W) in [0, 1]); ``schedule(step)``: the base lr
    ``cfg.lr`` under the cosine schedule; every lr is scaled by batch / 256, the predictor's fixed at ``cfg.lr``.

    Returns (the encoder's timm state_dict, the loss curve every ``cfg.log_every`` steps, seconds)."""
    torch.manual_seed(cfg.seed)
    model = build_simsiam(cfg.model, cfg.image_size, cfg.proj_dim, cfg.pred_dim)
    gen = torch.Generator().manual_seed(cfg.seed)
    scale = cfg.batch_size / 256
    init_lr = cfg.lr * scale
    opt = torch.optim.SGD([{"params": list(model.encoder.parameters()) + list(model.projector.parameters()),
                            "fix_lr": False},
                           {"params": model.predictor.parameters(), "fix_lr": True}],
                          lr=init_lr, momentum=0.9, weight_decay=cfg.weight_decay)
    from mtlkit.engine._pretrain_loop import run_steps

    model.train()
    curve, seconds = run_steps(cfg, opt, lambda step, g: init_lr if g["fix_lr"] else schedule(step) * scale,
                               lambda step: _step_loss(model, images(step), gen), progress)
    state = {k: v.detach().contiguous().clone() for k, v in model.encoder.state_dict().items()}
    return state, curve, seconds


def _step_loss(model: SimSiam, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x1, x2 = simsiam_view(x, gen), simsiam_view(x, gen)
    return simsiam_loss(*model(x1, x2))



__all__ = ["SimSiam", "build_simsiam", "color_jitter", "crop_boxes", "crop_resize_flip", "gaussian_blur",
           "simsiam_loss", "simsiam_view", "train_simsiam"]
