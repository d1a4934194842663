"""Diagnostics: gradient statistics, inter-task affinity, token-space conflicts, and their plots."""

from mtlkit.analysis._affinity_plots import grouping_frequency, load_selective_log, plot_affinity
from mtlkit.analysis._registry import PLOTTERS, Plotter

__all__ = ["PLOTTERS", "Plotter", "grouping_frequency", "load_selective_log", "plot_affinity"]
