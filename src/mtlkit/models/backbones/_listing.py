"""``mtlkit models``: presets and families with parameter counts (built on the meta device), checkpoint checks."""

from __future__ import annotations

from mtlkit.errors import MtlkitError
from mtlkit.models.backbones._presets import FAMILIES, VIT_PRESETS
from mtlkit.models.backbones._timm import checkpoint_report, count_parameters_meta


def _params(name: str, size: int) -> str:
    try:
        return f"{count_parameters_meta(name, (size, size)) / 1e6:.1f}"
    except MtlkitError:
        return "-"


def models_table(image_size: int = 224) -> str:
    """Markdown tables: mtlkit presets, then the tested timm families with example names."""
    lines = [f"Backbone parameters (M) at {image_size}x{image_size}, without heads.", "",
             "| preset | timm architecture | overrides | params M | |", "|---|---|---|---|---|"]
    for name, p in VIT_PRESETS.items():
        over = ", ".join(f"{k}={v}" for k, v in p.kwargs.items()) or "-"
        lines.append(f"| `{name}` | `{p.arch}` | {over} | {_params(name, image_size)} | {p.description} |")
    lines += ["", "| family | timm name | params M | dense features | DTME / Recon |", "|---|---|---|---|---|"]
    for fam in FAMILIES.values():
        for i, name in enumerate(fam.examples):
            feats = fam.features if i == 0 else ""
            dtme = ("yes" if fam.dtme else "no") if i == 0 else ""
            label = fam.name if i == 0 else ""
            lines.append(f"| {label} | `{name}` | {_params(name, image_size)} | {feats} | {dtme} |")
    lines += ["", "Any other timm model name works too (multi-scale features through timm's features_only); "
              "`--pretrained PATH` loads a local checkpoint, nothing is downloaded."]
    return "\n".join(lines)


def check_table(name: str, path: str, image_size: int = 224) -> str:
    """One line each: missing keys, unexpected keys (and shape mismatches, if any)."""
    rep = checkpoint_report(name, path, (image_size, image_size))
    out = []
    for kind in ("missing", "unexpected", "mismatched"):
        keys = sorted(rep[kind])
        if kind == "mismatched" and not keys:
            continue
        out.append(f"{kind} ({len(keys)}): {', '.join(keys) if keys else '-'}")
    return "\n".join(out)
