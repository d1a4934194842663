"""Tiny models and random batches for the DTME tests (a 4-block, 32-dim ViT on 16x16 images: 5 tokens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkit.models import build_model
from mtlkit.tasks import make_task


def tiny_tasks(n: int = 3) -> dict:
    tasks = {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth"), "normals": make_task("normals")}
    return dict(list(tasks.items())[:n])


def tiny_model(tasks: dict, head: str = "linear", seed: int = 0, depth: int = 4):
    torch.manual_seed(seed)
    return build_model("micro", tasks, 16, head=head, embed_dim=32, depth=depth, num_heads=2)


def random_batch(b: int = 4, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "semseg": torch.randint(0, 3, (b, size, size), generator=g),
        "depth": torch.rand(b, 1, size, size, generator=g) + 0.1,
        "normals": F.normalize(torch.randn(b, 3, size, size, generator=g), dim=1),
    }


# --------------------------------------------------------------------------- a model with known conflict rates
class _FixedTokens(torch.nn.Module):
    """A block whose output is fixed tokens (N, D), whatever its input: no gradient flows to earlier layers,
    so the gradient w.r.t. a layer's tokens is exactly what the readout of that layer puts there."""

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("tokens", tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.tokens.shape[0]
        return self.tokens.expand(x.shape[0], -1, -1) + 0 * x[:, :n]


class ConstructedBackbone(torch.nn.Module):
    """Backbone-adapter interface (embed, blocks, tokens_to_map, out_indices, ...) around fixed-token blocks.

    Layer l's tokens are multiples of the axis e_l: their covariance has rank 1, so the range space is
    span(e_l) and the null space the other axes, whatever r.
    """

    num_prefix_tokens = 0
    grid = None

    def __init__(self, depth: int = 4, dim: int = 4) -> None:
        super().__init__()
        self.embed_dim = dim
        self.scale = torch.nn.Parameter(torch.ones(()))  # one parameter, so the model has a device and dtype
        blocks = []
        for layer in range(depth):
            t = torch.zeros(3, dim)
            t[:, layer % dim] = torch.tensor([2.0, 1.0, 3.0])
            blocks.append(_FixedTokens(t))
        self.blocks = torch.nn.ModuleList(blocks)
        self.out_indices = tuple(range(depth))

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * len(self.out_indices)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 3, self.embed_dim) * self.scale

    def tokens_to_map(self, tokens: torch.Tensor, index: int) -> torch.Tensor:
        return tokens

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, feats = self.embed(x), []
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            feats.append(self.tokens_to_map(h, i))
        return feats

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        return []


class _Readout(torch.nn.Module):
    """Prediction Σ_l Σ_n <X_l[n], V[l, n]> per sample: ∂(mean loss)/∂X_l[b, n] = V[l, n] / B."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("v", v)  # (L, N, D)

    def forward(self, feats: list[torch.Tensor], size) -> torch.Tensor:
        return sum((f * self.v[i]).sum(dim=(1, 2)) for i, f in enumerate(feats))


class _MeanLoss:
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.mean()


def _e(i: int) -> torch.Tensor:
    return torch.eye(4)[i]


#: per layer (axis e_l) the two tasks' token gradients, three tokens each, and the rates they give:
#: layer 0: range signs differ at every token, null parts agree      -> range 1,   null 0
#: layer 1: range parts agree, null parts opposite                   -> range 0,   null 1
#: layer 2: tokens 0, 1 conflict in the range, token 2 in the null    -> range 2/3, null 1/3
#: layer 3: token 0 conflicts in the range, tokens 1, 2 in the null   -> range 1/3, null 2/3
KNOWN_RANGE_RATES = [1.0, 0.0, 2 / 3, 1 / 3]
KNOWN_NULL_RATES = [0.0, 1.0, 1 / 3, 2 / 3]


def _known_gradients() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(4, 3, 4)
    b = torch.zeros(4, 3, 4)
    for n in range(3):
        a[0, n], b[0, n] = _e(0) + _e(1), -_e(0) + _e(1)
        a[1, n], b[1, n] = _e(1) + _e(2), _e(1) - _e(2)
    a[2] = _e(2) + _e(3)
    b[2, 0] = b[2, 1] = -_e(2) + _e(3)
    b[2, 2] = _e(2) - _e(3)
    a[3] = _e(3) + _e(0)
    b[3, 0] = -_e(3) + _e(0)
    b[3, 1] = b[3, 2] = _e(3) - _e(0)
    return a, b


def constructed_model():
    """(model, tasks, batches) with layer-wise range / null conflict rates KNOWN_RANGE_RATES / KNOWN_NULL_RATES."""
    from mtlkit.models import MultiTaskModel

    va, vb = _known_gradients()
    model = MultiTaskModel(ConstructedBackbone(), {"a": _Readout(va), "b": _Readout(vb)}, (4, 4))
    tasks = {"a": _MeanLoss(), "b": _MeanLoss()}
    batches = [{"image": torch.randn(2, 3, 4, 4), "a": torch.zeros(2), "b": torch.zeros(2)} for _ in range(2)]
    return model, tasks, batches
