"""CLI helpers: ``--method-opt key=value`` parsing and the ``mtlkit methods`` table."""

from __future__ import annotations

from typing import Any

import yaml

from mtlkit.errors import MtlkitError


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets/braces: ``"c=0.4,w={a: 1, b: 2}"`` -> two items."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    # a comma-separated list value ("weights=1,2") stays whole: a part without "=" joins the previous one
    merged: list[str] = []
    for p in parts:
        if merged and "=" not in p:
            merged[-1] += "," + p
        else:
            merged.append(p)
    return [p for p in merged if p.strip()]


def parse_method_options(items: list[str] | None) -> dict[str, Any]:
    """``["c=0.4", "weights.edge=50", "weights={semseg: 1, depth: 2}"]`` -> an options dict.

    Values are YAML (numbers, booleans, ``null``, lists, mappings); a dotted key sets a nested entry; one
    item may hold several ``key=value`` separated by commas (outside brackets).
    """
    out: dict[str, Any] = {}
    for item in (part for entry in items or [] for part in _split_top_level(entry)):
        if "=" not in item:
            raise MtlkitError(f"--method-opt {item!r} must look like key=value (e.g. c=0.4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise MtlkitError(f"--method-opt {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise MtlkitError(f"--method-opt {item!r}: cannot parse the value ({e.__class__.__name__})") from None
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise MtlkitError(f"--method-opt {item!r}: {p!r} is already set to a non-mapping value")
        node[leaf] = value
    return out


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
    try:
        from mtlkit.strategies import STRATEGIES

        for n in STRATEGIES.names():
            cls = STRATEGIES.get(n)
            rows.append((n, "strategy", getattr(cls, "paper", "") or "-",
                         ", ".join(f"{k}={v}" for k, v in getattr(cls, "options", {}).items())))
            if getattr(cls, "notes", ""):
                notes.append(f"{n}: {cls.notes}")
    except ImportError:  # pragma: no cover - strategies are part of the package
        pass
    try:
        from mtlkit.models._transforms import TRANSFORMS

        for n in TRANSFORMS.names():
            fn = TRANSFORMS.get(n)
            rows.append((n, "architecture", getattr(fn, "paper", "") or "-",
                         ", ".join(f"{k}={v}" for k, v in getattr(fn, "options", {}).items())))
    except ImportError:  # pragma: no cover
        pass
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * min(max(len(x) for x in lines), 120))
    lines += ["", "Scale: every update has the scale of the method's official code (x T for cagrad, fairgrad, "
              "aligned_mtl; scale=mean gives TorchJD's); max_norm clipping as the official fairgrad, nash_mtl, famo."]
    lines += notes
    return "\n".join(lines)
