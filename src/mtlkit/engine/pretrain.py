"""``mtlkit pretrain``: self-supervised pretraining on a stream of synthetic scenes: MAE for the ViT presets,
SimSiam for CNNs (``--model resnet18``, :mod:`mtlkit.engine._simsiam`); ``--objective`` picks one explicitly.

MAE (He et al., *Masked Autoencoders Are Scalable Vision Learners*, CVPR 2022), following the official code
(github facebookresearch/mae, ``models_mae.py``):

- ``random_masking`` (models_mae.py L123-148): per-sample uniform noise, argsort, keep the first
  ``(1 - mask_ratio) * L`` patches (75% masked); ``mask`` is 1 on removed patches, in the original order.
- ``forward_encoder`` (L150-170): patch embedding + fixed 2-D sin-cos position embedding (``initialize_weights``,
  L67-91; ``util/pos_embed.py``) on the visible patches only, the class token, the ViT blocks and the final norm.
- ``forward_decoder`` (L172-198): a linear projection to the decoder width, a shared learnt mask token at the
  removed positions (unshuffled by ``ids_restore``), sin-cos position embedding, a few Transformer blocks, a norm
  and a linear prediction of each patch's pixels.
- ``forward_loss`` (L200-217) with ``norm_pix_loss=True``: MSE against per-patch normalised pixels
  (mean / unbiased variance over the patch, eps 1e-6), averaged over the masked patches only.
- Optimiser as ``main_pretrain.py``: AdamW, betas (0.9, 0.95), weight decay 0.05, linear warmup then cosine.

The encoder *is* timm's ``VisionTransformer`` of the preset (``--model micro``), so its ``state_dict`` is a timm
checkpoint: ``mtlkit train --model micro --pretrained <file>`` loads it through timm's own mechanism.

Our choices (CPU scale, stated once): a light decoder (width 64, 2 blocks, 4 heads; the paper's is 512 x 8);
a learning rate of 1e-3 for a few thousand steps (the paper's 1.5e-4 x batch / 256 is tuned for 800 epochs of
ImageNet); horizontal flips as the only augmentation (the scenes are freshly rendered, not crops of photos).
Data: ``images`` distinct scenes of mtlkit's synthetic generator (``sample_scene`` + ``render_scene``), drawn
from ``data_seed`` (1000 by default, disjoint from the seeds the benchmark datasets use), rendered as the stream
reaches them and cycled when ``steps x batch`` exceeds ``images``; images are ImageNet-normalised as in training.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtlkit.errors import MtlkitError

#: the defaults that differ by objective (a None field of PretrainConfig takes its objective's value)
OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mae": dict(steps=1000, lr=1.0e-3, min_lr=1.0e-5, weight_decay=0.05, warmup_steps=50),
    # main_simsiam.py: base lr 0.05 (x batch / 256), wd 1e-4, cosine to 0, no warmup; 600 steps: CPU budget
    "simsiam": dict(steps=600, lr=0.05, min_lr=0.0, weight_decay=1.0e-4, warmup_steps=0),
}
#: fields that only one objective reads (left out of the other's provenance)
OBJECTIVE_FIELDS = {"mae": ("betas", "mask_ratio", "norm_pix_loss", "decoder_dim", "decoder_depth", "decoder_heads"),
                    "simsiam": ("proj_dim", "pred_dim")}


@dataclass
class PretrainConfig:
    """Everything that determines a pretraining run (recorded in the provenance).

    ``objective``: ``auto`` = MAE for a ViT preset, SimSiam for any other (CNN) model. ``lr``: MAE's peak lr,
    SimSiam's base lr (x batch / 256)."""

    model: str = "micro"
    image_size: int = 64
    steps: int | None = None
    batch_size: int = 64
    lr: float | None = None
    min_lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    images: int = 6400
    data_seed: int = 1000
    seed: int = 0
    log_every: int = 50
    extra: dict[str, Any] = field(default_factory=dict)
    objective: str = "auto"
    proj_dim: int = 512
    pred_dim: int = 128

    def __post_init__(self) -> None:
        from mtlkit.models.backbones import VIT_PRESETS

        if self.objective == "auto":
            self.objective = "mae" if self.model in VIT_PRESETS else "simsiam"
        if self.objective not in OBJECTIVE_DEFAULTS:
            raise MtlkitError(f"unknown pretrain objective {self.objective!r}; choose mae (ViT presets) or simsiam "
                              "(CNNs), or leave it out")
        for k, v in OBJECTIVE_DEFAULTS[self.objective].items():
            if getattr(self, k) is None:
                setattr(self, k, v)

    def check(self) -> None:
        from mtlkit.models.backbones import VIT_PRESETS

        if self.objective == "mae" and self.model not in VIT_PRESETS:
            raise MtlkitError(f"objective mae pretrains the ViT presets ({', '.join(VIT_PRESETS)}), not "
                              f"{self.model!r}: use --objective simsiam for a CNN (or leave --objective out)")
        if self.objective == "simsiam" and self.model in VIT_PRESETS:
            raise MtlkitError(f"objective simsiam pretrains CNNs, not the ViT preset {self.model!r}: use "
                              "--objective mae (or leave --objective out)")
        if not 0.0 < self.mask_ratio < 1.0:
            raise MtlkitError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}; MAE uses 0.75")
        for name in ("steps", "batch_size", "images", "image_size", "decoder_dim", "decoder_depth", "decoder_heads",
                     "proj_dim", "pred_dim"):
            if int(getattr(self, name)) < 1:
                raise MtlkitError(f"pretrain {name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_dim % self.decoder_heads:
            raise MtlkitError(f"decoder_dim {self.decoder_dim} must be divisible by decoder_heads {self.decoder_heads}")


# ----------------------------------------------------------------------------- position embedding (MAE util)
def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE ``get_1d_sincos_pos_embed_from_grid``: (M,) positions -> (M, dim) = [sin, cos]."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> np.ndarray:
    """MAE ``get_2d_sincos_pos_embed`` for an (h, w) grid: half the channels encode the row, half the column
    (``np.meshgrid(grid_w, grid_h)``: the first half from the column index, as the official code); a zero row
    for the class token."""
    gh, gw = np.arange(grid[0], dtype=np.float32), np.arange(grid[1], dtype=np.float32)
    g = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, -1)
    emb = np.concatenate([sincos_1d(dim // 2, g[0]), sincos_1d(dim // 2, g[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb


# ----------------------------------------------------------------------------- model
def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, L, p*p*3), patches in row-major order, pixels (p, q, c) as MAE's ``patchify``."""
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def random_masking(x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
    """MAE ``random_masking``: keep ``int(L * (1 - mask_ratio))`` patches per sample.

    Returns (visible tokens, mask (N, L) with 1 = removed, ids_restore)."""
    n, length, d = x.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, device=x.device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True):
    """MAE ``forward_loss``: per-patch MSE (against normalised pixels with ``norm_pix``) over masked patches."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


class MaskedAutoencoder(nn.Module):
    """A timm ``VisionTransformer`` encoder (``self.encoder``) + MAE's light decoder."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.encoder = encoder
        self.cfg = cfg
        pe = encoder.patch_embed
        self.patch = int(pe.patch_size[0])
        self.grid = (int(pe.grid_size[0]), int(pe.grid_size[1]))
        dim, dd = int(encoder.embed_dim), int(cfg.decoder_dim)
        self.decoder_embed = nn.Linear(dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", torch.from_numpy(sincos_2d(dd, self.grid)).float()[None])
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd)
        self.decoder_pred = nn.Linear(dd, self.patch * self.patch * 3)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE ``initialize_weights``: fixed sin-cos encoder position embedding, xavier-uniform patch embedding
        and linear layers, N(0, 0.02) class and mask tokens, unit / zero LayerNorms."""
        enc = self.encoder
        with torch.no_grad():
            enc.pos_embed.copy_(torch.from_numpy(sincos_2d(enc.pos_embed.shape[-1], self.grid)).float()[None])
        enc.pos_embed.requires_grad_(False)
        w = enc.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(enc.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_encoder(self, imgs: torch.Tensor, generator: torch.Generator | None = None):
        enc = self.encoder
        x = enc.patch_embed(imgs)
        x = x + enc.pos_embed[:, 1:, :]
        x, mask, ids_restore = random_masking(x, self.cfg.mask_ratio, generator)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = enc.norm_pre(torch.cat([cls, x], dim=1))
        for blk in enc.blocks:
            x = blk(x)
        return enc.norm(x), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x)
        n, length = ids_restore.shape
        tokens = torch.cat([x[:, 1:, :], self.mask_token.expand(n, length + 1 - x.shape[1], -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None):
        """-> (loss, pred (N, L, p*p*3), mask (N, L))."""
        latent, mask, ids_restore = self.forward_encoder(imgs, generator)
        pred = self.forward_decoder(latent, ids_restore)
        loss = masked_patch_loss(pred, patchify(imgs, self.patch), mask, self.cfg.norm_pix_loss)
        return loss, pred, mask


def build_mae(cfg: PretrainConfig) -> MaskedAutoencoder:
    """The preset's timm ViT (no classifier) wrapped with the MAE decoder."""
    from mtlkit.models.backbones import VIT_PRESETS

    if cfg.model not in VIT_PRESETS:
        raise MtlkitError(f"pretrain supports the ViT presets {', '.join(VIT_PRESETS)}; got model {cfg.model!r}")
    import timm

    p = VIT_PRESETS[cfg.model]
    if cfg.image_size % p.patch_size:
        raise MtlkitError(f"image_size {cfg.image_size} is not a multiple of the patch size {p.patch_size} of "
                          f"{cfg.model!r}")
    encoder = timm.create_model(p.arch, img_size=cfg.image_size, num_classes=0, **p.kwargs)
    return MaskedAutoencoder(encoder, cfg)


# ----------------------------------------------------------------------------- data stream
class SceneStream:
    """``images`` distinct synthetic scenes (seeded by ``data_seed``), rendered as the stream reaches them and
    kept as uint8; batch ``s`` holds scenes ``s*B .. s*B+B-1`` (mod ``images``), randomly h-flipped."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        size = cfg.image_size
        self.store = torch.zeros(cfg.images, 3, size, size, dtype=torch.uint8)
        self.rendered = 0

    def _ensure(self, upto: int) -> None:
        from mtlkit.data.synthetic._generate import render_range

        if upto <= self.rendered:
            return
        chunk = max(upto - self.rendered, 256)
        end = min(self.cfg.images, self.rendered + chunk)
        size = (self.cfg.image_size, self.cfg.image_size)
        arr = render_range(self.cfg.data_seed, "train", self.rendered, end, size)["image"]
        self.store[self.rendered:end] = torch.from_numpy(arr).permute(0, 3, 1, 2)
        self.rendered = end

    def raw(self, step: int) -> torch.Tensor:
        """Batch ``step`` as floats in [0, 1], not augmented (SimSiam draws its own views)."""
        b, n = self.cfg.batch_size, self.cfg.images
        idx = [(step * b + i) % n for i in range(b)]
        self._ensure(max(idx) + 1)
        return self.store[idx].float() / 255.0

    def batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        from mtlkit.data._base import IMAGENET_MEAN, IMAGENET_STD

        b, n = self.cfg.batch_size, self.cfg.images
        idx = [(step * b + i) % n for i in range(b)]
        self._ensure(max(idx) + 1)
        x = self.store[idx].float() / 255.0
        flip = torch.rand(b, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std


# ----------------------------------------------------------------------------- training
def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then half-cycle cosine to ``min_lr`` (MAE ``util/lr_sched.py``, per step)."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def command_line(cfg: PretrainConfig, out: str | Path) -> str:
    """The ``mtlkit pretrain`` command that reproduces ``cfg``."""
    base = PretrainConfig()
    defaults = PretrainConfig(model=cfg.model, objective=cfg.objective)  # the objective's defaults
    auto = PretrainConfig(model=cfg.model).objective
    parts = ["mtlkit", "pretrain"]
    for flag, key in PRETRAIN_FLAGS.items():
        v = getattr(cfg, key)
        ref = base.model if key == "model" else auto if key == "objective" else getattr(defaults, key)
        if v != ref:
            parts += [flag, str(v)]
    return shlex.join([*parts, "--out", str(out)])


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Train; write ``<out>/<model>_<objective>.safetensors`` (the timm encoder) and ``.json`` (provenance).

    Cached: when ``out`` already holds that checkpoint, made with the same config and scene generator, and its
    bytes match the recorded sha256, it is returned (``"cached": True``) without training, unless ``force``."""
    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hit = None if force else cached(cfg, out)
    if hit is not None:
        return hit
    if cfg.objective == "simsiam":
        from mtlkit.engine._simsiam import AUGMENTATION, OBJECTIVE, train_simsiam

        state, curve, seconds = train_simsiam(cfg, SceneStream(cfg).raw, lambda s: lr_at(s, cfg), progress)
        about = {"objective": OBJECTIVE, "format": f"timm {cfg.model} state_dict (num_classes=0), safetensors",
                 "augmentation": AUGMENTATION}
    else:
        state, curve, seconds = _train_mae(cfg, progress)
        about = {"objective": "masked autoencoder (He et al. 2022), norm-pixel MSE on masked patches",
                 "format": "timm VisionTransformer state_dict (num_classes=0), safetensors",
                 "augmentation": "hflip 0.5"}
    return _save(cfg, out, state, curve, seconds, about)


def _config_record(cfg: PretrainConfig) -> dict[str, Any]:
    """The provenance's ``config``: every field the objective reads (tuples as lists, as JSON stores them)."""
    other = [k for o, keys in OBJECTIVE_FIELDS.items() if o != cfg.objective for k in keys]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k not in other}


def cached(cfg: PretrainConfig, out: str | Path) -> dict[str, Any] | None:
    """The result of an earlier identical run in ``out`` (same config, same scene generator source, checkpoint
    bytes matching its sha256), or None."""
    from mtlkit.data.synthetic import GENERATOR_VERSION
    from mtlkit.data.synthetic._generate import _source_digest

    name = f"{cfg.model}_{cfg.objective}"
    ckpt, meta = Path(out) / f"{name}.safetensors", Path(out) / f"{name}.json"
    if not (ckpt.is_file() and meta.is_file()):
        return None
    try:
        prov = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    data = prov.get("data", {})
    if (prov.get("config") != _config_record(cfg) or data.get("generator_version") != GENERATOR_VERSION
            or data.get("source_digest") != _source_digest() or prov.get("sha256") != sha256_file(ckpt)):
        return None
    return {**prov, "checkpoint": str(ckpt), "provenance": str(meta), "cached": True}


def _train_mae(cfg: PretrainConfig, progress: bool) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], float]:
    """The MAE loop -> (encoder state_dict, loss curve, seconds)."""
    torch.manual_seed(cfg.seed)
    model = build_mae(cfg)
    stream = SceneStream(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or "token" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    from mtlkit.engine._pretrain_loop import run_steps

    model.train()
    curve, seconds = run_steps(cfg, opt, lambda step, g: lr_at(step, cfg),
                               lambda step: model(stream.batch(step, gen), gen)[0], progress)
    state = {k: v.detach().contiguous().clone() for k, v in model.encoder.state_dict().items()}
    return state, curve, seconds


def _save(cfg: PretrainConfig, out: Path, state: dict[str, torch.Tensor], curve: list[dict[str, float]],
          seconds: float, about: dict[str, str]) -> dict[str, Any]:
    """Write the checkpoint and its provenance JSON (``about``: objective, format, augmentation)."""
    from safetensors.torch import save_file

    from mtlkit.data.synthetic import GENERATOR_VERSION
    from mtlkit.data.synthetic._generate import _source_digest

    name = f"{cfg.model}_{cfg.objective}"
    ckpt = out / f"{name}.safetensors"
    # one metadata key only: safetensors writes a metadata map in hash order, so two keys make the file's
    # bytes (and its sha256) differ between identical runs; the provenance lives in the JSON beside it
    save_file(state, str(ckpt), metadata={"format": "pt"})
    provenance = {
        "objective": about["objective"],
        "checkpoint": ckpt.name,
        "sha256": sha256_file(ckpt),
        "format": about["format"],
        "config": _config_record(cfg),
        "seed": cfg.seed,
        "data": {"generator": "mtlkit.data.synthetic", "generator_version": GENERATOR_VERSION,
                 "source_digest": _source_digest(), "split": "train", "data_seed": cfg.data_seed,
                 "distinct_scenes": cfg.images, "images_seen": cfg.steps * cfg.batch_size,
                 "image_size": cfg.image_size, "normalization": "imagenet", "augmentation": about["augmentation"]},
        "command": command_line(cfg, out),
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss_first": curve[0]["loss"] if curve else None,
        "loss_last": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
    }
    (out / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return {**provenance, "checkpoint": str(ckpt), "provenance": str(out / f"{name}.json")}


# ----------------------------------------------------------------------------- CLI glue
PRETRAIN_FLAGS = {  # flag -> PretrainConfig field
    "--model": "model", "--image-size": "image_size", "--steps": "steps", "--batch-size": "batch_size",
    "--lr": "lr", "--weight-decay": "weight_decay", "--warmup-steps": "warmup_steps",
    "--mask-ratio": "mask_ratio", "--decoder-dim": "decoder_dim", "--decoder-depth": "decoder_depth",
    "--decoder-heads": "decoder_heads", "--images": "images", "--data-seed": "data_seed", "--seed": "seed",
    "--log-every": "log_every", "--objective": "objective", "--proj-dim": "proj_dim", "--pred-dim": "pred_dim",
}


def run_from_args(args: Any) -> int:
    values = {key: getattr(args, flag.lstrip("-").replace("-", "_"), None) for flag, key in PRETRAIN_FLAGS.items()}
    cfg = PretrainConfig(**{k: v for k, v in values.items() if v is not None})
    result = pretrain(cfg, args.out, progress=not args.no_progress, force=bool(getattr(args, "force", False)))
    print(f"checkpoint: {result['checkpoint']}  (sha256 {result['sha256'][:16]}..., {result['seconds']:.0f}s, "
          f"loss {result['loss_first']:.3f} -> {result['loss_last']:.3f})"
          + ("  cached: same config and data; --force retrains" if result.get("cached") else ""))
    print(f"provenance: {result['provenance']}")
    print(f"use it: mtlkit train --model {cfg.model} --image-size {cfg.image_size} --pretrained {result['checkpoint']}")
    return 0


__all__ = ["OBJECTIVE_DEFAULTS", "MaskedAutoencoder", "PretrainConfig", "build_mae", "cached", "masked_patch_loss",
           "patchify", "pretrain", "random_masking", "sincos_2d"]
