"""``run.compile``: ``torch.compile`` of the model forward, with a fallback to eager execution.

The model is compiled in place the way ``nn.Module.compile`` does it (its ``_compiled_call_impl``), so the
module object, its parameters, hooks and ``state_dict`` keys stay what the balancers, transforms and
checkpoints know (no ``_orig_mod.`` prefix). A model with ``forward_features`` / ``forward_heads`` (mtlkit's
models: the trainer calls those two, so that balancers get the shared features) has each compiled as
well, as an instance attribute over the method; the features stay a graph boundary, so the balancers that
start a backward at them keep working. Per-task gradients, Gramians and the final weighted backward
go through the compiled graph's backward like any autograd graph.

Fallback (ours): when a call of the compiled forward raises (graph capture or the backend fails) and the
same call runs eagerly, the model stays eager for the rest of the run and one warning line names the
reason; an error that eager execution raises too is the model's own and propagates. A model transform that
rebuilds the model mid-run (DTME / Recon expansion, signalled by a new entry in ``trainer.model_spec
["transforms"]``) gets a fresh compilation of the new forward; the trainer's callbacks run with the model
eager (:meth:`Compiler.pause` / :meth:`Compiler.resume`: a calibration that hooks blocks and reads the
tokens they saw needs eager execution), the compiled code kept for the steps.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


class Compiler:
    """Compiles ``model``'s forward with ``backend`` (None: off) and recompiles after an expansion."""

    def __init__(self, backend: str | None = None, **options: Any) -> None:
        self.backend = backend
        self.options = options
        self.failed: str | None = None  # the reason compilation was abandoned
        self.compilations = 0  # how many times a forward was (re)wrapped for compilation
        self._version: int | None = None
        self._paused: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None and self.failed is None

    def apply(self, model: torch.nn.Module, version: int = 0) -> torch.nn.Module:
        """Compile ``model``'s forward in place (no-op when off or after a failure)."""
        self._version = version
        if not self.enabled:
            return model
        # per-task gradients back-propagate the compiled graph several times (retain_graph=True), which
        # AOTAutograd's donated buffers forbid; off for every graph (a small memory cost, PyTorch's advice)
        torch._functorch.config.donated_buffer = False
        model._compiled_call_impl = self._guarded(model, model._call_impl)
        for name in _METHODS:
            method = getattr(type(model), name, None)
            if callable(method):
                setattr(model, name, self._guarded(model, getattr(model, name)))
        self.compilations += 1
        return model

    def _guarded(self, model: torch.nn.Module, eager: Any) -> Any:
        compiled = torch.compile(eager, backend=self.backend, **self.options)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failed is not None:
                return eager(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # capture / backend failure: run eagerly, then decide
                out = eager(*args, **kwargs)  # raises the model's own errors
                self._give_up(model, e)
                return out

        call._mtlkit_compiled = True  # type: ignore[attr-defined]
        return call

    def refresh(self, model: torch.nn.Module, version: int) -> None:
        """Recompile when the model changed (``version``: the number of transforms applied so far)."""
        if self._version is not None and version != self._version:
            _uncompile(model)
            self.apply(model, version)

    def pause(self, model: torch.nn.Module) -> None:
        """Run ``model`` eagerly until :meth:`resume` (callbacks: a transform's calibration hooks the blocks
        and reads what they saw, which a compiled graph does not replay); the compiled code is kept."""
        if self.enabled and self._paused is None:
            self._paused = {"_compiled_call_impl": model._compiled_call_impl,
                            **{n: model.__dict__[n] for n in _METHODS if n in model.__dict__}}
            _uncompile(model)

    def resume(self, model: torch.nn.Module, version: int) -> None:
        """Back to the compiled forward after :meth:`pause`; compiled afresh when the model changed meanwhile
        (``version``: the number of transforms applied so far, e.g. a DTME expansion)."""
        saved, self._paused = self._paused, None
        if saved is None or not self.enabled:
            return
        if version != self._version:
            self.apply(model, version)
            return
        model._compiled_call_impl = saved.pop("_compiled_call_impl")
        model.__dict__.update(saved)

    def _give_up(self, model: torch.nn.Module, error: Exception) -> None:
        _uncompile(model)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        self.failed = f"{type(error).__name__}: {reason}"
        warnings.warn(f"compile={self.backend!r}: graph capture failed ({self.failed}); running the model eagerly",
                      RuntimeWarning, stacklevel=3)


_METHODS = ("forward_features", "forward_heads")


def _uncompile(model: torch.nn.Module) -> None:
    model._compiled_call_impl = None
    for name in _METHODS:
        if getattr(model.__dict__.get(name), "_mtlkit_compiled", False):
            del model.__dict__[name]


def is_compiled(model: torch.nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None
