"""Tasks: what a head predicts, how it is trained (loss) and judged (meter, primary metric, directions).

- dense tasks of the papers (``semseg``, ``parts``, ``depth``, ``normals``, ``edge``, ``saliency``) and
  Taskonomy's: :mod:`mtlkit.tasks._dense`;
- MultiMNIST's ``left`` / ``right`` and the generic ``classification``, ``binary``, ``multilabel``:
  :mod:`mtlkit.tasks._classification`; the generic ``regression``: :mod:`mtlkit.tasks._regression`.

``make_task(name, **params)`` builds any of them; a user's own :class:`Task` (instance or subclass) plugs in
the same way (the contract is in the :class:`Task` docstring).
"""

from mtlkit.tasks._base import DISPLAYS, KINDS, TASKS, LossFn, Task, make_task, zero_loss
from mtlkit.tasks._classification import (
    binary_task,
    classification_loss,
    classification_task,
    masked_bce,
    masked_cross_entropy,
    multilabel_task,
)
from mtlkit.tasks._dense import (
    balanced_bce_loss,
    bce_loss,
    cross_entropy_loss,
    depth_l1_loss,
    masked_l1_loss,
    mse_loss,
    normals_l1_loss,
)
from mtlkit.tasks._regression import masked_regression_loss, regression_task

__all__ = [
    "DISPLAYS",
    "KINDS",
    "TASKS",
    "LossFn",
    "Task",
    "balanced_bce_loss",
    "bce_loss",
    "binary_task",
    "classification_loss",
    "classification_task",
    "cross_entropy_loss",
    "depth_l1_loss",
    "make_task",
    "masked_bce",
    "masked_cross_entropy",
    "masked_l1_loss",
    "masked_regression_loss",
    "mse_loss",
    "multilabel_task",
    "normals_l1_loss",
    "regression_task",
    "zero_loss",
]
