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
#: the fix for a file that cannot be decoded
REFETCH = "re-extract or re-download this file (`mtlkit data check` lists every bad file)"


def layout_error(dataset: str, path: Path | str, problem: str, layout: str = "") -> MtlkitError:
    """A one-line error for a missing / malformed dataset tree: what is wrong, where, and where to read the
    expected layout (``layout``, the module's layout text, is what docs/datasets.md shows)."""
    del layout
    return MtlkitError(
        f"{dataset}: {problem}: {path}; expected the {dataset} layout of {DOCS} "
        f"(`mtlkit data check --dataset {dataset} --data-root ROOT` lists every problem)"
    )


def require_root(dataset: str, root: str | Path | None, layout: str = "") -> Path:
    """``root`` as a Path, or a one-line error naming the flag to set and where the layout is described."""
    if root is None:
        raise MtlkitError(f"{dataset} needs --data-root PATH (the folder holding the dataset, laid out as {DOCS} "
                          "describes)")
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
        raise MtlkitError(f"{path}: unreadable image: {one_line(e)}; {REFETCH}") from None


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) (grey or palette images are converted as PIL's ``convert('RGB')`` does)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"{path}: unreadable image: {one_line(e)}; {REFETCH}") from None


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"{path}: unreadable .npy file: {one_line(e)}; {REFETCH}") from None


def read_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except Exception as e:
        raise MtlkitError(f"{path}: unreadable .mat file: {one_line(e)}; {REFETCH}") from None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a split list (``\\r``, ``\\n`` or ``\\r\\n`` line ends).

    A folder, an unreadable or a binary file is a one-line error naming the file and what it should hold.
    """
    expected = "expected a text file with one id per line"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MtlkitError(f"missing file: {path}") from None
    except UnicodeDecodeError:
        raise MtlkitError(f"{path}: unreadable split list (not a text file); {expected}") from None
    except OSError as e:
        raise MtlkitError(f"{path}: unreadable split list ({one_line(e.strerror or e)}); {expected}") from None
    if "\x00" in text:
        raise MtlkitError(f"{path}: unreadable split list (not a text file: NUL bytes); {expected}")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def one_line(message: object) -> str:
    """``message`` as one line (library errors sometimes span several)."""
    return " ".join(str(message).split())
