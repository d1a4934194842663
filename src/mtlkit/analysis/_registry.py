"""Plot registry for ``mtlkit analyze RUN``: each plotter reads what it needs from a run directory.

A plotter is ``fn(run_dir: Path, out_dir: Path) -> list[Path]`` and returns ``[]`` when the run holds no
data for it (e.g. no gradient statistics were recorded), so ``analyze`` simply runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mtlkit._registry import Registry

Plotter = Callable[[Path, Path], list[Path]]
PLOTTERS: Registry[Plotter] = Registry("plot")
