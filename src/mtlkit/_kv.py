"""One ``KEY=VALUE`` parser for every ``--*-opt`` flag (methods, strategies, datasets, transforms, ...).

``parse_kv(["c=0.4", "mode=last,scale_range=[0.5,1.5]", "weights={semseg: 1, edge: 50}"], "--method-opt")``
-> ``{"c": 0.4, "mode": "last", "scale_range": [0.5, 1.5], "weights": {"semseg": 1, "edge": 50}}``.

- One item may hold several pairs separated by commas at the top level only: commas inside ``[]``, ``{}``
  or quotes do not split.
- A value is YAML (``yaml.safe_load``): numbers, ``true``/``false``, ``null``, quoted strings, flow lists and
  mappings; an empty value is ``null``. One deliberate change to PyYAML's YAML 1.1 rules: ``1e-3`` is the
  float 0.001 (YAML 1.2, as every user means it), not the string ``"1e-3"``.
- A dotted key sets a nested entry: ``weights.edge=50`` -> ``{"weights": {"edge": 50}}``.
- Every malformed input (no ``=``, an empty or odd key, a key given twice, unbalanced brackets or quotes, a
  YAML error) raises :class:`~mtlkit.errors.MtlkitError` with one line naming the flag and the key.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mtlkit.errors import MtlkitError

__all__ = ["parse_kv"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*\Z")
_OPEN, _CLOSE = "[{", "]}"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2: ``1e-3``, ``2E5`` and ``1.5e3`` are floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _fail(flag: str, text: str, problem: str) -> MtlkitError:
    return MtlkitError(f"{flag} {text!r}: {problem}")


def _split(item: str, flag: str) -> list[str]:
    """Split one item at top-level commas; brackets must balance and quotes close within the item."""
    parts: list[str] = []
    stack: list[str] = []
    quote = ""
    start = 0
    i = 0
    while i < len(item):
        ch = item[i]
        if quote:
            if quote == '"' and ch == "\\":
                i += 1  # an escaped character inside a double-quoted string
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and item[start:i].rstrip()[-1:] in ("", "=", "[", "{", ",", ":"):
            quote = ch  # a quoted YAML scalar starts a value or an entry; "it's" is a plain scalar
        elif ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if not stack or _OPEN.index(stack[-1]) != _CLOSE.index(ch):
                raise _fail(flag, item[start:], f"unbalanced {ch!r} in the value of {_key_of(parts, item[start:])}")
            stack.pop()
        elif ch == "," and not stack:
            parts.append(item[start:i])
            start = i + 1
        i += 1
    if quote or stack:
        what = f"unclosed quote {quote}" if quote else f"unclosed {stack[-1]!r}"
        raise _fail(flag, item[start:], f"{what} in the value of {_key_of(parts, item[start:])}")
    parts.append(item[start:])
    return parts


def _key_of(parts: list[str], segment: str) -> str:
    """The key whose value ``segment`` belongs to: its own, or (no '=' in it) the last pair's before it."""
    for text in (segment, *reversed(parts)):
        if "=" in text and text.split("=", 1)[0].strip():
            return repr(text.split("=", 1)[0].strip())
    return "the pair"


def _load(flag: str, pair: str, key: str, raw: str) -> Any:
    if not raw.strip():
        return None
    try:
        return yaml.load(raw, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _fail(flag, pair, f"cannot read the value of {key!r} as YAML ({problem}); quote a string "
                                f"value, e.g. {key}='...'") from None


def parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items of the command-line flag ``flag`` (named in every error) into a dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        for pair in _split(item, flag):
            if not pair.strip():
                raise _fail(flag, item, "empty KEY=VALUE pair (a stray comma?); write key=value pairs, e.g. c=0.4")
            if "=" not in pair:
                raise _fail(flag, pair.strip(), "must look like key=value (e.g. c=0.4); a list value needs "
                                                "brackets: key=[1,2]")
            key, raw = pair.split("=", 1)
            key = key.strip()
            if not key:
                raise _fail(flag, pair.strip(), "empty key; write key=value")
            if not _KEY.match(key):
                raise _fail(flag, pair.strip(), f"key {key!r} is not a name (letters, digits, _ and -, dots for "
                                                "a nested entry)")
            value = _load(flag, pair.strip(), key, raw)
            _set(out, key, value, flag, pair.strip())
    return out


def _set(out: dict[str, Any], key: str, value: Any, flag: str, pair: str) -> None:
    """Set ``out[a][b] = value`` for ``key = "a.b"``; a key given twice, or below a non-mapping, fails."""
    *parents, leaf = key.split(".")
    node = out
    for depth, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise _fail(flag, pair, f"key {'.'.join(parents[: depth + 1])!r} is already set to a non-mapping value")
    if leaf in node:
        raise _fail(flag, pair, f"duplicate key {key!r}; give each key once")
    node[leaf] = value
