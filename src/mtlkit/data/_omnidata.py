"""The Omnidata / Taskonomy folder layout, shared by the Taskonomy and Replica loaders.

Files are ``point_<p>_view_<v>_domain_<task>.png`` inside ``<root>/<task>/<building>/`` or, as the Omnidata
downloader and Chen et al.'s loader lay them out, ``<root>/<task>/<component>/<building>/`` (component
``taskonomy`` or ``replica``). Splits come from the Omnidata CSVs (``id,train,val,test`` with 0/1 flags per
building): ``train_val_test_<size>.csv`` in the root, in ``splits_<component>/`` (Chen et al.) or as
``<component>_train_val_test_<size>.csv``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from mtlkit.data._io import layout_error, read_lines
from mtlkit.errors import MtlkitError

View = tuple[int, int]  # (point, view)


def task_dir(root: Path, task: str, component: str) -> Path:
    """``<root>/<task>/<component>`` when it exists, else ``<root>/<task>``."""
    nested = root / task / component
    return nested if nested.is_dir() else root / task


def view_file(root: Path, task: str, component: str, building: str, view: View, ext: str = "png") -> Path:
    return task_dir(root, task, component) / building / f"point_{view[0]}_view_{view[1]}_domain_{task}.{ext}"


def list_views(folder: Path, task: str, ext: str = "png") -> set[View]:
    """(point, view) of every ``point_P_view_V_domain_<task>.<ext>`` file in ``folder`` (empty if missing)."""
    if not folder.is_dir():
        return set()
    pattern = re.compile(rf"^point_(\d+)_view_(\d+)_domain_{re.escape(task)}\.{ext}$")
    out = set()
    for name in (e.name for e in folder.iterdir()):
        m = pattern.match(name)
        if m:
            out.add((int(m.group(1)), int(m.group(2))))
    return out


def find_split_csv(root: Path, component: str, size: str | None, layout: str) -> Path:
    """The split CSV for ``size`` (e.g. tiny / medium / full / fullplus / replica), or the only one present."""
    folders = [root, root / f"splits_{component}", root / "splits"]
    if size is not None:
        names = [f"train_val_test_{size}.csv", f"{component}_train_val_test_{size}.csv"]
        for folder in folders:
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        raise layout_error(component, root / f"train_val_test_{size}.csv", f"no split file for split_size={size!r}",
                           layout)
    found = sorted({p for folder in folders if folder.is_dir() for p in folder.glob("*train_val_test_*.csv")})
    if len(found) == 1:
        return found[0]
    if not found:
        raise layout_error(component, root / "train_val_test_<size>.csv", "no split CSV found", layout)
    sizes = [p.stem.split("train_val_test_")[-1] for p in found]
    raise MtlkitError(f"{component}: several split files in {root} ({', '.join(p.name for p in found)}); "
                      f"choose one with --dataset-opt split_size=NAME (one of {', '.join(sizes)})")


def read_split_csv(path: Path) -> dict[str, list[str]]:
    """Buildings per split from an Omnidata CSV ``id,train,val,test`` (rows with a 1 in a column)."""
    lines = read_lines(path)
    if not lines or [c.strip() for c in lines[0].split(",")][:4] != ["id", "train", "val", "test"]:
        raise MtlkitError(f"{path}: expected a CSV with header id,train,val,test")
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for n, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 4:
            raise MtlkitError(f"{path}:{n}: expected 4 comma-separated columns, got {line!r}")
        for split, flag in zip(("train", "val", "test"), cells[1:4], strict=True):
            if flag not in ("0", "1"):
                raise MtlkitError(f"{path}:{n}: flag {flag!r} for {split} (expected 0 or 1)")
            if flag == "1":
                out[split].append(cells[0])
    return out


def index_views(
    root: Path, component: str, buildings: list[str], domains: list[str], strict: bool, layout: str
) -> list[tuple[str, View]]:
    """(building, view) of every view that has a file for each domain; incomplete views are dropped with a
    warning (or an error when ``strict``), buildings without any rgb folder are skipped with a warning."""
    items: list[tuple[str, View]] = []
    missing_buildings, dropped = [], 0
    example = None
    for b in buildings:
        rgb = list_views(task_dir(root, "rgb", component) / b, "rgb")
        if not rgb:
            missing_buildings.append(b)
            continue
        common = set(rgb)
        for d in domains:
            have = list_views(task_dir(root, d, component) / b, d)
            lost = common - have
            if lost and example is None:
                example = view_file(root, d, component, b, min(lost))
            common &= have
        dropped += len(rgb) - len(common)
        items.extend((b, v) for v in sorted(common))
    if strict and (dropped or missing_buildings):
        raise layout_error(component, example or task_dir(root, "rgb", component) / missing_buildings[0],
                           f"{dropped} incomplete view(s), {len(missing_buildings)} building(s) without rgb", layout)
    if missing_buildings:
        warnings.warn(f"{component}: {len(missing_buildings)} building(s) of the split have no rgb folder "
                      f"(e.g. {task_dir(root, 'rgb', component) / missing_buildings[0]}); skipped", stacklevel=3)
    if dropped:
        warnings.warn(f"{component}: dropped {dropped} view(s) lacking a file of a requested task "
                      f"(e.g. {example}); run `mtlkit data check` to list them", stacklevel=3)
    if not items:
        raise layout_error(component, task_dir(root, "rgb", component), "no complete view in the split", layout)
    return items
