"""The base of every multi-task architecture: mtlkit's model protocol, auxiliary outputs, one loss per task.

The protocol (the one :class:`mtlkit.models.MultiTaskModel` implements, which the engine, the balancing
methods and the update strategies call):

- ``forward(x, tasks=None, return_features=False)`` -> ``{task: prediction at the input size}``, and with
  ``return_features`` also the *balancing cut*: the tensors after which every parameter is specific to one
  task (what the balancing methods split the per-task gradients at, :mod:`mtlkit.balancing._grads`). A list
  when every task reads all of it, ``{task: list}`` when each task has its own tensors, ``None`` when there
  is none (the methods then take per-task gradients from the losses). It is *not* the encoder output: these
  architectures have shared parameters after the encoder (MTAN's refinements, MTI-Net's FPMs, InvPT's joint
  decoder), which a split at the encoder output would leave without gradient under gradient aggregators;
- ``forward_features(x)`` / ``forward_heads(feats, tasks)``: the cut at the encoder's output (the token-space
  analysis reads it), where the architecture has one (``has_shared_representation``); otherwise both raise
  :class:`MtlkitError`;
- ``shared_parameters()``, ``task_parameters(t)``, ``last_shared_parameters()``: ``task_parameters(t)`` are
  the parameters that only task t's loss reaches (a task's loss never moves another task's); every other
  trainable parameter is shared, including per-task-named modules whose output other tasks read (MTI-Net's
  per-task refinements feed every task through its feature propagation).

Auxiliary predictions (MTI-Net's deep supervision, InvPT's intermediate predictions) are kept in
``model.aux`` (``{task: {name: prediction at the input size}}``), set by every forward. The engine calls
``model.task_losses(outputs, batch, tasks)`` when a model has it: one loss per task, the main term plus the
task's auxiliary terms with the official weights (see each architecture), so every balancing method sees one
loss per task. ``loss_terms`` gives the separate terms for logging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from mtlkit.errors import MtlkitError

Outputs = dict[str, torch.Tensor]


def _loss_fn(task: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return task.loss if hasattr(task, "loss") else task


class ArchModel(nn.Module):
    """Base class: task list, prediction size, aux bookkeeping, the parameter split and ``task_losses``."""

    #: registry name (``--arch``)
    arch: ClassVar[str] = ""
    #: whether ``forward_features`` / ``forward_heads`` exist (a task-independent cut point)
    has_shared_representation: ClassVar[bool] = True
    #: whether task t's encoder stream reaches only task t's loss, so the backbone's per-task parameters
    #: (DTME) are task t's; False when the decoder mixes the streams (they are then shared)
    separate_task_streams: ClassVar[bool] = True
    #: whether the balancing cut is one list every task reads (methods on one shared feature, e.g. MGDA-UB,
    #: need it); False when it is per task (``{t: tensors}``) or absent
    shared_cut: ClassVar[bool] = False
    #: ``forward(x, tasks, return_features=True)`` returns the balancing cut: the engine's ``run_model``
    #: calls it instead of ``forward_features`` / ``forward_heads`` (whose cut is the encoder output)
    forward_returns_cut: ClassVar[bool] = True

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, int]) -> None:
        super().__init__()
        if not tasks:
            raise MtlkitError("an architecture needs at least one task; pass {task: output channels}")
        self.backbone = backbone
        self.task_channels: dict[str, int] = {t: int(c) for t, c in tasks.items()}
        #: auxiliary predictions of the last forward: {task: {name: prediction at the input size}}
        self.aux: dict[str, dict[str, torch.Tensor]] = {}
        #: the balancing cut of the last forward (see the module docstring)
        self.cut: Any = None
        #: weight of each auxiliary term relative to the task's main loss (1.0 in every official code)
        self.aux_weight = 1.0
        self._input_size: tuple[int, int] | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.task_channels)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the last forward's tensors (``aux``, ``cut``, MTAN's captures): they
        belong to one batch's graph, which ``copy.deepcopy`` cannot copy."""
        state = self.__dict__.copy()
        state["aux"], state["cut"] = {}, None
        if "_captured" in state:
            state["_captured"] = [None] * len(state["_captured"])
        return state

    # ------------------------------------------------------------------ forward
    def _select(self, tasks: Iterable[str] | None) -> list[str]:
        names = self.tasks if tasks is None else list(tasks)
        unknown = [t for t in names if t not in self.task_channels]
        if unknown:
            raise MtlkitError(f"unknown task(s) {unknown} for this {self.arch} model; its tasks are {self.tasks}")
        return names

    def _no_shared_representation(self) -> MtlkitError:
        return MtlkitError(
            f"{type(self).__name__} has no shared representation (task-specific parameters act inside the "
            "encoder); use a method that works on parameters, not on features (e.g. not mgda-ub)"
        )

    def forward_features(self, x: torch.Tensor) -> Any:
        raise NotImplementedError

    def forward_heads(
        self, feats: Any, tasks: Iterable[str] | None = None, output_size: tuple[int, int] | None = None
    ) -> Outputs:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, tasks: Iterable[str] | None = None, return_features: bool = False
    ) -> Outputs | tuple[Outputs, Any]:
        self.aux, self.cut = {}, None  # free the last batch's tensors before this one's exist
        feats = self.forward_features(x)
        out = self.forward_heads(feats, tasks, tuple(x.shape[-2:]))
        return (out, self.cut) if return_features else out

    def _output_size(self, output_size: tuple[int, int] | None) -> tuple[int, int]:
        size = output_size if output_size is not None else self._input_size
        if size is None:
            raise MtlkitError("forward_heads needs output_size when forward_features has not run")
        return tuple(size)  # type: ignore[return-value]

    # ------------------------------------------------------------------ losses
    def loss_terms(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        tasks: Mapping[str, Any],
        aux: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """``{task: {"main": loss, <aux name>: loss, ...}}`` for the tasks in ``tasks`` (name -> Task, or a
        loss function ``(pred, target) -> loss``); auxiliary predictions from ``aux`` or the last forward."""
        aux = self.aux if aux is None else aux
        terms: dict[str, dict[str, torch.Tensor]] = {}
        for t, task in tasks.items():
            fn = _loss_fn(task)
            terms[t] = {"main": fn(outputs[t], targets[t])}
            for name, pred in aux.get(t, {}).items():  # in the main output's dtype (fp32 losses under autocast)
                terms[t][name] = fn(pred.to(outputs[t].dtype), targets[t])
        return terms

    def task_losses(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        tasks: Mapping[str, Any],
        aux: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One loss per task: main + ``aux_weight`` x each auxiliary term (the official sum, see the class)."""
        out = {}
        for t, terms in self.loss_terms(outputs, targets, tasks, aux).items():
            loss = terms["main"]
            for name, value in terms.items():
                if name != "main":
                    loss = loss + self.aux_weight * value
            out[t] = loss
        return out

    # ------------------------------------------------------------------ parameter split
    def _task_modules(self, task: str) -> list[nn.Module | nn.Parameter]:
        """Modules / parameters only task ``task``'s loss reaches (each architecture lists them)."""
        raise NotImplementedError

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The architecture's modules of ``task`` plus the task-specific parameters the backbone declares
        (``backbone.task_specific_parameters(task)``: DTME's modulators / tokens, Recon's copies) when the
        task streams stay separate (``separate_task_streams``)."""
        params: list[nn.Parameter] = []
        seen: set[int] = set()
        fn = getattr(self.backbone, "task_specific_parameters", None)
        extra: list[nn.Module | nn.Parameter] = []
        if fn is not None and self.separate_task_streams:
            extra = list(fn(task))
        for m in self._task_modules(task) + extra:
            for p in [m] if isinstance(m, nn.Parameter) else m.parameters():
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    params.append(p)
        return params

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is not specific to one task (backbone and cross-task modules)."""
        specific = {id(p) for t in self.tasks for p in self.task_parameters(t)}
        return [p for p in self.parameters() if id(p) not in specific and p.requires_grad]

    def _last_encoder_parameters(self) -> list[nn.Parameter]:
        fn = getattr(self.backbone, "last_layer_parameters", None)
        if fn is not None:
            return list(fn())
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The encoder's last layer (AvgNorm's default gradient source); all shared parameters if unknown."""
        shared = {id(p) for p in self.shared_parameters()}
        params = [p for p in self._last_encoder_parameters() if id(p) in shared]
        return params or self.shared_parameters()

    # ------------------------------------------------------------------ single-task twins
    @classmethod
    def single_task(cls, backbone: nn.Module, task: str, channels: int, **kwargs: Any) -> ArchModel:
        """The imbalance study's "architecture single-task" network: the same modules for one task."""
        return cls(backbone, {task: channels}, **kwargs)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device: no memory is touched)."""
    return sum(p.numel() for p in module.parameters())
