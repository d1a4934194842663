"""Layer selection for Token Modulation (TM) and Token Expansion (TE) from per-layer conflict rates.

DESIGN.md §6.4: n = round(ρ·L) layers (half-up rounding, at least 1 when ρ > 0). ``conflict`` (the
paper's standard): TM on the n layers with the most range-space conflict, TE on the n layers with the most
null-space conflict; a layer may get both. Ablations (paper Tab. 2 and 13): ``reverse`` (least conflict),
``random`` (seeded, TM and TE drawn independently), ``swap`` (TE on the range-ranked layers, TM on the
null-ranked). ``apply``: ``both``, ``tm-only`` or ``te-only``. Ties go to the earlier layer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from mtlkit.errors import MtlkitError

SELECTIONS = ("conflict", "random", "reverse", "swap")
APPLY_MODES = ("both", "tm-only", "te-only")


def num_layers(rho: float, depth: int) -> int:
    """n = round(ρ·L), rounding halves up (0.5·L for odd L takes the extra layer), clipped to [0, L]."""
    if not 0.0 <= rho <= 1.0:
        raise MtlkitError(f"expansion ratio rho must be in [0, 1], got {rho}")
    n = int(math.floor(rho * depth + 0.5))
    return min(depth, max(1 if rho > 0 else 0, n))


def _top(rates: Sequence[float], n: int, highest: bool) -> list[int]:
    order = sorted(range(len(rates)), key=lambda i: ((-rates[i] if highest else rates[i]), i))
    return sorted(order[:n])


def select_layers(
    range_rates: Sequence[float],
    null_rates: Sequence[float],
    *,
    rho: float = 0.5,
    selection: str = "conflict",
    apply: str = "both",
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """(TM layers, TE layers), each sorted ascending."""
    if len(range_rates) != len(null_rates):
        raise MtlkitError(f"{len(range_rates)} range rates but {len(null_rates)} null rates")
    if selection not in SELECTIONS:
        raise MtlkitError(f"unknown layer selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if apply not in APPLY_MODES:
        raise MtlkitError(f"unknown DTME mode {apply!r}; valid: {', '.join(APPLY_MODES)}")
    depth = len(range_rates)
    n = num_layers(rho, depth)
    if selection == "conflict":
        tm, te = _top(range_rates, n, True), _top(null_rates, n, True)
    elif selection == "reverse":
        tm, te = _top(range_rates, n, False), _top(null_rates, n, False)
    elif selection == "swap":
        tm, te = _top(null_rates, n, True), _top(range_rates, n, True)
    else:
        rng = random.Random(seed)
        tm, te = sorted(rng.sample(range(depth), n)), sorted(rng.sample(range(depth), n))
    if apply == "tm-only":
        te = []
    elif apply == "te-only":
        tm = []
    return tm, te
