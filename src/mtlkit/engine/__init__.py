"""Training engine: config, Trainer, evaluation, checkpoints, single-task baselines, grid and bench suites."""

from mtlkit.engine._protocol import check_model
from mtlkit.engine._single_task import train_baselines, train_single_task_baselines, train_teachers
from mtlkit.engine.baselines import Baselines, find_baselines
from mtlkit.engine.checkpoint import load_model, save_model
from mtlkit.engine.config import Config, TrainConfig
from mtlkit.engine.evaluate import evaluate
from mtlkit.engine.trainer import Trainer

__all__ = ["Baselines", "Config", "TrainConfig", "Trainer", "check_model", "evaluate", "find_baselines",
           "load_model", "save_model", "train_baselines", "train_single_task_baselines", "train_teachers"]
