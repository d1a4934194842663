"""Layer selection for Token Modulation (TM) and Token Expansion (TE) from per-layer conflict rates.

DESIGN.md §6.4. n = round(ρ·L) (half-up rounding, at least 1 when ρ > 0). Two readings of ρ:

- ``budget="total"`` (default, the paper's Fig. 6, whose x-axis is "the ratio of expanded layers to the
  total"): at most n layers are expanded in all, a layer with TM, TE or both counting once. The
  candidates are the (layer, TM) entries ranked by range-space conflict and the (layer, TE) entries
  ranked by null-space conflict, merged into one ranking (both rates are shares of conflicting
  (token, pair), so they compare); the selection is the longest head of that ranking whose entries fall
  on at most n distinct layers. A layer whose range and null conflicts both rank high gets both (the
  paper applies TM and TE "individually or jointly", App. B.3). How the paper fills the budget is not
  written down; the merged ranking is our reading.
- ``budget="each"``: n layers for TM and, independently, n layers for TE (their union can reach 2n).

Selections: ``conflict`` (the paper's standard: TM where range conflict is highest, TE where null conflict
is highest), ``reverse`` (least conflict first, paper Tab. 2), ``swap`` (TM ranked by null conflict, TE by
range conflict, paper Tab. 13), ``random`` (a seeded random ranking). ``apply``: ``both``, ``tm-only`` or
``te-only`` (only that kind's entries are ranked). Ties go to the earlier layer, then TM before TE.

TE of layer l appends task tokens to the output tokens X_l of block l, which then take part in the
attention of block l + 1; the last block's output enters no further block, so it is never a TE
candidate (``te_candidates``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from mtlkit.errors import MtlkitError

SELECTIONS = ("conflict", "random", "reverse", "swap")
APPLY_MODES = ("both", "tm-only", "te-only")
BUDGETS = ("total", "each")


def num_layers(rho: float, depth: int) -> int:
    """n = round(ρ·L), rounding halves up (0.5·L for odd L takes the extra layer), clipped to [0, L]."""
    if not 0.0 <= rho <= 1.0:
        raise MtlkitError(f"expansion ratio rho must be in [0, 1], got {rho}")
    n = int(math.floor(rho * depth + 0.5))
    return min(depth, max(1 if rho > 0 else 0, n))


def _ranking(
    tm_scores: Sequence[float], te_scores: Sequence[float], tm_ok: Sequence[int], te_ok: Sequence[int],
    highest: bool, rng: random.Random | None,
) -> list[tuple[str, int]]:
    """(kind, layer) entries, best first; kind 0 = TM, 1 = TE (ties: earlier layer, then TM)."""
    entries = [(0, i, tm_scores[i]) for i in tm_ok] + [(1, i, te_scores[i]) for i in te_ok]
    if rng is not None:
        entries.sort(key=lambda e: (e[1], e[0]))
        rng.shuffle(entries)
    else:
        entries.sort(key=lambda e: ((-e[2] if highest else e[2]), e[1], e[0]))
    return [("tm" if k == 0 else "te", i) for k, i, _ in entries]


def _fill(ranking: list[tuple[str, int]], n: int) -> tuple[list[int], list[int]]:
    """The longest head of ``ranking`` whose entries fall on at most ``n`` distinct layers."""
    layers: set[int] = set()
    tm: list[int] = []
    te: list[int] = []
    for kind, layer in ranking:
        if layer not in layers and len(layers) == n:
            break
        layers.add(layer)
        (tm if kind == "tm" else te).append(layer)
    return sorted(tm), sorted(te)


def _each(ranking: list[tuple[str, int]], n: int) -> tuple[list[int], list[int]]:
    tm = [i for k, i in ranking if k == "tm"][:n]
    te = [i for k, i in ranking if k == "te"][:n]
    return sorted(tm), sorted(te)


def select_layers(
    range_rates: Sequence[float],
    null_rates: Sequence[float],
    *,
    rho: float = 0.5,
    selection: str = "conflict",
    apply: str = "both",
    budget: str = "total",
    seed: int = 0,
    te_candidates: Sequence[int] | None = None,
) -> tuple[list[int], list[int]]:
    """(TM layers, TE layers), each sorted ascending (see the module docstring).

    ``te_candidates``: layers that may get TE (default: all but the last, whose output enters no block).
    """
    if len(range_rates) != len(null_rates):
        raise MtlkitError(f"{len(range_rates)} range rates but {len(null_rates)} null rates")
    if selection not in SELECTIONS:
        raise MtlkitError(f"unknown layer selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    if apply not in APPLY_MODES:
        raise MtlkitError(f"unknown DTME mode {apply!r}; valid: {', '.join(APPLY_MODES)}")
    if budget not in BUDGETS:
        raise MtlkitError(f"unknown DTME budget {budget!r}; valid: {', '.join(BUDGETS)}")
    depth = len(range_rates)
    n = num_layers(rho, depth)
    tm_ok = list(range(depth)) if apply != "te-only" else []
    te_ok = sorted(set(range(depth - 1) if te_candidates is None else te_candidates)) if apply != "tm-only" else []
    if any(not 0 <= i < depth for i in te_ok):
        raise MtlkitError(f"TE candidate layers {te_ok} out of range for {depth} layers")
    if selection == "swap":
        tm_scores, te_scores = null_rates, range_rates
    else:
        tm_scores, te_scores = range_rates, null_rates
    rng = random.Random(seed) if selection == "random" else None
    ranking = _ranking(tm_scores, te_scores, tm_ok, te_ok, highest=selection != "reverse", rng=rng)
    return _fill(ranking, n) if budget == "total" else _each(ranking, n)


def expanded_layers(tm_layers: Sequence[int], te_layers: Sequence[int]) -> list[int]:
    """The layers with TM, TE or both (each counted once)."""
    return sorted(set(tm_layers) | set(te_layers))
