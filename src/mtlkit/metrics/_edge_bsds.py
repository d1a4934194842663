"""Edge odsF by the BSDS protocol, as the seism evaluation that ATRC / InvPT / MTI-Net run on NYUD and PASCAL.

For every threshold ``t`` (0.01, 0.02, ..., 0.99, the parameter file MTI-Net writes for seism) and every image:

1. ``bmap = thin(q > t)``: the reference scripts save ``sigmoid(logit) * 255`` as an 8-bit PNG (truncated) and
   seism's ``read_one_cont_png`` thresholds ``q = im2double(png)`` strictly, then thins with MATLAB
   ``bwmorph(.., 'thin', Inf)`` (:func:`mtlkit.metrics._thin.thin`; identical to pyEdgeEval's port of it in
   our tests). ``quantize=False`` thresholds the
   probability itself (``prob >= t``, as BSDS's ``edgesEvalImg`` on probability maps).
2. One-to-one correspondence between ``bmap`` pixels and ground-truth edge pixels, a pair being allowed when
   its Euclidean distance is at most ``max_dist`` x the image diagonal (0.011 NYUD, 0.0075 PASCAL).
3. Counts: matched predictions / predictions (precision), matched ground truth / ground truth (recall).

Counts are summed over the whole split per threshold; odsF is the best F = 2PR / (P + R) over thresholds.

Correspondence. BSDS's ``correspondPixels`` (Goldberg's CSA assignment) pays each pair its distance and each
pixel left unmatched ``outlierCost = 100 * maxDist``; with ``k`` matches its cost is ``sum(d) + outlierCost *
(n_pred + n_gt - k)``, so it maximises the number of matches and breaks ties by total distance. The counts
depend only on how many pixels are matched, so we compute a maximum-cardinality matching exactly (unit-capacity
max flow with Dinic's algorithm, i.e. Hopcroft-Karp; ``scipy.sparse.csgraph.maximum_flow``) on the graph of
allowed pairs. The two agree except where CSA is not maximum: (a) CSA would accept one match fewer if that
shortened the other matches by more than ``outlierCost`` in total (possible only with over 100 matches in
reach of each other; we have not seen it), (b) CSA links outlier nodes sparsely at random (degree 6) and
rounds distances to integers, which leaves its assignment slightly short of maximum at times: on our sample
edge maps the C++ code matched 0-6 pixels fewer than the maximum out of ~10,000. ``backend="pyedgeeval"``
runs that C++ code through the optional ``pyEdgeEval`` package (``pip install mtlkit[edges]``).

Ground truth: the meter scores against the ``edge`` target the loader gives for the split. For PASCAL-Context
seism uses ``seg2bmap(LabelMap)`` (its ``db_gt`` + ``edgesEvalImg``), which the PASCAL loader returns for its
evaluation splits; for NYUD the ``edge/`` maps of the dataset (our assumption: seism has no NYUD ground-truth
wrapper and ATRC's is unpublished). Images are evaluated on the part of the target
that is not 255 (the padding the loaders add around evaluation images), so the diagonal is the original
image's, as in the reference, which crops the padding before saving its predictions.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

from mtlkit.errors import MtlkitError
from mtlkit.metrics._base import Meter
from mtlkit.metrics._thin import thin

SEISM_THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """BSDS ``seg2bmap`` at the segmentation's own size: pixels whose label differs from the east, south or
    south-east neighbour (last row: east only; last column: south only; the corner pixel never)."""
    seg = np.asarray(seg)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg != e) | (seg != s) | (seg != se)
    b[-1, :] = seg[-1, :] != e[-1, :]
    b[:, -1] = seg[:, -1] != s[:, -1]
    b[-1, -1] = False
    return b


def _disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets within ``radius`` (BSDS: pairs with squared distance <= maxDist^2), nearest first."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r: r + 1, -r: r + 1]
    d2 = (dy**2 + dx**2).ravel()
    order = np.argsort(d2, kind="stable")
    keep = order[d2[order] <= radius**2]
    return dy.ravel()[keep].astype(np.int64), dx.ravel()[keep].astype(np.int64)


def correspond_count(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> int:
    """Size of a maximum one-to-one matching of ``pred`` to ``gt`` pixels within ``max_dist`` x diagonal.

    All allowed pairs are enumerated offset by offset (nearest first) from the smaller side, and a greedy
    matching is built along the way (within one offset the pairs are disjoint, so a whole offset is matched
    at once). When it matches every pixel of one side that has a partner in reach, no augmenting path can
    exist and it is maximum; otherwise a unit-capacity max flow (Dinic, i.e. Hopcroft-Karp) on all allowed
    pairs gives the maximum.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if not pred.any() or not gt.any():
        return 0
    h, w = gt.shape
    radius = max_dist * float(np.hypot(h, w))
    small, large = (pred, gt) if pred.sum() <= gt.sum() else (gt, pred)
    ay, ax = np.nonzero(small)
    n_a, n_b = ay.size, int(large.sum())
    pad = int(np.ceil(radius)) + 1
    b_index = np.full((h + 2 * pad, w + 2 * pad), -1, dtype=np.int32)
    b_index[pad: pad + h, pad: pad + w][large] = np.arange(n_b, dtype=np.int32)
    dy, dx = _disk_offsets(radius)
    stride = b_index.shape[1]
    centre = ((ay + pad) * stride + (ax + pad)).astype(np.int64)
    # neighbours[k, i] = index of the large-side pixel at offset k of small-side pixel i (-1: none)
    neighbours = b_index.ravel()[(dy * stride + dx)[:, None] + centre[None, :]]
    matched_a = np.zeros(n_a, dtype=bool)
    matched_b = np.zeros(n_b, dtype=bool)
    free = np.arange(n_a)
    for col in neighbours:
        b = col[free]
        hit = b >= 0
        a, b = free[hit], b[hit]
        take = ~matched_b[b]
        if take.any():
            matched_a[a[take]] = True
            matched_b[b[take]] = True
            free = free[~matched_a[free]]
            if free.size == 0:
                break
    greedy = int(matched_a.sum())
    valid = neighbours >= 0
    reach_a = valid.any(0)
    reach_b = np.zeros(n_b, dtype=bool)
    reach_b[neighbours[valid]] = True
    if greedy == min(int(reach_a.sum()), int(reach_b.sum())):
        return greedy
    # unit-capacity flow source -> small side -> large side -> sink over every allowed pair
    k_idx, rows_a = np.nonzero(valid)
    cols_a = neighbours[k_idx, rows_a].astype(np.int64)
    used_a, used_b = np.flatnonzero(reach_a), np.flatnonzero(reach_b)
    src, sink = n_a + n_b, n_a + n_b + 1
    tails = np.concatenate([np.full(used_a.size, src), rows_a, n_a + used_b])
    heads = np.concatenate([used_a, n_a + cols_a, np.full(used_b.size, sink)])
    graph = csr_matrix((np.ones(tails.size, dtype=np.int32), (tails, heads)), shape=(n_a + n_b + 2,) * 2)
    return int(maximum_flow(graph, src, sink, method="dinic").flow_value)


