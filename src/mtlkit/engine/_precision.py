"""Mixed precision for every balancing method: ``run.precision`` = ``fp32`` | ``bf16`` | ``fp16``.

The forward runs under ``torch.autocast`` (device type from the model's parameters; bf16 also on CPU),
the model outputs are cast back to float32 and the losses are computed in float32. ``fp16`` adds a
``torch.amp.GradScaler`` (the AMP recipe, https://pytorch.org/docs/stable/amp.html "Typical Mixed Precision
Training"): the balancer gets the *unscaled* losses and the scaler as ``grad_scale``; it back-propagates S
times its objective and takes every decision (norms, Gramians, QP / convex solvers) on per-task gradients
cast to at least float32 and divided by S (``mtlkit.balancing._base.solver_view``, tested for every method
in ``tests/balancing/test_grad_scale.py``). ``scaler.step`` unscales ``.grad`` before the optimizer and
skips a step whose gradients are not finite; :meth:`Precision.step` reports that skip so the strategy counts
it (``skipped_steps`` in ``metrics.json``) and leaves the model, the optimizer and the affinity untouched.

Choice (ours): a skipped step is recognised by the scale going down in ``scaler.update()``, which happens
exactly when the step found an inf / NaN (``backoff_factor < 1``); GradScaler has no public flag for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from mtlkit.engine._speed_config import PRECISIONS
from mtlkit.errors import MtlkitError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(value: Any) -> str:
    """The precision name, or a one-line error naming the choices."""
    if value not in PRECISIONS:
        raise MtlkitError(f"precision={value!r}: use one of {', '.join(PRECISIONS)}")
    return str(value)


def to_fp32(obj: Any) -> Any:
    """Floating tensors of half precision in (nested dicts / lists / tuples of) ``obj`` cast to float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, Mapping):
        return type(obj)((k, to_fp32(v)) for k, v in obj.items()) if isinstance(obj, dict) else obj
    if isinstance(obj, list):
        return [to_fp32(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_fp32(v) for v in obj)
    return obj


def model_device_type(model: torch.nn.Module) -> str:
    for p in model.parameters():
        return p.device.type
    return "cpu"


class Precision:
    """Autocast + (for fp16) a GradScaler, shared by every strategy's step.

    ``forward(fn, *args)`` runs ``fn`` under autocast and returns its outputs in float32;
    ``backward_kwargs()`` is ``{"grad_scale": scaler}`` under fp16 (else empty); ``step(optimizer)`` takes
    the optimizer step (through the scaler under fp16) and returns whether it was taken.
    """

    def __init__(self, mode: str = "fp32", device_type: str = "cpu", init_scale: float = 2.0**16) -> None:
        self.mode = check_precision(mode)
        self.device_type = device_type
        self.dtype = _DTYPES.get(self.mode)
        self.scaler: torch.amp.GradScaler | None = None
        if self.mode == "fp16":
            self.scaler = torch.amp.GradScaler(device_type, init_scale=init_scale)
        #: optimizer steps the scaler skipped (non-finite scaled gradients)
        self.skipped = 0

    @classmethod
    def for_model(cls, mode: str, model: torch.nn.Module, **kwargs: Any) -> Precision:
        return cls(mode, model_device_type(model), **kwargs)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.dtype is None:
            return fn(*args, **kwargs)
        with self.autocast():
            out = fn(*args, **kwargs)
        return to_fp32(out)

    def backward_kwargs(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"grad_scale": self.scaler}

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], None] | None = None) -> bool:
        """``optimizer.step()``, or under fp16 ``scaler.step`` + ``scaler.update``; False when skipped.
        ``clip`` (gradient clipping) runs on unscaled gradients (``scaler.unscale_`` first, as PyTorch's AMP
        recipe for clipping)."""
        if self.scaler is None:
            if clip is not None:
                clip()
            optimizer.step()
            return True
        if self.scaler._scale is None:  # nothing was scaled this step (e.g. a loss-only method); init it
            self.scaler.scale(torch.ones((), device=self.device_type))
        if clip is not None:
            self.scaler.unscale_(optimizer)
            clip()
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        taken = self.scaler.get_scale() >= before
        if not taken:
            self.skipped += 1
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "skipped": self.skipped,
                "scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


FP32 = Precision("fp32")


def of(ctx: Any) -> Precision:
    """The precision of a step context (fp32 when it has none)."""
    return getattr(ctx, "precision", None) or FP32
