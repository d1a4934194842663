"""Meters of the generic tasks built on torchmetrics, behind mtlkit's :class:`~mtlkit.metrics.Meter` interface.

Cross-process reduction: these meters use **torchmetrics' own sync**, not mtlkit's summed states. Exact
AUROC and average precision need every score of the split, which no fixed-size sum holds, so all of a meter's
torchmetrics states (sums and score lists alike) are gathered from every process inside :meth:`compute`
(``Metric.sync_context``; list states are concatenated, sum states summed, by torchmetrics' own reductions).
Hence :meth:`state` is empty (``engine._distributed.reduce_tensors`` has nothing to add) and ``compute()``
is a collective call: every process must call it, in the same order, as ``engine.evaluate`` does. Each
process should see at least one sample (a ``DistributedSampler`` guarantees it).

torchmetrics is imported when the first such meter is built, never at ``import mtlkit`` (it pulls in
torchvision, seconds of start-up).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from mtlkit.metrics._base import Meter

if TYPE_CHECKING:
    from torchmetrics import Metric

GatherFn = Callable[..., list[torch.Tensor]]

#: torchmetrics warnings about cases these meters handle themselves (a class absent from the split, a process
#: without a batch): the meters return NaN or leave the class out, as their docstrings say
_HANDLED_WARNINGS = (
    r"No (positive|negative) samples",
    r"The ``compute`` method of metric .* was called before the ``update``",
)


#: keyword arguments every torchmetrics metric of a meter is built with: no sync of its own inside compute()
#: (the meter syncs all its metrics at once, see the module docstring) and no cached result
TM_OPTIONS: dict[str, Any] = {"sync_on_compute": False, "compute_with_cache": False}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _gather(tensor: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """torchmetrics' ``gather_all_tensors`` (uneven sizes allowed); through the GPU when the backend is NCCL,
    since the meters keep their states on the CPU as mtlkit's own meters do."""
    from torchmetrics.utilities.distributed import gather_all_tensors

    if dist.get_backend(group) == "nccl":
        return [t.cpu() for t in gather_all_tensors(tensor.cuda(), group)]
    return gather_all_tensors(tensor, group)


class TorchMetricsMeter(Meter):
    """A meter whose accumulators are torchmetrics ``Metric`` objects (``self.metrics``, built by ``_build``).

    Subclasses implement ``_build() -> {name: Metric}`` (each metric built with ``**TM_OPTIONS``), ``update``
    (feeding CPU tensors to ``self.metrics``) and ``_compute() -> {metric: value}``, which runs on the states
    of every process (see the module docstring) with torchmetrics' warnings about handled edge cases silenced.
    """

    #: direction of every reported metric (what Δm needs); keys absent here are diagnostics, not scores
    directions: dict[str, bool] = {}

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = self._build()
        for k, m in self.metrics.items():
            if m.sync_on_compute or m.compute_with_cache:
                raise TypeError(f"{type(self).__name__}: build metric {k!r} with **TM_OPTIONS")
        self._dist_sync_fn: GatherFn = _gather
        self._dist_available: Callable[[], bool] = _distributed
        self._process_group: Any = None
        super().__init__()

    def _build(self) -> dict[str, Metric]:
        raise NotImplementedError

    def _compute(self) -> dict[str, float]:
        raise NotImplementedError

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {}

    def reset(self) -> None:
        super().reset()
        for m in self.metrics.values():
            m.reset()

    def state(self) -> list[torch.Tensor]:
        """Empty: torchmetrics gathers these states itself in :meth:`compute` (module docstring)."""
        return []

    def merge(self, other: Meter) -> None:
        """Add another meter's data (sums added, score lists concatenated, by torchmetrics' reductions)."""
        if not isinstance(other, type(self)) or other.metrics.keys() != self.metrics.keys():
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for k, m in self.metrics.items():
            m.merge_state(other.metrics[k])

    def set_sync(
        self,
        dist_sync_fn: GatherFn | None = None,
        distributed_available: Callable[[], bool] | None = None,
        process_group: Any = None,
    ) -> None:
        """Override how :meth:`compute` gathers states: an all-gather ``fn(tensor, group) -> [one per process]``,
        whether to gather at all, and the process group (default: torch.distributed's world, when initialised)."""
        if dist_sync_fn is not None:
            self._dist_sync_fn = dist_sync_fn
        if distributed_available is not None:
            self._dist_available = distributed_available
        self._process_group = process_group

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        """All states gathered from every process for the duration of the block, local ones restored after."""
        with contextlib.ExitStack() as stack:
            for m in self.metrics.values():
                stack.enter_context(
                    m.sync_context(
                        dist_sync_fn=self._dist_sync_fn,
                        process_group=self._process_group,
                        distributed_available=self._dist_available,
                    )
                )
            yield

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        with self._synced(), warnings.catch_warnings():
            for pattern in _HANDLED_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            return self._compute()


def nan_mean(values: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean of ``values[keep]``; NaN when nothing is kept (the metric is undefined on this split)."""
    kept = values.double()[keep]
    return float(kept.mean()) if kept.numel() else float("nan")
