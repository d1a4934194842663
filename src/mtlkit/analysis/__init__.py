"""Diagnostics: gradient statistics, inter-task affinity, token-space conflicts, and their plots."""

from mtlkit.analysis._registry import PLOTTERS, Plotter

__all__ = ["PLOTTERS", "Plotter"]