def _correspond_count_pyedgeeval(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> int:
    try:
        from pyEdgeEval._lib import correspond_pixels
    except ImportError:
        raise MtlkitError("backend='pyedgeeval' needs the pyEdgeEval package: pip install 'mtlkit[edges]'") from None
    if not pred.any() or not gt.any():
        return 0
    match1, _, _, _ = correspond_pixels(pred.astype(np.float64), gt.astype(np.float64), max_dist=max_dist)
    return int((match1 > 0).sum())


def bsds_counts(
    prob: np.ndarray,
    gt: np.ndarray,
    thresholds: np.ndarray = SEISM_THRESHOLDS,
    max_dist: float = 0.0075,
    apply_thin: bool = True,
    backend: str = "scipy",
    quantize: bool = True,
) -> np.ndarray:
    """Per threshold: (matched predictions, predictions, matched ground truth, ground-truth pixels), (T, 4).

    ``prob``: (H, W) edge probability; ``gt``: (H, W) bool edge map, one annotation (NYUD, PASCAL).
    With a single annotation the matched counts on both sides are the matching's size. ``quantize``: threshold
    ``floor(255 * prob) / 255 > t`` as seism reads the saved 8-bit predictions (else ``prob >= t``).
    """
    count = _correspond_count_pyedgeeval if backend == "pyedgeeval" else correspond_count
    gt = np.asarray(gt, dtype=bool)
    n_gt = int(gt.sum())
    out = np.zeros((len(thresholds), 4), dtype=np.float64)
    q = np.floor(255.0 * np.asarray(prob, dtype=np.float64)) / 255.0 if quantize else None
    previous: tuple[np.ndarray, int, int] | None = None  # (binary map before thinning, its size, matches)
    for i, t in enumerate(thresholds):
        bmap = q > t if quantize else prob >= t
        if previous is not None and np.array_equal(previous[0], bmap):
            _, size, matched = previous  # consecutive thresholds often select the same pixels
        else:
            thinned = thin(bmap) if apply_thin else bmap
            size = int(thinned.sum())
            matched = count(thinned, gt, max_dist) if n_gt else 0
            previous = (bmap, size, matched)
        out[i] = (matched, size, matched, n_gt)
    return out


def _valid_box(valid: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


class BSDSEdgeMeter(Meter):
    """odsF (%) by the BSDS protocol (module docstring); ``pred`` are logits (B, 1, H, W), targets {0, 1, 255}.

    ``workers > 0`` evaluates images in that many processes (the protocol costs tens of milliseconds to
    seconds per image); results are identical to ``workers=0``.
    """

    directions = {"odsF": True, "precision": True, "recall": True}

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: np.ndarray | list[float] | int | None = None,
        ignore_index: int = 255,
        backend: str = "scipy",
        workers: int = 0,
        quantize: bool = True,
    ) -> None:
        if backend not in ("scipy", "pyedgeeval"):
            raise MtlkitError(f"BSDSEdgeMeter backend must be 'scipy' or 'pyedgeeval', got {backend!r}")
        if thresholds is None:
            thresholds = SEISM_THRESHOLDS
        elif isinstance(thresholds, int):
            thresholds = np.linspace(0, 1, thresholds + 2)[1:-1]
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.max_dist = float(max_dist)
        self.ignore_index = ignore_index
        self.backend = backend
        self.workers = int(workers)
        self.quantize = bool(quantize)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[Future] = []
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"counts": torch.zeros(len(self.thresholds), 4, dtype=torch.float64)}

    def reset(self) -> None:
        self._drain()
        super().reset()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob = torch.sigmoid(pred.detach().float()).reshape(target.shape).cpu().numpy()
        tgt = target.detach().cpu().numpy()
        for p, g in zip(prob.reshape(-1, *prob.shape[-2:]), tgt.reshape(-1, *tgt.shape[-2:]), strict=True):
            box = _valid_box(g != self.ignore_index)
            if box is None:
                continue
            p, g = p[box], g[box]
            gt = g == 1
            args = (p, gt, self.thresholds, self.max_dist, True, self.backend, self.quantize)
            if self.workers > 0:
                if self._pool is None:
                    import multiprocessing as mp

                    self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
                self._pending.append(self._pool.submit(bsds_counts, *args))
            else:
                self._acc["counts"] += torch.from_numpy(bsds_counts(*args))

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            self._acc["counts"] += torch.from_numpy(f.result())
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def state(self) -> list[torch.Tensor]:
        self._drain()
        return super().state()

    def merge(self, other: Meter) -> None:
        self._drain()
        if isinstance(other, BSDSEdgeMeter):
            other._drain()
        super().merge(other)

    def compute(self) -> dict[str, float]:
        self._drain()
        c = self._acc["counts"].numpy()
        precision = np.where(c[:, 1] > 0, c[:, 0] / np.maximum(c[:, 1], 1), 0.0)
        recall = np.where(c[:, 3] > 0, c[:, 2] / np.maximum(c[:, 3], 1), 0.0)
        f = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = int(f.argmax())
        return {
            "odsF": float(f[best] * 100),
            "threshold": float(self.thresholds[best]),
            "precision": float(precision[best] * 100),
            "recall": float(recall[best] * 100),
        }

    def __getstate__(self) -> dict:
        self._drain()
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_pending"] = []
        return state
