"""Multi-task architectures: MTAN, MTI-Net, InvPT, TaskPrompter (and their single-task twins).

Each is an :class:`ArchModel` implementing mtlkit's model protocol (see :mod:`mtlkit.models.arch._base`):
``forward(x, tasks=None, return_features=False)``, ``forward_features`` / ``forward_heads`` where a shared
representation exists, ``shared_parameters()`` / ``task_parameters(t)`` / ``last_shared_parameters()``,
auxiliary predictions in ``model.aux`` and ``task_losses(outputs, targets, tasks)`` -> one loss per task.
``ARCHS`` maps the ``--arch`` names to the classes; ``Cls.single_task(backbone, task, channels)`` builds the
imbalance study's "architecture single-task" twin; ``published(arch, dataset)`` the papers' configurations;
``build_arch_model`` the ``--arch`` builder (``shared`` = the plain encoder + heads).
Sizes and parameter counts: ``docs/architectures.md``.
"""

from mtlkit._registry import Registry
from mtlkit.models.arch._base import ArchModel, count_parameters
from mtlkit.models.arch._presets import PUBLISHED, Published, published
from mtlkit.models.arch.invpt import InvPT
from mtlkit.models.arch.mtan import MTAN
from mtlkit.models.arch.mtinet import MTINet
from mtlkit.models.arch.taskprompter import TaskPrompter

ARCHS: Registry[type[ArchModel]] = Registry("architecture")
for _cls in (MTAN, MTINet, InvPT, TaskPrompter):
    ARCHS.register(_cls.arch, _cls)

from mtlkit.models.arch._build import arch_names, build_arch_model  # noqa: E402  (needs ARCHS)

__all__ = [
    "ARCHS",
    "PUBLISHED",
    "ArchModel",
    "InvPT",
    "MTAN",
    "MTINet",
    "Published",
    "TaskPrompter",
    "arch_names",
    "build_arch_model",
    "count_parameters",
    "published",
]
