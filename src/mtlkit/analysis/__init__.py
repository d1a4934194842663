"""Diagnostics: gradient statistics, inter-task affinity, token-space conflicts, and their plots."""

from mtlkit.analysis._gradstats import GradStatsRecorder, gradient_statistics, plot_grad_stats, plot_weights
from mtlkit.analysis._registry import PLOTTERS, Plotter

__all__ = ["PLOTTERS", "GradStatsRecorder", "Plotter", "gradient_statistics", "plot_grad_stats", "plot_weights"]
