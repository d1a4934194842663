"""Calibration: token covariance and token-space gradient conflicts of every block, over calibration batches.

Layer l's token set is X_l, the output tokens of block l: every token of the block's output, the prefix
tokens (the class token of a ViT) and the patch tokens; in an expanded model the task tokens TE appended
to the previous layer's output are left out (they are dropped after block l). These are the very tokens
that TM and TE of layer l act on (:class:`~mtlkit.dtme.ExpandedBackbone`).

Works on any multi-task model whose backbone exposes its transformer blocks as ``backbone.blocks`` (each
returning a token tensor (B, N, D)) and whose forward returns ``{task: prediction}``: the block outputs are
read with forward hooks, so the model's own forward is used unchanged. A model that runs the blocks
itself (TaskPrompter, whose blocks also carry its prompts) exposes parameterless taps instead:
``model.token_entry`` (called on the block-0 input tokens) and ``model.token_taps[l]`` (called on X_l).
On an expanded model (DTME / Recon, ``backbone.is_expanded``) the blocks after the fork hold one stream
per task: the covariance pools the
tokens of all streams, and task t's gradient is taken w.r.t. its own stream's tokens, so a pair of tasks
is compared at the same token of the same image (what the paper's Tab. 14 measures before and after
training). Before the fork all tasks share the one stream, as in an unexpanded model.

Two passes over the calibration set, as the paper times them separately (Tab. 6):

1. no gradients: every block's output tokens are added to a float64 streaming covariance; then each
   covariance is eigen-decomposed and split into range / null space (ratio ``r``).
2. for each batch the task losses are computed with every block's output recorded, and one
   ``autograd.grad`` per task gives ∂L_t/∂X_l for all layers at once (the input of the first block is made
   a leaf that requires grad, so only token paths are differentiated, no parameter gradients, and a frozen
   backbone works too). The gradients of layer l are projected on layer l's own eigenbasis and the
   conflicts counted.

Our choices (the paper does not say): all tokens of a block count, the class token included (its
gradient at the last block is zero, as the heads read only patch tokens; a zero product is no conflict);
the two passes each draw ``num_batches`` batches from a fresh iterator of ``batches`` (the same batches
when it is a list or a loader with a seeded shuffle); the model's buffers (e.g. BatchNorm running
statistics in the heads) are restored afterwards, so calibration leaves the model exactly as it was.
How many batches the paper uses depends on the dataset (App. B.3): see
:func:`~mtlkit.dtme.calibration_batches_for`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from mtlkit.dtme._conflicts import ConflictAccumulator
from mtlkit.dtme._result import LayerTokenSpace, TokenSpaceAnalysis
from mtlkit.dtme._tokenspace import TokenCovariance, eigh_descending, project, split_index, variance_captured
from mtlkit.errors import MtlkitError
from mtlkit.models.protocol import has_features

Batch = Mapping[str, Any]


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued accelerator work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def draw_batches(batches: Iterable[Batch], num_batches: int | None) -> Iterator[Batch]:
    """``num_batches`` batches from a fresh iterator; ``None`` = one pass (``len(batches)`` batches)."""
    if num_batches is None:
        try:
            num_batches = len(batches)  # type: ignore[arg-type]
        except TypeError:
            raise MtlkitError(
                "calibration over the whole training set needs a loader with a length; set a number of "
                "calibration batches instead"
            ) from None
    if num_batches < 1:
        raise MtlkitError(f"the number of calibration batches must be >= 1, got {num_batches}")
    it = iter(batches)
    for _ in range(num_batches):
        try:
            yield next(it)
        except StopIteration:
            return


def transformer_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The blocks of ``model.backbone`` (or of ``model`` itself); errors name what is missing. A model that
    runs the blocks itself (TaskPrompter) exposes taps on their outputs instead: ``model.token_taps``."""
    taps = getattr(model, "token_taps", None)
    if isinstance(taps, nn.ModuleList) and len(taps):
        return taps
    backbone = getattr(model, "backbone", model)
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise MtlkitError(
            f"{type(backbone).__name__} exposes no transformer blocks; token-space analysis needs a ViT backbone "
            "with `blocks` (timm's nn.Sequential or a ModuleList) whose blocks return (B, N, D) tokens"
        )
    return blocks


def stream_names(model: nn.Module) -> list[str] | None:
    """Task names of the per-task streams of an expanded backbone, in stream order (None: one shared stream,
    also for a wrapper with nothing attached, e.g. after ``rho=0``)."""
    backbone = getattr(model, "backbone", model)
    if not getattr(backbone, "is_expanded", False) or getattr(backbone, "fork_layer", None) is None:
        return None
    return list(backbone.task_names)


