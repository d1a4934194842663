"""Test-local backbones (tiny timm models behind the mtlkit backbone contract) and synthetic batches.

Until the timm backbones land in mtlkit.models, these wrappers give the contract the architectures build
against: ``forward(x) -> list[maps]`` and ``out_channels``; ViTs also ``embed``, ``blocks``, ``norm``,
``num_prefix_tokens``, ``patch_size`` and ``grid``. timm is imported lazily (inside the constructors).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlkit.data.synthetic._scene import NUM_CLASSES, NUM_PARTS
from mtlkit.tasks import make_task

NYUD = {"semseg": NUM_CLASSES, "depth": 1, "normals": 3, "edge": 1}
PASCAL = {"semseg": NUM_CLASSES, "parts": NUM_PARTS, "saliency": 1, "normals": 3, "edge": 1}
TASK_SETS = {"nyud": NYUD, "pascal": PASCAL}


class TimmCNN(nn.Module):
    """A timm ``features_only`` CNN."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
        self.out_channels = self.model.feature_info.channels()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


class TimmViT(nn.Module):
    """A timm VisionTransformer returning the maps of blocks L/4, L/2, 3L/4 and the normed last one."""

    def __init__(self, name: str | None = None, img_size=(64, 64), **kwargs) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import VisionTransformer

        if name is None:
            self.model = VisionTransformer(img_size=img_size, num_classes=0, **kwargs)
        else:
            self.model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
        d = len(self.model.blocks)
        self.out_indices = [d // 4 - 1, d // 2 - 1, 3 * d // 4 - 1, d - 1]
        self.blocks = self.model.blocks
        self.norm = self.model.norm
        self.num_prefix_tokens = self.model.num_prefix_tokens
        self.patch_size = self.model.patch_embed.patch_size
        self.grid = self.model.patch_embed.grid_size
        self.out_channels = [self.model.embed_dim] * 4

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def tokens_to_map(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if index == len(self.blocks) - 1:
            x = self.norm(x)
        x = x[:, self.num_prefix_tokens :]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x)
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.out_indices:
                out.append(self.tokens_to_map(x, i))
        return out


def tiny_vit(size: int = 64, **kw) -> TimmViT:
    """A 4-block, 64-wide timm ViT with 8x8 patches."""
    args = dict(patch_size=8, embed_dim=64, depth=4, num_heads=4)
    args.update(kw)
    return TimmViT(img_size=(size, size), **args)


def mtlkit_vit(size: int = 64):
    """mtlkit's ViT backbone (the micro preset, a timm VisionTransformer: 128 wide, 8x8 patches; 4 blocks here)."""
    from mtlkit.models import build_backbone

    return build_backbone("micro", size, depth=4)


def make_tasks(channels: dict[str, int]) -> dict:
    params = {"semseg": {"num_classes": channels.get("semseg", NUM_CLASSES)}, "parts": {"num_classes": NUM_PARTS}}
    return {t: make_task(t, **params.get(t, {})) for t in channels}


def make_batch(channels: dict[str, int], b: int = 2, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic batch whose targets depend on the image (so a few steps can fit it)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, 3, size, size, generator=g)
    base = img.mean(1, keepdim=True)
    batch: dict[str, torch.Tensor] = {"image": img}
    for t, c in channels.items():
        if t in ("semseg", "parts"):
            lab = (torch.sigmoid(base[:, 0]) * c).long().clamp(0, c - 1)
            lab[:, :2] = 255
            batch[t] = lab
        elif t == "depth":
            batch[t] = base.sigmoid() + 0.5
        elif t == "normals":
            batch[t] = torch.nn.functional.normalize(img[:, :3] + 0.1, dim=1)
        else:  # edge, saliency
            batch[t] = (base > 0.3).float()
    return batch


def grads_per_task(model, batch: dict, tasks: dict) -> dict[str, dict[int, torch.Tensor | None]]:
    """{task: {id(param): grad of that task's loss (None when unreached)}} from one forward."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(batch["image"])
    losses = model.task_losses(out, batch, tasks)
    result = {}
    names = list(losses)
    for i, t in enumerate(names):
        gs = torch.autograd.grad(losses[t], params, retain_graph=i < len(names) - 1, allow_unused=True)
        result[t] = {id(p): g for p, g in zip(params, gs, strict=True)}
    return result


def reached(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


def check_split(model, batch: dict, tasks: dict) -> None:
    """shared / task-specific parameters partition the trainable ones; a task's loss never reaches another
    task's specific parameters and reaches some of its own; the shared ones get gradient."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    shared = {id(p) for p in model.shared_parameters()}
    own = {t: {id(p) for p in model.task_parameters(t)} for t in model.tasks}
    assert shared, "no shared parameters"
    union = set(shared)
    for t in model.tasks:
        assert own[t], f"task {t} has no parameters of its own"
        assert not (own[t] & union), f"task {t}'s parameters overlap shared or another task's"
        union |= own[t]
    assert union == trainable
    last = {id(p) for p in model.last_shared_parameters()}
    assert last and last <= shared
    grads = grads_per_task(model, batch, tasks)
    for t, g in grads.items():
        for other in model.tasks:
            hit = [i for i in own[other] if reached(g[i])]
            if other == t:
                assert hit, f"task {t}'s loss reaches none of its own parameters"
            else:
                assert not hit, f"task {t}'s loss moves {len(hit)} parameters of task {other}"
        assert any(reached(g[i]) for i in shared), f"task {t}'s loss reaches no shared parameter"


def fit_steps(model, batch: dict, tasks: dict, steps: int = 6, lr: float = 1e-3) -> tuple[float, float]:
    """Adam on the plain sum of ``task_losses`` on one batch: (first loss, last loss)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    values = []
    for _ in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = sum(model.task_losses(model(batch["image"]), batch, tasks).values())
        values.append(float(loss.detach()))
        loss.backward()
        opt.step()
    return values[0], values[-1]


def check_cut(model, batch: dict, tasks: dict) -> None:
    """The balancing cut (``forward(..., return_features=True)``): every parameter between a task's loss and
    the cut is that task's own, and every shared parameter lies before the cut."""
    from mtlkit.balancing._grads import flatten_features, graph_leaves

    out, cut = model(batch["image"], return_features=True)
    losses = model.task_losses(out, batch, tasks)
    shared = {id(p) for p in model.shared_parameters()}
    if cut is None:
        assert not model.has_shared_representation
        return
    feats, _ = flatten_features(cut)
    assert feats
    for t, loss in losses.items():
        after = {id(p) for p in graph_leaves([loss], stop=feats) if p.requires_grad}
        own = {id(p) for p in model.task_parameters(t)}
        assert after <= own, f"{len(after - own)} non-task parameters after the cut for {t}"
    before = {id(p) for p in graph_leaves(feats) if p.requires_grad}
    reached = set().union(*(graph_leaves([loss]) for loss in losses.values()))
    reached_ids = {id(p) for p in reached}
    assert shared & reached_ids <= before
