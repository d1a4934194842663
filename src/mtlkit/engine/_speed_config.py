"""Validation of the speed keys of a run (``run.precision``, ``run.compile``, ``run.max_memory``)."""

from __future__ import annotations

import re
from typing import Any

from mtlkit.errors import MtlkitError

PRECISIONS = ("fp32", "bf16", "fp16")
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_bytes(value: Any, key: str = "max_memory") -> int:
    """``"8GB"`` / ``"512MiB"`` / ``"1.5G"`` / a number of bytes -> bytes (binary units: 1 GB = 2^30 B)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if m is None or m.group(2).upper() not in _UNITS or float(m.group(1)) <= 0:
        raise MtlkitError(f"{key}={value!r}: give a size such as 8GB, 512MB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def check_speed_keys(cfg: Any) -> None:
    if cfg.precision not in PRECISIONS:
        raise MtlkitError(f"precision={cfg.precision!r}: use one of {', '.join(PRECISIONS)}")
    if cfg.compile is not None and (not isinstance(cfg.compile, str) or not cfg.compile):
        raise MtlkitError(f"compile={cfg.compile!r}: give a torch.compile backend name (inductor, aot_eager, eager)")
    if cfg.max_memory is not None:
        parse_bytes(cfg.max_memory)
