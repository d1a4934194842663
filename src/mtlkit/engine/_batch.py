"""Any batch -> the dict the strategies read: ``{input_key: inputs, task: target, ...}``.

A batch may be a dict holding the inputs under ``input_key`` (default ``"image"``) and one target per task,
an ``(inputs, targets)`` pair (targets a dict, a sequence in task order, or one tensor for one task), or
whatever a user function ``fn(batch) -> (inputs, targets)`` turns into such a pair. Inputs may be any
shape or structure (a tensor, a dict of tensors); only the model reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mtlkit.errors import MtlkitError


class BatchFormat:
    """Normalises batches for ``tasks``; ``inputs``: the input key, or a function ``batch -> (x, targets)``."""

    def __init__(self, tasks: Sequence[str], inputs: str | Callable[[Any], Any] = "image") -> None:
        self.tasks = list(tasks)
        self.fn = inputs if callable(inputs) else None
        self.key = "image" if callable(inputs) else str(inputs)

    def __call__(self, batch: Any) -> dict[str, Any]:
        if self.fn is not None:
            batch = self.fn(batch)
            if isinstance(batch, Mapping):
                return self._from_dict(batch)
            return self._from_pair(batch, "the batch function")
        if isinstance(batch, Mapping):
            return self._from_dict(batch)
        return self._from_pair(batch, "a batch")

    def _from_dict(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if self.key not in batch:
            raise MtlkitError(
                f"batch has no inputs under key {self.key!r} (keys: {', '.join(map(str, batch))}); set the input "
                "key (Trainer(inputs=KEY), config data.input_key) or pass a function batch -> (inputs, targets)"
            )
        return dict(batch)

    def _from_pair(self, batch: Any, what: str) -> dict[str, Any]:
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise MtlkitError(
                f"{what} must be a dict with key {self.key!r} or an (inputs, targets) pair, got {type(batch).__name__}"
            )
        inputs, targets = batch
        if isinstance(targets, Mapping):
            out = dict(targets)
        elif torch.is_tensor(targets) and len(self.tasks) == 1:
            out = {self.tasks[0]: targets}
        elif isinstance(targets, list | tuple) and len(targets) == len(self.tasks):
            out = dict(zip(self.tasks, targets, strict=True))
        elif torch.is_tensor(targets) and targets.dim() >= 2 and targets.shape[1] == len(self.tasks):
            out = {t: targets[:, i] for i, t in enumerate(self.tasks)}  # one column per task
        else:
            raise MtlkitError(
                f"cannot match the targets ({type(targets).__name__}) to tasks {self.tasks}: give a dict "
                "{task: target}, one target per task in task order, or a (B, T) tensor"
            )
        missing = [t for t in self.tasks if t not in out]
        if missing:
            raise MtlkitError(f"batch has no target for task(s) {missing}; targets: {list(out)}")
        out[self.key] = inputs
        return out


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (in dicts, lists and tuples, at any depth) moved to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def take(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` samples of a normalised batch."""

    def cut(v: Any) -> Any:
        if torch.is_tensor(v) and v.dim() > 0:
            return v[:n]
        if isinstance(v, Mapping):
            return {k: cut(x) for k, x in v.items()}
        return v

    return {k: cut(v) for k, v in batch.items()}
