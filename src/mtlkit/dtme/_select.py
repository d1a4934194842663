"""Layer selection for Token Modulation (TM) and Token Expansion (TE) from per-layer conflict rates.

DESIGN.md §6.4. n = round(ρ·L) (half-up rounding, at least 1 when ρ > 0). Two readings of ρ:

- ``budget="total"`` (default, the paper's Fig. 6, whose x-axis is "the ratio of expanded layers to the
  total"): at most n layers are expanded in all, a layer with TM, TE or both counting once. The layers
  are ranked for TM by range-space conflict and for TE by null-space conflict; the two rankings are
  taken in rounds (round j: the j-th TM entry and the j-th TE entry, the one with the higher rate
  first, TM first on a tie), and the selection is the longest run of entries that falls on at most n
  distinct layers. A layer whose range and null conflicts both rank high gets both (the paper applies
  TM and TE "individually or jointly", App. B.3). Ranks, not rates, are compared across the two spaces,
  so a space whose rates run higher overall does not crowd the other module out. How the paper fills
  the budget is not written down; this is our reading.
- ``budget="each"``: n layers for TM and, independently, n layers for TE (their union can reach 2n).

Selections: ``conflict`` (the paper's standard: TM where range conflict is highest, TE where null conflict
is highest), ``reverse`` (least conflict first, paper Tab. 2), ``swap`` (TM ranked by null conflict, TE by
range conflict, paper Tab. 13), ``random`` (a seeded random ranking). ``apply``: ``both``, ``tm-only`` or
``te-only`` (only that kind's layers are ranked). Ties go to the earlier layer.

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


def _ranked(scores: Sequence[float], layers: Sequence[int], highest: bool, rng: random.Random | None) -> list[int]:
    """``layers`` best first (ties: the earlier layer); a seeded shuffle for ``rng``."""
    if rng is not None:
        out = sorted(layers)
        rng.shuffle(out)
        return out
    return sorted(layers, key=lambda i: ((-scores[i] if highest else scores[i]), i))


def _rounds(
    tm: list[int], te: list[int], tm_scores: Sequence[float], te_scores: Sequence[float], highest: bool,
    rng: random.Random | None,
) -> list[tuple[str, int]]:
    """(kind, layer) entries: round j holds the j-th TM and the j-th TE entry, the better one first."""
    out: list[tuple[str, int]] = []
    for j in range(max(len(tm), len(te))):
        pair = [("tm", tm[j], tm_scores[tm[j]])] if j < len(tm) else []
        pair += [("te", te[j], te_scores[te[j]])] if j < len(te) else []
        if len(pair) == 2:
            if rng is not None:
                rng.shuffle(pair)
            elif (pair[1][2] > pair[0][2]) if highest else (pair[1][2] < pair[0][2]):
                pair.reverse()
        out += [(kind, layer) for kind, layer, _ in pair]
    return out


def _fill(ranking: list[tuple[str, int]], n: int) -> tuple[list[int], list[int]]:
    """The longest run of ``ranking``'s entries, from the start, that falls on at most ``n`` distinct layers."""
    layers: set[int] = set()
    tm: list[int] = []
    te: list[int] = []
    for kind, layer in ranking:
        if layer not in layers and len(layers) == n:
            break
        layers.add(layer)
        (tm if kind == "tm" else te).append(layer)
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
    highest = selection != "reverse"
    tm = _ranked(tm_scores, tm_ok, highest, rng)
    te = _ranked(te_scores, te_ok, highest, rng)
    if budget == "each":
        return sorted(tm[:n]), sorted(te[:n])
    return _fill(_rounds(tm, te, tm_scores, te_scores, highest, rng), n)


def expanded_layers(tm_layers: Sequence[int], te_layers: Sequence[int]) -> list[int]:
    """The layers with TM, TE or both (each counted once)."""
    return sorted(set(tm_layers) | set(te_layers))
