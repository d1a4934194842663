"""File reading for the real-dataset loaders: every failure names the file and what was expected.

Loaders and ``mtlkit data check`` share these readers, so a file the check accepts is a file training reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mtlkit.errors import MtlkitError

#: where users read how to obtain each dataset and the layout mtlkit expects
DOCS = "docs/datasets.md"


def layout_error(dataset: str, path: Path | str, problem: str, layout: str) -> MtlkitError:
    """An error for a missing / malformed dataset tree: what is wrong, where, and the expected layout."""
    return MtlkitError(
        f"{dataset}: {problem}: {path}\nexpected layout:\n{layout}\n"
        f"(see {DOCS}; `mtlkit data check --dataset {dataset} --data-root ROOT` lists every problem)"
    )


def require_root(dataset: str, root: str | Path | None, layout: str) -> Path:
    """``root`` as a Path, or an error naming the flag to set and the layout to put there."""
    if root is None:
        raise MtlkitError(
            f"{dataset} needs --data-root PATH (the folder holding the dataset)\nexpected layout:\n{layout}\n"
            f"(see {DOCS})"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise layout_error(dataset, path, "data root is not a folder", layout)
    return path


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to an array in its own mode (uint8 L/P/RGB, uint16 I;16, int32 I)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L"):
                    return np.array(im, dtype=np.uint16)
                return np.array(im)
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise MtlkitError(f"unreadable image {path}: {e}") from None


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) (grey or palette images are converted as PIL's ``convert('RGB')`` does)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"unreadable image {path}: {e}") from None


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"unreadable .npy file {path}: {e}") from None


def read_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"unreadable .mat file {path}: {e}") from None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a split list (``\\r``, ``\\n`` or ``\\r\\n`` line ends)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]
