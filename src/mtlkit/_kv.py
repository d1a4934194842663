"""The one ``KEY=VALUE`` parser behind every ``--*-opt`` flag (and ``--weights``, ``--dtme k=v``, ...).

Values have YAML scalar and list semantics: ``c=0.4`` -> 0.4, ``on=params`` -> "params", ``flag=true`` ->
True, ``x=null`` -> None, ``scale_range=[0.5,1.5]`` -> [0.5, 1.5], ``w={a: 1}`` -> {"a": 1}. One item may
hold several pairs separated by commas outside brackets (``rho=0.5,tokens=6``); a dotted key sets a nested
entry (``weights.edge=50``). Every mistake is a one-line :class:`~mtlkit.errors.MtlkitError` naming the
flag and the key.
"""

from __future__ import annotations

from typing import Any

import yaml

from mtlkit.errors import MtlkitError


def split_items(text: str) -> list[str]:
    """Split at commas outside brackets / braces / quotes: ``"a=[1,2],b=3"`` -> ``["a=[1,2]", "b=3"]``.

    A piece without ``=`` belongs to the previous value (``weights=1,2`` stays one item).
    """
    parts: list[str] = []
    depth, quote, cur = 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    merged: list[str] = []
    for p in parts:
        if merged and "=" not in p:
            merged[-1] += "," + p
        else:
            merged.append(p)
    return [p.strip() for p in merged if p.strip()]


def parse_value(raw: str, flag: str, key: str) -> Any:
    """One value as YAML (empty -> None); a value YAML cannot read is a one-line error."""
    if not raw.strip():
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise MtlkitError(
            f"{flag} {key}={raw}: cannot read the value (YAML scalar or list, e.g. 0.5, true, [0.5, 1.5])"
        ) from None


def parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["c=0.4", "mode=last,n=3", "r=[0.5,1.5]"]`` -> ``{"c": 0.4, "mode": "last", "n": 3, "r": [0.5, 1.5]}``."""
    out: dict[str, Any] = {}
    for item in (part for entry in items or [] for part in split_items(str(entry))):
        if "=" not in item:
            raise MtlkitError(f"{flag} {item!r} must look like key=value (e.g. {flag} c=0.4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not k for k in key.split(".")):
            raise MtlkitError(f"{flag} {item!r} has an empty key; write key=value")
        value = parse_value(raw, flag, key)
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise MtlkitError(f"{flag} {key}: {p!r} is already set to a non-mapping value")
        node[leaf] = value
    return out