class _Layers:
    """Forward hooks that record every block's output and the token count N of the block-0 input, and
    cut X_l out of a block output: its first N tokens (TE tokens come after them), per stream."""

    def __init__(self, model: nn.Module, leaf_input: bool = False) -> None:
        self.model = model
        self.blocks = transformer_blocks(model)
        self.streams = stream_names(model)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.num_tokens = 0
        self.leaf_input = leaf_input

    def __enter__(self) -> _Layers:
        def start(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = _check_tokens(args[0], "the input of block 0")
            self.num_tokens = x.shape[1]
            if not self.leaf_input:
                return None
            # the token stream needs a graph even when the backbone is frozen; nothing before block 0 is needed
            return (x.detach().requires_grad_(True), *args[1:])

        def hook(index: int):
            def fn(module: nn.Module, args: Any, out: Any) -> None:
                self.outputs[index] = _check_tokens(out, f"the output of block {index}")

            return fn

        entry = getattr(self.model, "token_entry", None) if hasattr(self.model, "token_taps") else None
        self.handles = [(entry if entry is not None else self.blocks[0]).register_forward_pre_hook(start)]
        self.handles += [blk.register_forward_hook(hook(i)) for i, blk in enumerate(self.blocks)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def num_streams(self, out: torch.Tensor, batch: int) -> int:
        if out.shape[0] == batch:
            return 1
        if self.streams is None or out.shape[0] != batch * len(self.streams):
            raise MtlkitError(
                f"a block output has {out.shape[0]} sequences for a batch of {batch}: neither one shared stream "
                f"nor one per task stream ({self.streams})"
            )
        return len(self.streams)

    def tokens(self, out: torch.Tensor, batch: int) -> torch.Tensor:
        """X_l of all streams (S·B, N, D)."""
        self.num_streams(out, batch)  # one shared stream or one per task, nothing else
        return out[:, : self.num_tokens]

    def task_view(self, grad: torch.Tensor, batch: int, task: str) -> torch.Tensor:
        """Task ``task``'s part (B, N, D) of a gradient w.r.t. a block output: its own stream after the fork."""
        s = self.num_streams(grad, batch)
        if s == 1:
            return grad[:, : self.num_tokens]
        assert self.streams is not None
        if task not in self.streams:
            raise MtlkitError(f"task {task!r} has no stream in the expanded model (streams: {self.streams})")
        i = self.streams.index(task)
        return grad[i * batch : (i + 1) * batch, : self.num_tokens]


class _Buffers:
    """Snapshot of all buffers (BatchNorm running stats, ...) restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> _Buffers:
        self.saved = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        return self

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for n, b in self.model.named_buffers():
                if n in self.saved:
                    b.copy_(self.saved[n])


def _check_tokens(out: Any, what: str) -> torch.Tensor:
    if not torch.is_tensor(out) or out.dim() != 3:
        raise MtlkitError(f"{what} is {type(out).__name__}, not a (B, N, D) token tensor")
    return out


def task_losses(model: nn.Module, tasks: Mapping[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The training objective's per-task losses: an architecture's ``task_losses`` (with its auxiliary terms,
    e.g. InvPT's intermediate supervision) when it has one, else ``task.loss(out[t], batch[t])``."""
    out = model(batch["image"])
    combine = getattr(model, "task_losses", None)
    if callable(combine):
        return dict(combine(out, batch, {t: tasks[t] for t in tasks}))
    return {t: tasks[t].loss(out[t], batch[t]) for t in tasks}


def token_covariances(
    model: nn.Module, batches: Iterable[Batch], num_batches: int | None
) -> tuple[list[TokenCovariance], int, int]:
    """Pass 1: streamed float64 covariance of every layer's tokens X_l (all streams pooled).

    Returns (covariances, batches used, batches skipped because a block gave non-finite tokens).
    """
    device = model_device(model)
    covs: list[TokenCovariance] = []
    n = skipped = 0
    with _Layers(model) as layers, torch.no_grad():
        for batch in draw_batches(batches, num_batches):
            images = to_device(batch, device)["image"]
            # the blocks are all that is needed: skip the heads when the model separates them
            (model.forward_features if has_features(model) else model)(images)
            sums = [TokenCovariance.batch_sum(layers.tokens(o, images.shape[0])) for o in layers.outputs
                    if o is not None]
            if not all(bool(torch.isfinite(s).all()) for s, _ in sums):
                skipped += 1
                continue
            if not covs:
                covs = [TokenCovariance(s.shape[0], device=s.device) for s, _ in sums]
            for cov, (s, c) in zip(covs, sums, strict=True):
                cov.add(s, c)
            n += 1
    if n == 0:
        raise MtlkitError(
            f"no usable calibration batch for the token covariance ({skipped} gave non-finite tokens)"
            if skipped
            else "the calibration loader gave no batches"
        )
    return covs, n, skipped


def token_gradients(
    model: nn.Module, tasks: Mapping[str, Any], batch: dict[str, Any]
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]] | None:
    """Per layer the stacked token gradients (T, M, D) of every task's loss w.r.t. X_l (M = B·N tokens; in an
    expanded model task t's own stream), and the losses.

    Returns None when a loss or a token gradient is not finite (the batch is skipped).
    """
    with _Layers(model, leaf_input=True) as layers, torch.enable_grad():
        losses = task_losses(model, tasks, batch)
    if not all(math.isfinite(float(v.detach())) for v in losses.values()):
        return None
    b = batch["image"].shape[0]
    xs = [x for x in layers.outputs if x is not None]
    names = list(tasks)
    per_task = []
    for i, t in enumerate(names):
        grads = torch.autograd.grad(losses[t], xs, retain_graph=i < len(names) - 1, allow_unused=True)
        per_task.append(
            [layers.task_view(torch.zeros_like(x) if g is None else g, b, t) for g, x in zip(grads, xs, strict=True)]
        )
    stacked = [torch.stack([per_task[i][l] for i in range(len(names))]).flatten(1, 2) for l in range(len(xs))]
    if not all(bool(torch.isfinite(g).all()) for g in stacked):
        return None
    return stacked, {t: v.detach() for t, v in losses.items()}


def analyze_token_space(
    model: nn.Module,
    tasks: Mapping[str, Any],
    batches: Iterable[Batch],
    *,
    num_batches: int | None = 100,
    r: float = 100.0,
    dtype: torch.dtype = torch.float64,
) -> TokenSpaceAnalysis:
    """Measure every layer's token space and range / null-space gradient conflicts (DESIGN.md §6.1-6.3).

    Layer l is the output tokens X_l of block l (see the module docstring; per task stream on an expanded
    model). ``tasks``: name -> :class:`mtlkit.tasks.Task` (their losses; the order fixes the pair
    matrices). ``batches``: an iterable of sample dicts (a DataLoader); ``num_batches=None`` uses one full
    pass (the paper's setting on NYUD-v2 and PASCAL-Context).
    ``dtype``: precision of the projections (the covariance and eigendecomposition are always float64).
    """
    if len(tasks) < 2:
        raise MtlkitError(f"token-space conflicts need at least two tasks, got {list(tasks)}")
    device = model_device(model)
    names = list(tasks)
    timings: dict[str, float] = {}
    with _Buffers(model):
        synchronize(device)
        t0 = time.perf_counter()
        covs, n_cov, skipped_cov = token_covariances(model, batches, num_batches)
        synchronize(device)
        timings["covariance_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        spaces = []
        for cov in covs:
            evals, evecs = eigh_descending(cov.covariance())
            k = split_index(evals, r)
            spaces.append((evals, evecs.to(dtype), k))
        synchronize(device)
        timings["eigen_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        accs = [ConflictAccumulator(len(names)) for _ in covs]
        n_conf = skipped = 0
        for raw in draw_batches(batches, num_batches):
            res = token_gradients(model, tasks, to_device(raw, device))
            if res is None:
                skipped += 1
                continue
            grads, _ = res
            for acc, g, (_, basis, k) in zip(accs, grads, spaces, strict=True):
                acc.update(*project(g, basis, k))
            n_conf += 1
        synchronize(device)
        timings["conflicts_s"] = time.perf_counter() - t0
    if n_conf == 0:
        raise MtlkitError(
            f"all {skipped} calibration batches gave a non-finite loss; token-space conflicts cannot be measured"
        )
    layers = []
    for i, (acc, (evals, _, k)) in enumerate(zip(accs, spaces, strict=True)):
        rp, np_ = acc.range_pairs(), acc.null_pairs()
        layers.append(
            LayerTokenSpace(
                layer=i,
                dim=int(evals.numel()),
                k=k,
                variance_captured=variance_captured(evals, k),
                range_rate=ConflictAccumulator.layer_rate(rp),
                null_rate=ConflictAccumulator.layer_rate(np_),
                range_pairs=rp.tolist(),
                null_pairs=np_.tolist(),
                eigenvalues=evals.cpu().tolist(),
            )
        )
    return TokenSpaceAnalysis(
        tasks=names,
        r=float(r),
        layers=layers,
        covariance_batches=n_cov,
        covariance_tokens=covs[0].count,
        conflict_batches=n_conf,
        skipped_batches=skipped + skipped_cov,
        timings=timings,
        streams=stream_names(model),
    )
