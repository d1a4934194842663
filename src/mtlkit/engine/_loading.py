"""Feeding the accelerator: DataLoader options and the memory format of convolutional backbones.

* ``pin_memory`` when the run is on CUDA (page-locked batches, so ``to_device``'s ``non_blocking=True``
  copies overlap the step);
* ``persistent_workers`` and ``prefetch_factor`` when ``num_workers > 0`` (workers live as long as the
  loader; each keeps ``PREFETCH`` batches ready, ours: 4 instead of PyTorch's 2, since a batch of the
  synthetic data costs far less than a step and memory is cheap at that size);
* ``channels_last`` for convolutional backbones on CUDA (cuDNN's NHWC kernels, with tensor cores under
  autocast; a convolution runs channels-last when its weight is). A backbone counts as convolutional when
  it has more than ``CNN_MIN_CONVS`` 2-d convolutions with a kernel larger than 1x1 (a ViT has one: its
  patch embedding).
"""

from __future__ import annotations

from typing import Any

import torch

PREFETCH = 4
CNN_MIN_CONVS = 3


def loader_options(device: torch.device | str, num_workers: int) -> dict[str, Any]:
    """Keyword arguments for a ``DataLoader`` feeding ``device`` with ``num_workers`` workers."""
    opts: dict[str, Any] = {}
    if torch.device(device).type == "cuda":
        opts["pin_memory"] = True
    if num_workers > 0:
        opts["persistent_workers"] = True
        opts["prefetch_factor"] = PREFETCH
    return opts


def is_convolutional(model: torch.nn.Module) -> bool:
    """Whether the model's backbone (or the model, without one) is a CNN (see the module docstring)."""
    body = getattr(model, "backbone", None)
    body = body if isinstance(body, torch.nn.Module) else model
    convs = sum(1 for m in body.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] * m.kernel_size[1] > 1)
    return convs > CNN_MIN_CONVS


def prepare_model(model: torch.nn.Module, device: torch.device | str) -> bool:
    """``channels_last`` for a CNN on CUDA (in place); returns whether it was applied."""
    if torch.device(device).type != "cuda" or not is_convolutional(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True
