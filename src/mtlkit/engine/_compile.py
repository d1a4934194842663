"""``run.compile``: ``torch.compile`` of the model forward, with a fallback to eager execution.

The model is compiled in place the way ``nn.Module.compile`` does it (its ``_compiled_call_impl``), so the
module object, its parameters, hooks and ``state_dict`` keys stay what the balancers, transforms and
checkpoints know (no ``_orig_mod.`` prefix). Per-task gradients, Gramians and the final weighted backward
go through the compiled graph's backward like any autograd graph.

Fallback (ours): when a call of the compiled forward raises (graph capture or the backend fails) and the
same call runs eagerly, the model stays eager for the rest of the run and one warning line names the
reason; an error that eager execution raises too is the model's own and propagates. A model transform that
rebuilds the model mid-run (DTME / Recon expansion, signalled by a new entry in ``trainer.model_spec
["transforms"]``) gets a fresh compilation of the new forward (:meth:`Compiler.refresh`).
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

    @property
    def enabled(self) -> bool:
        return self.backend is not None and self.failed is None

    def apply(self, model: torch.nn.Module, version: int = 0) -> torch.nn.Module:
        """Compile ``model``'s forward in place (no-op when off or after a failure)."""
        self._version = version
        if not self.enabled:
            return model
        compiled = torch.compile(model._call_impl, backend=self.backend, **self.options)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # capture / backend failure: run eagerly, then decide
                out = model._call_impl(*args, **kwargs)  # raises the model's own errors
                self._give_up(model, e)
                return out

        model._compiled_call_impl = call
        self.compilations += 1
        return model

    def refresh(self, model: torch.nn.Module, version: int) -> None:
        """Recompile when the model changed (``version``: the number of transforms applied so far)."""
        if self._version is not None and version != self._version:
            model._compiled_call_impl = None
            self.apply(model, version)

    def _give_up(self, model: torch.nn.Module, error: Exception) -> None:
        model._compiled_call_impl = None
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        self.failed = f"{type(error).__name__}: {reason}"
        warnings.warn(f"compile={self.backend!r}: graph capture failed ({self.failed}); running the model eagerly",
                      RuntimeWarning, stacklevel=3)


def is_compiled(model: torch.nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None
