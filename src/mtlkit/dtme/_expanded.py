"""The expanded backbone: a ViT whose token stream forks into one stream per task (DTME TM/TE, Recon copies).

DESIGN.md §6.5-6.7. Layer l's token set is X_l, the output tokens of block l (all of them: the prefix
tokens, e.g. the class token, and the patch tokens), the set whose covariance and conflicts
:func:`~mtlkit.dtme.analyze_token_space` measured for layer l. Both modules of layer l act on exactly
that set, after block l:

- TM of layer l: task t's X_l becomes X_l ⊙ w_t + b_t (paper Prop. 1 modulates the analysed tokens);
- TE of layer l: m task tokens are appended to task t's X_l (after the TM of that layer, if any; paper
  Prop. 2 extends the analysed tokens), take part in the attention of block l + 1 and are dropped after
  it. The features the heads read at layer l are X_l without them. The last block's output enters no
  block, so it cannot take TE.

Up to the first layer with a task-specific module the model runs one shared stream; from there on the
T task streams are stacked task-major into one batch of T·B sequences, so every block is ONE batched
call with shared weights (inference stays one pass for all tasks; the paper's App. D). The multi-layer
features of each head come from its own stream (features taken before the fork are shared).
``forward(x, tasks=[t])`` runs only the streams asked for (the per-task inference path).

The wrapped :class:`~mtlkit.models.ViTBackbone` stays a submodule (``base``), so its parameters are
the same objects the optimizer already holds and its state-dict keys are the original ones under
``backbone.base.``; new modules live under ``backbone.modulators.<layer>`` / ``backbone.expanders.<layer>``,
and Recon's copies replace ``base.blocks[<layer>]`` (``base.blocks.<layer>.copies.<task>``). The wrapper is
rebuilt deterministically from the transform specs (``mtlkit.models.apply_transforms``), so a saved state
dict loads into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.dtme._modules import MODULATORS, TaskBlocks, TokenExpander
from mtlkit.errors import MtlkitError

#: version of the ``dtme`` transform spec: 2 = TE of layer l extends the output tokens of block l (mtlkit
#: before that appended them to the input of block l; such specs with TE layers are refused)
DTME_SPEC_VERSION = 2


class ExpandedBackbone(nn.Module):
    """Forked-stream wrapper of a ViT backbone adapter (``embed``, ``blocks``, ``tokens_to_map``, ``out_indices``,
    ``embed_dim``)."""

    #: the backbone holds per-task streams (the token-space analysis then measures each task on its own)
    is_expanded = True
    #: ``forward(x, tasks=...)`` runs only the streams asked for (read by MultiTaskModel)
    accepts_tasks = True

    def __init__(self, base: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        for attr in ("embed", "blocks", "tokens_to_map", "out_indices", "embed_dim"):
            if not hasattr(base, attr):
                raise MtlkitError(
                    f"{type(base).__name__} cannot be expanded: it lacks `{attr}` (DTME/Recon need a ViT backbone "
                    "with embed(), blocks, tokens_to_map() and out_indices)"
                )
        if len(set(tasks)) != len(tasks) or not tasks:
            raise MtlkitError(f"expansion needs distinct task names, got {list(tasks)}")
        self.base = base
        self.task_names = list(tasks)
        self.modulators = nn.ModuleDict()
        self.expanders = nn.ModuleDict()

    # ------------------------------------------------------------------ delegated ViT interface
    @property
    def blocks(self) -> nn.ModuleList:
        return self.base.blocks

    @property
    def out_indices(self) -> tuple[int, ...]:
        return self.base.out_indices

    @property
    def out_channels(self) -> list[int]:
        return self.base.out_channels

    @property
    def embed_dim(self) -> int:
        return self.base.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        return getattr(self.base, "num_prefix_tokens", 0)

    @property
    def grid(self) -> tuple[int, int] | None:
        return getattr(self.base, "grid", None)

    @property
    def config(self):
        return getattr(self.base, "config", None)

    @property
    def depth(self) -> int:
        return len(self.base.blocks)

    # ------------------------------------------------------------------ building
    def _layer(self, layer: int) -> str:
        if not 0 <= int(layer) < self.depth:
            raise MtlkitError(
                f"layer {layer} is out of range: the backbone has {self.depth} blocks (0..{self.depth - 1})"
            )
        return str(int(layer))

    def _place(self, module: nn.Module) -> nn.Module:
        ref = next(self.base.parameters())
        return module.to(device=ref.device, dtype=ref.dtype)

    def add_token_modules(
        self, tm_layers: Sequence[int], te_layers: Sequence[int], num_tokens: int = 6, modulator: str = "affine"
    ) -> list[nn.Parameter]:
        """Attach TM and TE to the output tokens of the given blocks; returns the new parameters."""
        if modulator not in MODULATORS:
            raise MtlkitError(f"unknown modulator {modulator!r}; valid: {', '.join(MODULATORS)}")
        if te_layers and num_tokens < 1:
            raise MtlkitError(f"token expansion needs num_tokens >= 1, got {num_tokens}")
        new: list[nn.Parameter] = []
        d = self.embed_dim
        for layer in tm_layers:
            key = self._layer(layer)
            if key in self.modulators:
                raise MtlkitError(f"layer {layer} already has a token modulator")
            self.modulators[key] = self._place(MODULATORS[modulator](self.task_names, d))
            new += list(self.modulators[key].parameters())
        for layer in te_layers:
            key = self._layer(layer)
            if int(key) == self.depth - 1:
                raise MtlkitError(
                    f"layer {layer} is the last block: its output enters no further block, so task tokens "
                    "appended to it would have no effect; choose TE layers below it"
                )
            if key in self.expanders:
                raise MtlkitError(f"layer {layer} already has task tokens")
            self.expanders[key] = self._place(TokenExpander(self.task_names, d, num_tokens))
            new += list(self.expanders[key].parameters())
        return new

    def make_task_specific(self, layers: Sequence[int]) -> list[nn.Parameter]:
        """Replace the ``layers`` by per-task copies (Recon); returns the new parameters.

        The shared block is dropped; each copy starts from its current weights.
        """
        new: list[nn.Parameter] = []
        for layer in layers:
            i = int(self._layer(layer))
            if isinstance(self.base.blocks[i], TaskBlocks):
                raise MtlkitError(f"layer {layer} is already task-specific")
            self.base.blocks[i] = TaskBlocks(self.base.blocks[i], self.task_names)
            new += list(self.base.blocks[i].parameters())
        return new

    # ------------------------------------------------------------------ parameters
    def task_specific_parameters(self, task: str) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for mod in list(self.modulators.values()) + list(self.expanders.values()):
            params += mod.task_parameters(task)
        for blk in self.base.blocks:
            if isinstance(blk, TaskBlocks):
                params += blk.task_parameters(task)
        return params

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The base's last shared layer; with task-specific copies, the last shared block and the final norm."""
        if not any(isinstance(b, TaskBlocks) for b in self.base.blocks) and hasattr(self.base, "last_layer_parameters"):
            return list(self.base.last_layer_parameters())
        shared = [b for b in self.base.blocks if not isinstance(b, TaskBlocks)]
        norm = getattr(self.base, "norm", None)
        return (list(shared[-1].parameters()) if shared else []) + (list(norm.parameters()) if norm else [])

    @property
    def fork_layer(self) -> int | None:
        """Index of the first block that runs once per task stream (None when nothing is expanded; ``depth``
        when only the last block's output is modulated)."""
        cands = [int(k) + 1 for k in self.modulators] + [int(k) + 1 for k in self.expanders]
        cands += [i for i, b in enumerate(self.base.blocks) if isinstance(b, TaskBlocks)]
        return min(cands) if cands else None

    def streams_at(self, layer: int) -> bool:
        """True when block ``layer``'s output holds one stream per task (it ran after the fork)."""
        fork = self.fork_layer
        return fork is not None and layer >= fork

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, list[torch.Tensor]]:
        """Image (B, 3, H, W) -> ``{task: [feature maps of out_indices]}`` (streams of ``tasks``, default all)."""
        names = self.task_names if tasks is None else list(tasks)
        unknown = set(names) - set(self.task_names)
        if not names:
            raise MtlkitError(f"no task stream asked for; expanded for {self.task_names}")
        if unknown:
            raise MtlkitError(f"unknown task stream(s) {sorted(unknown)}; expanded for {self.task_names}")
        cfg = self.config
        if cfg is not None and hasattr(cfg, "img_size") and tuple(x.shape[-2:]) != tuple(cfg.img_size):
            raise ValueError(f"input size {tuple(x.shape[-2:])} differs from the model's img_size {cfg.img_size}")
        n_streams = len(names)
        h = self.base.embed(x)
        n_tokens = h.shape[1]
        forked = extended = False

        self.shared_tokens = None  # the last tokens all task streams share (methods on the representation)

        def fork(t: torch.Tensor) -> torch.Tensor:
            self.shared_tokens = t
            return t.unsqueeze(0).expand(n_streams, *t.shape).reshape(n_streams * t.shape[0], *t.shape[1:])

        feats: list[tuple[torch.Tensor, bool]] = []
        for i, blk in enumerate(self.base.blocks):
            key = str(i)
            per_task_block = isinstance(blk, TaskBlocks)
            if per_task_block and not forked:
                h, forked = fork(h), True
            h = blk(h, names) if per_task_block else blk(h)  # X_i
            if extended:  # the task tokens of layer i - 1 have passed block i: drop them
                h, extended = h[:, :n_tokens], False
            if key in self.modulators:  # TM of layer i on X_i
                if not forked:
                    h, forked = fork(h), True
                h = self.modulators[key](h, names)
            if i in self.base.out_indices:
                feats.append((self.base.tokens_to_map(h, i), forked))
            if key in self.expanders:  # TE of layer i: X_i extended, read by block i + 1
                if not forked:
                    h, forked = fork(h), True
                h, extended = self.expanders[key](h, names), True
        out: dict[str, list[torch.Tensor]] = {t: [] for t in names}
        for f, is_forked in feats:
            parts = f.chunk(n_streams) if is_forked else [f] * n_streams
            for t, p in zip(names, parts, strict=True):
                out[t].append(p)
        return out


def expanded_backbone(model: nn.Module, tasks: Sequence[str] | None = None) -> ExpandedBackbone:
    """``model.backbone`` wrapped (once) in an :class:`ExpandedBackbone` for the model's tasks."""
    backbone = model.backbone
    names = list(tasks) if tasks is not None else list(model.tasks)
    if isinstance(backbone, ExpandedBackbone):
        if backbone.task_names != names:
            raise MtlkitError(f"the model is expanded for tasks {backbone.task_names}, not {names}")
        return backbone
    wrapped = ExpandedBackbone(backbone, names)
    model.backbone = wrapped
    return wrapped
