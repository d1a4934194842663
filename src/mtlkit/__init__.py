"""mtlkit: multi-task learning for PyTorch.

``mtlkit.Trainer`` trains any model that returns ``{task: output}`` with a balancing method (loss
weightings, gradient aggregators, AvgNorm), an update strategy (joint, selective task group updates) and
model transforms (DTME-MTL, Recon); ``mtlkit.baselines`` trains single-task baselines for Δm. The engine
(Trainer, baselines) is imported on first use, so ``import mtlkit`` stays light.
"""

from typing import Any

from mtlkit import balancing, data, dtme, metrics, models, strategies  # dtme registers its transforms and plots
from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.tasks import TASKS, Task, make_task

__version__ = "0.1.0"

_LAZY = {"Trainer": "mtlkit.engine", "Config": "mtlkit.engine", "baselines": "mtlkit.baselines",
         "engine": "mtlkit.engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if module.__name__.endswith(name) else getattr(module, name)
    raise AttributeError(f"module 'mtlkit' has no attribute {name!r}")


__all__ = [
    "TASKS",
    "Config",
    "MtlkitError",
    "Task",
    "Trainer",
    "UnknownNameError",
    "balancing",
    "baselines",
    "data",
    "dtme",
    "engine",
    "make_task",
    "metrics",
    "models",
    "strategies",
]
