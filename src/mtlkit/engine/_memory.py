"""Peak memory of a training step (``step_memory`` in ``metrics.json``) and the ``run.max_memory`` check.

The first step of every ``fit`` is measured: on CUDA ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats`` (what the caching allocator handed out: activations, gradients, the optimizer
state the first step creates; not the allocator's reserve); on CPU the peak resident set size of the
process (``VmHWM`` in ``/proc/self/status`` after resetting it with ``/proc/self/clear_refs``, Linux;
elsewhere ``getrusage``'s lifetime peak, an upper bound). With ``max_memory`` set, a first step above it
(or one that runs out of CUDA memory) stops the run right after that step, before anything is logged or
saved, with one line naming the figure and the fixes. The estimate is that step: later peaks (an expansion
adding parameters, evaluation batches larger than training ones) are not foreseen.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtlkit.engine._speed_config import parse_bytes
from mtlkit.errors import MtlkitError

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _cpu_reset() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident set
        return True
    except OSError:
        return False


def _cpu_peak() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


class StepMemory:
    """Measures the first step of a run (``measure``) and checks it against ``limit`` (e.g. ``"8GB"``)."""

    def __init__(self, device: torch.device, limit: str | int | None = None) -> None:
        self.device = torch.device(device)
        self.limit = None if limit is None else parse_bytes(limit)
        self.limit_text = limit
        self.peak: int | None = None
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss"
        self._done = False

    def measure(self, step: Callable[..., Any], *args: Any) -> Any:
        """``step(*args)``; the first call is measured (and checked against the limit)."""
        if self._done:
            return step(*args)
        self._done = True
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _cpu_reset()
        try:
            out = step(*args)
        except torch.OutOfMemoryError:
            if self.limit is None:
                raise
            raise MtlkitError(f"max_memory={self.limit_text!r}: one training step ran out of device memory; "
                              "lower batch_size or image_size, or use --precision bf16") from None
        if cuda:
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak = _cpu_peak()
        if self.limit is not None and self.peak > self.limit:
            raise MtlkitError(
                f"max_memory={self.limit_text!r}: one training step peaks at {human(self.peak)} ({self.kind}), above "
                f"the limit of {human(self.limit)}; lower batch_size or image_size, use --precision bf16, "
                "or raise --max-memory")
        return out

    def report(self) -> dict[str, Any] | None:
        if self.peak is None:
            return None
        return {"peak_bytes": self.peak, "peak_mib": round(self.peak / 2**20, 1), "kind": self.kind,
                "limit_bytes": self.limit}
