"""Diagnostics: gradient statistics, inter-task affinity, token-space conflicts, and their plots."""

from mtlkit.analysis._affinity_plots import grouping_frequency, load_selective_log, plot_affinity
from mtlkit.analysis._gradstats import GradStatsRecorder, gradient_statistics, plot_grad_stats, plot_weights
from mtlkit.analysis._multi import MULTI_PLOTTERS, MultiPlotter, run_label
from mtlkit.analysis._radar import radar_chart, radar_values
from mtlkit.analysis._registry import PLOTTERS, Plotter

__all__ = [
    "MULTI_PLOTTERS",
    "PLOTTERS",
    "GradStatsRecorder",
    "MultiPlotter",
    "Plotter",
    "gradient_statistics",
    "grouping_frequency",
    "load_selective_log",
    "plot_affinity",
    "plot_grad_stats",
    "plot_weights",
    "radar_chart",
    "radar_values",
    "run_label",
]
