"""Per-task token modules acting on T stacked task streams (a tensor of T·B sequences, task-major).

- :class:`AffineModulator` (TM, DTME-MTL Sec. 4.3): task t's tokens after a block become X ⊙ w_t + b_t,
  w_t, b_t ∈ R^D, initialised to 1 and 0 so the expanded model starts as the unexpanded one.
- :class:`BatchNormModulator`: the paper's ablation (Tab. 11), one BatchNorm over the D channels per task,
  statistics over that task's tokens.
- :class:`TokenExpander` (TE): m learnable tokens per task, E_t ∈ R^{m×D} (truncated normal, std 0.02, as
  timm initialises learned tokens), appended to task t's output tokens of a block, read by the next block
  and dropped after it.
- :class:`TaskBlocks` (Recon): one copy of a block per task.

Every parameter belongs to exactly one task (``task_parameters(t)``), so the model can report them as
task-specific; a stream subset (``tasks``) selects whose parameters are used, in order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def _streams(x: torch.Tensor, n: int) -> torch.Tensor:
    """(n·B, ...) -> (n, B, ...)."""
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


class AffineModulator(nn.Module):
    """Per-task channel-wise affine map of the tokens: X ⊙ w_t + b_t."""

    def __init__(self, tasks: Sequence[str], dim: int) -> None:
        super().__init__()
        self.weight = nn.ParameterDict({t: nn.Parameter(torch.ones(dim)) for t in tasks})
        self.bias = nn.ParameterDict({t: nn.Parameter(torch.zeros(dim)) for t in tasks})

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [self.weight[task], self.bias[task]]

    def forward(self, x: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        w = torch.stack([self.weight[t] for t in tasks])[:, None, None, :]
        b = torch.stack([self.bias[t] for t in tasks])[:, None, None, :]
        return (_streams(x, len(tasks)) * w + b).reshape(x.shape)


class BatchNormModulator(nn.Module):
    """Per-task BatchNorm over the channel dimension, each task's tokens as the samples (ablation)."""

    def __init__(self, tasks: Sequence[str], dim: int) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({t: nn.BatchNorm1d(dim) for t in tasks})

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.norms[task].parameters())

    def forward(self, x: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        d = x.shape[-1]
        streams = zip(tasks, x.chunk(len(tasks)), strict=True)
        return torch.cat([self.norms[t](s.reshape(-1, d)).reshape(s.shape) for t, s in streams])


MODULATORS: dict[str, type[nn.Module]] = {"affine": AffineModulator, "batchnorm": BatchNormModulator}


class TokenExpander(nn.Module):
    """m learnable tokens per task, appended to the task's token sequence (after all existing tokens)."""

    def __init__(self, tasks: Sequence[str], dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.tokens = nn.ParameterDict({t: nn.Parameter(torch.empty(num_tokens, dim)) for t in tasks})
        for p in self.tokens.values():
            nn.init.trunc_normal_(p, std=0.02)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [self.tokens[task]]

    def forward(self, x: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        n = len(tasks)
        b = x.shape[0] // n
        e = torch.stack([self.tokens[t] for t in tasks]).to(x.dtype)  # (n, m, D)
        e = e[:, None].expand(n, b, *e.shape[1:]).reshape(n * b, *e.shape[1:])
        return torch.cat([x, e], dim=1)


class TaskBlocks(nn.Module):
    """Task-specific copies of one block (Recon): stream t runs through copy t."""

    def __init__(self, block: nn.Module, tasks: Sequence[str]) -> None:
        super().__init__()
        self.copies = nn.ModuleDict({t: copy.deepcopy(block) for t in tasks})

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.copies[task].parameters())

    def forward(self, x: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        return torch.cat([self.copies[t](s) for t, s in zip(tasks, x.chunk(len(tasks)), strict=True)])
