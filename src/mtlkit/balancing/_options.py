"""CLI helpers: ``--method-opt key=value`` parsing and the ``mtlkit methods`` table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtlkit._kv import parse_kv


def parse_method_options(items: list[str] | None) -> dict[str, Any]:
    """``["c=0.4", "weights.edge=50", "weights={semseg: 1, depth: 2}"]`` -> an options dict.

    Values are YAML (numbers, booleans, ``null``, lists, mappings); a dotted key sets a nested entry; one
    item may hold several ``key=value`` separated by commas (outside brackets). The one parser of every
    ``--*-opt`` flag: :func:`mtlkit._kv.parse_kv`.
    """
    return parse_kv(items, "--method-opt")


#: functions returning extra ``(name, kind, paper, options)`` rows for :func:`methods_table`; higher layers
#: (update strategies) register here so this module never imports them (no import cycle)
TABLE_ROWS: list[Callable[[], list[tuple[str, str, str, str]]]] = []
#: functions returning extra note lines printed under the table (e.g. a strategy's official recipes)
TABLE_NOTES: list[Callable[[], list[str]]] = []


def methods_table() -> str:
    """Name, kind, paper and key options of every balancing method, update strategy and model transform."""
    from mtlkit.balancing._base import BALANCERS

    rows = [("name", "kind", "paper", "options")]
    for n in BALANCERS.names():
        cls = BALANCERS.get(n)
        opts = ", ".join(f"{k}={v}" for k, v in cls.options.items() if k != "chunk_size")
        if cls.requires and any(r in ("cvxpy",) for r in cls.requires):
            opts = (opts + "; " if opts else "") + "needs mtlkit[solvers]"
        rows.append((n, cls.kind, cls.paper, opts))
    notes: list[str] = []
    for source in TABLE_ROWS:
        rows += source()
    for note_source in TABLE_NOTES:
        notes += note_source()
    from mtlkit.models._transforms import TRANSFORMS

    for n in TRANSFORMS.names():
        fn = TRANSFORMS.get(n)
        rows.append((n, "architecture", getattr(fn, "paper", "") or "-",
                     ", ".join(f"{k}={v}" for k, v in getattr(fn, "options", {}).items())))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * min(max(len(x) for x in lines), 120))
    lines += ["", "Scale: every update has the scale of the method's official code (x T for cagrad, fairgrad, "
              "aligned_mtl; scale=mean gives TorchJD's); max_norm clipping as the official fairgrad, nash_mtl, famo."]
    lines += notes
    return "\n".join(lines)
