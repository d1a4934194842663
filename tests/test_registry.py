"""Registries: names map to code; unknown names and options fail with the valid choices listed."""

from __future__ import annotations

import pytest

from mtlkit import balancing
from mtlkit._registry import Registry
from mtlkit.errors import MtlkitError, UnknownNameError
from mtlkit.models import BACKBONES, HEADS
from mtlkit.tasks import TASKS


def test_register_get_and_case_insensitive_names() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("Alpha")
    def alpha() -> str:
        return "a"

    reg.register("beta", str)
    assert reg.get("alpha") is alpha and reg.get("ALPHA") is alpha
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"] and len(reg) == 2
    assert "Beta" in reg and "gamma" not in reg and 3 not in reg
    reg.register("beta", str)  # re-registering the same object is harmless (module re-import)
    with pytest.raises(ValueError, match="widget 'beta' is registered twice"):
        reg.register("beta", int)


def test_unknown_name_lists_valid_ones() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UnknownNameError) as err:
        reg.get("gamma")
    assert str(err.value) == "unknown widget 'gamma'; valid widgets: alpha, beta"  # no KeyError quoting
    assert isinstance(err.value, MtlkitError) and isinstance(err.value, KeyError)


@pytest.mark.parametrize(
    ("registry", "bad", "valid"),
    [(TASKS, "segm", "semseg"), (HEADS, "mlp", "linear"), (BACKBONES, "vit-h", "micro"), (balancing.BALANCERS,
     "gd", "equal")],
)
def test_library_registries_list_their_names(registry: Registry, bad: str, valid: str) -> None:
    with pytest.raises(UnknownNameError, match=f"valid .*{valid}"):
        registry.get(bad)


def test_balancing_get_unknown_method_and_options() -> None:
    with pytest.raises(UnknownNameError, match="valid methods: .*equal.*fixed"):
        balancing.get("equall")
    with pytest.raises(MtlkitError, match=r"method 'fixed' has no option\(s\) alpha; valid: weights"):
        balancing.get("fixed", alpha=1.5)
    with pytest.raises(MtlkitError, match="valid: none"):
        balancing.get("equal", weights={"a": 1})
    assert isinstance(balancing.get("Equal"), balancing.Equal)


def test_bad_option_values_are_one_line_errors_that_list_the_options() -> None:
    """A wrong type from the command line (``--method-opt c=abc``) names the method, the value and the options."""
    from mtlkit import strategies

    with pytest.raises(MtlkitError, match=r"method 'cagrad': bad option value\(s\) c='abc' .*c \(default 0.4\)"):
        balancing.get("cagrad", c="abc")
    with pytest.raises(MtlkitError, match=r"strategy 'selective': bad option value\(s\) warmup='abc' .*warmup"):
        strategies.get("selective", warmup="abc")
    assert balancing.get("fixed", tasks=["a"], weights={"a": 2}).fixed == {"a": 2.0}
