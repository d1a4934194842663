"""Morphological thinning of binary maps: MATLAB ``bwmorph(bw, 'thin', Inf)`` = ``skimage.morphology.thin``.

The algorithm of Lam, Lee & Suen (1992), "Thinning methodologies - a comprehensive survey", p. 879: two
sub-iterations per pass, each deleting in parallel the pixels whose 8-neighbourhood satisfies conditions G1,
G2 and G3 (first) or G3' (second); passes repeat until nothing changes. The BSDS benchmark thins every
thresholded prediction with it, and the PASCAL-Context multi-task loaders thin the label boundaries with it.

Neighbours ``x1..x8`` start at the east neighbour and run counter-clockwise (E, NE, N, NW, W, SW, S, SE); the
code of a neighbourhood sets bit ``k-1`` for ``x_k``.
"""

from __future__ import annotations

import numpy as np


def _luts() -> tuple[np.ndarray, np.ndarray]:
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [bool(code >> k & 1) for k in range(8)]  # x[0] = x1 (E) ... x[7] = x8 (SE)
        # G1: exactly one 0 -> 1 transition pattern X_H(p) == 1
        xh = sum(1 for i in (0, 2, 4, 6) if not x[i] and (x[i + 1] or x[(i + 2) % 8]))
        # G2: 2 <= min(n1, n2) <= 3
        n1 = sum(1 for k in (1, 3, 5, 7) if x[k - 1] or x[k])
        n2 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[(k + 1) % 8])
        g12 = xh == 1 and 2 <= min(n1, n2) <= 3
        # G3: (x2 | x3 | ~x8) & x1 == 0 ; G3': (x6 | x7 | ~x4) & x5 == 0
        g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        g3p = not ((x[5] or x[6] or not x[3]) and x[4])
        first[code] = g12 and g3
        second[code] = g12 and g3p
    return first, second


_FIRST, _SECOND = _luts()


def thin(bw: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Thin a binary (H, W) map to one-pixel-wide curves (``bwmorph(bw, 'thin', Inf)``).

    Equivalent to re-evaluating every pixel in each sub-iteration, but only pixels whose neighbourhood changed
    since their last evaluation under the same sub-iteration's rule are looked at again (the others keep
    their decision), which makes thick maps (low thresholds) fast.
    """
    skel = np.asarray(bw).astype(bool)
    if not skel.any():
        return skel.copy()
    ys, xs = np.nonzero(skel)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = np.pad(skel[y0:y1, x0:x1], 1).astype(np.uint8)
    w = box.shape[1]
    flat = box.ravel()
    # flat offsets of x1..x8 (E, NE, N, NW, W, SW, S, SE) and of the 3x3 block
    offs = np.array([1, -w + 1, -w, -w - 1, -1, w - 1, w, w + 1], dtype=np.int64)
    block = np.concatenate([[0], offs])
    # only pixels with a background 4-neighbour can be deleted (G1 needs a 0 among x1, x3, x5, x7)
    fg = np.flatnonzero(flat)
    border = np.zeros(flat.shape, dtype=bool)
    border[fg[(flat[fg[:, None] + offs[[0, 2, 4, 6]][None, :]] == 0).any(1)]] = True
    dirty = [border, border.copy()]
    passes = 0
    while max_iter is None or passes < max_iter:
        changed = False
        for s, lut in enumerate((_FIRST, _SECOND)):
            idx = np.flatnonzero(dirty[s])
            dirty[s][idx] = False
            idx = idx[flat[idx] > 0]
            if idx.size == 0:
                continue
            nb = flat[idx[:, None] + offs[None, :]].astype(np.int32)
            gone = idx[lut[(nb << np.arange(8, dtype=np.int32)).sum(1)]]
            if gone.size:
                changed = True
                flat[gone] = 0
                touched = (gone[:, None] + block[None, :]).ravel()
                dirty[0][touched] = True
                dirty[1][touched] = True
        passes += 1
        if not changed:
            break
    out = np.zeros_like(skel)
    out[y0:y1, x0:x1] = box[1:-1, 1:-1] > 0
    return out
