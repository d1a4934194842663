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
    """Thin a binary (H, W) map to one-pixel-wide curves (``bwmorph(bw, 'thin', Inf)``)."""
    return thin_many(np.asarray(bw)[None], max_iter)[0]


#: foreground pixels thinned together at most (bounds the memory of :func:`thin_many` to about 100 MB)
CHUNK_PIXELS = 1 << 22


def thin_many(maps: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Thin each of N binary maps (N, H, W); identical to ``thin`` map by map, with far fewer numpy calls.

    The maps are zero-padded and stacked into one flat array, so every numpy call of a sub-iteration serves
    all of them (the BSDS meter thins one map per threshold). The padding keeps neighbourhoods inside their
    own map, and a map that has converged stays unchanged while others still thin. Maps are taken in groups
    of at most :data:`CHUNK_PIXELS` foreground pixels.
    """
    stack = np.asarray(maps).astype(bool)
    if stack.ndim != 3:
        raise ValueError(f"thin_many expects (N, H, W) maps, got shape {stack.shape}")
    out = np.zeros_like(stack)
    sizes = stack.sum((1, 2))
    start = 0
    while start < len(stack):
        stop = start + 1
        total = int(sizes[start])
        while stop < len(stack) and total + sizes[stop] <= CHUNK_PIXELS:
            total += int(sizes[stop])
            stop += 1
        if total:
            out[start:stop] = _thin_stack(stack[start:stop], max_iter)
        start = stop
    return out


def _thin_stack(stack: np.ndarray, max_iter: int | None) -> np.ndarray:
    """:func:`thin_many` on one group of maps.

    Only pixels whose neighbourhood changed since their last evaluation under the same sub-iteration's rule
    are looked at again (the others keep their decision), which makes thick maps (low thresholds) fast.
    """
    out = np.zeros_like(stack)
    union = stack.any(0)
    ys, xs = np.nonzero(union)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = np.pad(stack[:, y0:y1, x0:x1], ((0, 0), (1, 1), (1, 1)))
    # only pixels with a background 4-neighbour can be deleted (G1 needs a 0 among x1, x3, x5, x7)
    border = np.zeros_like(box)
    inner = box[:, 1:-1, 1:-1]
    border[:, 1:-1, 1:-1] = inner & ~(box[:, 1:-1, 2:] & box[:, :-2, 1:-1] & box[:, 1:-1, :-2] & box[:, 2:, 1:-1])
    w = box.shape[2]
    flat = box.ravel().view(np.uint8)
    # flat offsets of x1..x8 (E, NE, N, NW, W, SW, S, SE) and of the 3x3 block
    offs = (1, -w + 1, -w, -w - 1, -1, w - 1, w, w + 1)
    block = (0, *offs)
    dirty = [border.ravel(), border.ravel().copy()]
    passes = 0
    while max_iter is None or passes < max_iter:
        changed = False
        for s, lut in enumerate((_FIRST, _SECOND)):
            idx = np.flatnonzero(dirty[s])
            dirty[s][idx] = False
            idx = idx[flat[idx] > 0]
            if idx.size == 0:
                continue
            code = np.zeros(idx.size, dtype=np.uint8)
            for k, o in enumerate(offs):
                code |= flat[idx + o] << np.uint8(k)
            gone = idx[lut[code]]
            if gone.size:
                changed = True
                flat[gone] = 0
                for o in block:
                    dirty[0][gone + o] = True
                    dirty[1][gone + o] = True
        passes += 1
        if not changed:
            break
    out[:, y0:y1, x0:x1] = box[:, 1:-1, 1:-1]
    return out
