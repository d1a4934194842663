"""mtlkit: multi-task learning for dense prediction.

Balancing methods (loss weightings, gradient aggregators, AvgNorm), selective task group updates,
DTME-MTL token modulation / expansion, benchmarks with their exact metrics, and diagnostics.
"""

from mtlkit import balancing, data, dtme, metrics, models  # dtme registers its model transforms and plots
from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.tasks import TASKS, Task, make_task

__version__ = "0.1.0"

__all__ = [
    "TASKS",
    "MtlkitError",
    "Task",
    "UnknownNameError",
    "balancing",
    "data",
    "dtme",
    "make_task",
    "metrics",
    "models",
]
