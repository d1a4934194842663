"""The one KEY=VALUE parser of every ``--*-opt`` flag: a table of good inputs and a table of bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from mtlkit._kv import parse_kv
from mtlkit.errors import MtlkitError

GOOD: list[tuple[list[str] | None, dict[str, Any]]] = [
    (None, {}),
    ([], {}),
    (["c=0.4"], {"c": 0.4}),
    (["c=0.4", "mode=last,n=3"], {"c": 0.4, "mode": "last", "n": 3}),
    (["scale_range=[0.5,1.5]"], {"scale_range": [0.5, 1.5]}),
    (["scale_range=[0.5, 1.5],flip=true"], {"scale_range": [0.5, 1.5], "flip": True}),
    (["weights={semseg: 1, edge: 50}"], {"weights": {"semseg": 1, "edge": 50}}),
    (["w={a: [1, 2], b: {c: 3}},k=2"], {"w": {"a": [1, 2], "b": {"c": 3}}, "k": 2}),
    (["weights.edge=50", "weights.depth=2"], {"weights": {"edge": 50, "depth": 2}}),
    (["weights={semseg: 1}", "weights.edge=50"], {"weights": {"semseg": 1, "edge": 50}}),
    (["max_iters=null", "empty=", "flag=false"], {"max_iters": None, "empty": None, "flag": False}),
    (["lr=1e-3", "big=2E5", "x=1.5e3", "neg=-4e-2"], {"lr": 0.001, "big": 200000.0, "x": 1500.0, "neg": -0.04}),
    (["n=3", "v=0x10", "s=-7"], {"n": 3, "v": 16, "s": -7}),  # YAML ints stay ints
    (["name='a,b'", 'other="x, y=z"'], {"name": "a,b", "other": "x, y=z"}),
    (['q="say \\"hi\\", ok"'], {"q": 'say "hi", ok'}),
    (["tags=['a,b', c]"], {"tags": ["a,b", "c"]}),
    (["path=/data/nyud", "expr=a=b"], {"path": "/data/nyud", "expr": "a=b"}),  # value keeps later '='
    (["text=it's"], {"text": "it's"}),  # an apostrophe inside a plain scalar opens no quote
    ([" c = 0.4 ,  mode = last "], {"c": 0.4, "mode": "last"}),
    (["on=features"], {"on": "features"}),
    (["a-b=1", "_x.y_z=2"], {"a-b": 1, "_x": {"y_z": 2}}),
    (["version=1.10"], {"version": 1.1}),  # YAML semantics: quote to keep "1.10"
    (["version='1.10'"], {"version": "1.10"}),
]


@pytest.mark.parametrize(("items", "expected"), GOOD, ids=[str(i) for i, _ in GOOD])
def test_good_inputs(items: list[str] | None, expected: dict[str, Any]) -> None:
    assert parse_kv(items, "--x-opt") == expected


BAD: list[tuple[list[str], str]] = [
    (["c0.4"], r"--method-opt 'c0.4': must look like key=value"),
    (["weights=1,2"], r"--method-opt '2': must look like key=value .*brackets: key=\[1,2\]"),
    (["=4"], r"--method-opt '=4': empty key"),
    (["a b=4"], r"--method-opt 'a b=4': key 'a b' is not a name"),
    (["a.=4"], r"key 'a.' is not a name"),
    (["c=1,c=2"], r"--method-opt 'c=2': duplicate key 'c'"),
    (["c=1", "c=2"], r"duplicate key 'c'"),
    (["w.a=1", "w.a=2"], r"duplicate key 'w.a'"),
    (["w.a=1", "w={a: 3}"], r"duplicate key 'w'"),
    (["w=3", "w.a=1"], r"key 'w' is already set to a non-mapping value"),
    (["scale_range=[0.5,1.5"], r"--method-opt 'scale_range=\[0.5,1.5': unclosed '\[' in the value of 'scale_range'"),
    (["a=1,scale_range=0.5,1.5]"], r"unbalanced '\]' in the value of 'scale_range'"),
    (["w={a: [1, 2}]"], r"unbalanced '}' in the value of 'w'"),
    (["name='abc"], r"unclosed quote ' in the value of 'name'"),
    (["c=1,"], r"empty KEY=VALUE pair"),
    (["c=1,,d=2"], r"empty KEY=VALUE pair"),
    ([""], r"empty KEY=VALUE pair"),
    (["w={a: 1, a: 2}x"], r"cannot read the value of 'w' as YAML"),
    (["w=a: b: c"], r"cannot read the value of 'w' as YAML"),
    (["x=!!python/name:os.system"], r"cannot read the value of 'x' as YAML"),
]


@pytest.mark.parametrize(("items", "message"), BAD, ids=[str(i) for i, _ in BAD])
def test_bad_inputs_raise_one_line_naming_flag_and_key(items: list[str], message: str) -> None:
    with pytest.raises(MtlkitError, match=message) as info:
        parse_kv(items, "--method-opt")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("--method-opt ")
