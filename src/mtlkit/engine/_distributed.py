"""torch.distributed helpers (torchrun): gradients and loss values averaged across processes.

We average gradients ourselves after the balancer has filled ``.grad`` instead of wrapping the model in
DDP: gradient-aggregation methods run several backward passes per step, which DDP's bucketed hooks do not
support, and this keeps every method and strategy identical with one or many processes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device: torch.device) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns whether distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of ``params``; parameters without a gradient stay without one.

    Whether a parameter has a gradient is the same on every process (same tasks, same strategy), so the
    collective calls match.
    """
    if not is_distributed():
        return
    n = world_size()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def global_mean_scales(counts: dict[str, float]) -> dict[str, float]:
    """Per-task factors ``n_p · W / N`` (``n_p`` this process's count of averaged elements, ``N`` the sum over
    the ``W`` processes) that turn each process's loss mean into its share of the global mean: after the
    gradient average (÷ W) the update is the gradient of the global batch's exact mean, and the averaged loss
    values are the global means, whatever the number of valid pixels on each process. Identity (all 1) when
    not distributed; 1 for a task no process has an element of."""
    if not is_distributed():
        return dict.fromkeys(counts, 1.0)
    keys = sorted(counts)
    t = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    n = world_size()
    return {k: (float(counts[k]) * n / total if total > 0 else 1.0)
            for k, total in zip(keys, t.cpu().tolist(), strict=True)}


def average_tensor(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` across processes (a new tensor; ``t`` itself when not distributed): the global Jacobian
    of ``run.global_jacobian``, from the processes' Jacobians of globally weighted losses."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    if dist.get_backend() == "nccl" and out.device.type != "cuda":
        out = out.cuda()
    dist.all_reduce(out)
    return (out / world_size()).to(t.device)


def average_values(values: dict[str, float]) -> dict[str, float]:
    """Mean of scalar values across processes (same keys everywhere); identity when not distributed."""
    if not is_distributed():
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.cpu().tolist(), strict=True))


def reduce_tensors(tensors: list[torch.Tensor]) -> None:
    """Sum tensors across processes in place (meter accumulators)."""
    if not is_distributed():
        return
    for t in tensors:
        if dist.get_backend() == "nccl":
            tmp = t.cuda()
            dist.all_reduce(tmp)
            t.copy_(tmp.cpu())
        else:
            dist.all_reduce(t)
