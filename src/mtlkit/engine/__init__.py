"""Training engine: config, trainer, evaluation, checkpoints, single-task baselines, benchmark suites."""

from mtlkit.engine.baselines import find_baselines, train_single_task_baselines
from mtlkit.engine.checkpoint import load_model, save_model
from mtlkit.engine.config import TrainConfig
from mtlkit.engine.evaluate import evaluate
from mtlkit.engine.trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "evaluate", "find_baselines", "load_model", "save_model",
           "train_single_task_baselines"]
