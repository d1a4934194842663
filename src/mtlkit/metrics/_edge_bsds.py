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

Cost. Per image, the 99 binary maps are made in one comparison, repeated maps (consecutive thresholds that
select the same pixels) are dropped, and the distinct ones are thinned together in one batched pass
(:func:`mtlkit.metrics._thin.thin_many`); matching runs once per distinct map. Across images, whole splits
(:func:`bsds_split_counts`, :class:`BSDSEdgeMeter`) are spread over worker processes; every count is an
integer summed exactly in float64, so any number of workers gives the serial result bit for bit.

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

import multiprocessing
import os
import warnings
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

from mtlkit.errors import MtlkitError
from mtlkit.metrics._base import Meter
from mtlkit.metrics._thin import thin_many

SEISM_THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)
#: ``workers=None`` (auto) evaluates images of at least this many pixels in worker processes: a 480x640 image
#: costs 0.3-5 s serially against a few seconds to start a worker once; smaller images stay in-process
AUTO_MIN_PIXELS = 100_000
#: at most this many processes in auto mode
AUTO_MAX_WORKERS = 8


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
    index_type = np.int32 if b_index.size < 2**31 else np.int64  # halves the traffic of the big gather
    centre = ((ay + pad) * stride + (ax + pad)).astype(index_type)
    # neighbours[k, i] = index of the large-side pixel at offset k of small-side pixel i (-1: none)
    neighbours = b_index.ravel()[(dy * stride + dx).astype(index_type)[:, None] + centre[None, :]]
    valid = neighbours >= 0
    reach_a = valid.any(0)
    matched_a = np.zeros(n_a, dtype=bool)
    matched_b = np.zeros(n_b, dtype=bool)
    free = np.flatnonzero(reach_a)
    for col in neighbours:
        if free.size == 0:  # every small-side pixel with a partner in reach is matched: maximum
            return int(matched_a.sum())
        b = col[free]
        hit = b >= 0
        a, b = free[hit], b[hit]
        take = ~matched_b[b]
        if take.any():
            matched_a[a[take]] = True
            matched_b[b[take]] = True
            free = free[~matched_a[free]]
    greedy = int(matched_a.sum())
    if free.size == 0:
        return greedy
    reach_b = np.zeros(n_b, dtype=bool)
    reach_b[neighbours[valid]] = True
    if greedy == int(reach_b.sum()):  # every reachable large-side pixel is matched: maximum
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
    thresholds = np.asarray(thresholds, dtype=np.float64)
    out = np.zeros((len(thresholds), 4), dtype=np.float64)
    if len(thresholds) == 0:
        return out
    prob = np.asarray(prob, dtype=np.float64)
    level = np.floor(255.0 * prob) / 255.0 if quantize else prob
    # every threshold's binary map at once; consecutive thresholds often select the same pixels, so each
    # distinct map is thinned and matched once (thinning all of them in one batched pass)
    bmaps = level[None] > thresholds[:, None, None] if quantize else level[None] >= thresholds[:, None, None]
    sizes = bmaps.sum((1, 2))
    first = np.zeros(len(thresholds), dtype=np.int64)  # index of the distinct map each threshold uses
    keep = [0]
    for i in range(1, len(thresholds)):
        j = keep[-1]
        if sizes[i] == sizes[j] and np.array_equal(bmaps[i], bmaps[j]):
            first[i] = j
        else:
            keep.append(i)
            first[i] = i
    distinct = bmaps[keep]
    del bmaps
    thinned = thin_many(distinct) if apply_thin else distinct
    row = {}
    for j, m in zip(keep, thinned, strict=True):
        matched = count(m, gt, max_dist) if n_gt else 0
        row[j] = (matched, int(m.sum()), matched, n_gt)
    for i in range(len(thresholds)):
        out[i] = row[int(first[i])]
    return out


def _valid_box(valid: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def default_workers() -> int:
    """Processes for ``workers=None``: the usable CPUs shared among the processes of this machine under
    torchrun (``LOCAL_WORLD_SIZE``), at most :data:`AUTO_MAX_WORKERS`; 0 (serial) below two, or inside a
    daemon process (e.g. a DataLoader worker), which may not start children."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        pass
    if cpus < 2 or multiprocessing.current_process().daemon:
        return 0
    return min(cpus, AUTO_MAX_WORKERS)


def _check_workers(workers: int | None) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise MtlkitError(f"BSDS workers must be an integer >= 0 (0 = serial) or None (auto), got {workers!r}")
    return int(workers)


class _ImagePool:
    """Per-image :func:`bsds_counts` in worker processes, summed in the order the images were submitted.

    Spawned (not forked) workers, so a parent holding torch / OpenMP threads cannot deadlock them. At most
    ``4 * workers`` images are in flight (the parent waits for the oldest beyond that), so memory stays
    bounded on a whole split. If the pool breaks (e.g. a script without ``if __name__ == "__main__":`` that
    spawn cannot re-import), the affected images are computed in-process with a one-line warning: the sums
    are the same either way, since every count is an integer held exactly in float64.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[tuple[Any, ...], Future | None]] = deque()
        self._broken = False

    def submit(self, args: tuple[Any, ...]) -> np.ndarray | None:
        """Queue one image; returns the counts of images finished meanwhile (summed) or None."""
        future = None
        if not self._broken:
            try:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
                future = self._pool.submit(bsds_counts, *args)
            except (BrokenProcessPool, OSError, RuntimeError) as e:
                self._break(e)
        self._pending.append((args, future))
        done = None
        while self._pending and (len(self._pending) > 4 * self.workers or self._ready()):
            c = self._pop()
            done = c if done is None else done + c
        return done

    def _ready(self) -> bool:
        f = self._pending[0][1]
        return f is None or f.done()

    def _pop(self) -> np.ndarray:
        args, future = self._pending.popleft()
        if future is not None and not self._broken:
            try:
                return future.result()
            except (BrokenProcessPool, OSError) as e:
                self._break(e)
        return bsds_counts(*args)

    def _break(self, err: BaseException) -> None:
        if not self._broken:
            warnings.warn(f"BSDS edge evaluation: worker processes failed ({type(err).__name__}: {err}); "
                          "computing in-process (set workers=0 to skip the pool)", RuntimeWarning, stacklevel=4)
        self._broken = True
        self.close()

    def drain(self) -> np.ndarray | None:
        """Wait for every queued image; their summed counts (None when nothing was queued)."""
        total = None
        while self._pending:
            c = self._pop()
            total = c if total is None else total + c
        return total

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None


def bsds_split_counts(
    probs: Iterable[np.ndarray],
    gts: Iterable[np.ndarray],
    thresholds: np.ndarray = SEISM_THRESHOLDS,
    max_dist: float = 0.0075,
    *,
    workers: int | None = None,
    apply_thin: bool = True,
    backend: str = "scipy",
    quantize: bool = True,
) -> np.ndarray:
    """:func:`bsds_counts` summed over a whole split (T, 4): one probability map and one boolean ground truth
    (H, W) per image, e.g. the 654 NYUD test images. ``workers``: processes evaluating images in parallel
    (0 = in this process; None = :func:`default_workers` for images of at least :data:`AUTO_MIN_PIXELS` pixels,
    in-process below); the result is identical for every value. ``probs`` / ``gts`` may be generators: at
    most ``4 * workers`` images are held at once.
    """
    workers = _check_workers(workers)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    total = np.zeros((len(thresholds), 4), dtype=np.float64)
    pool: _ImagePool | None = None
    try:
        for prob, gt in zip(probs, gts, strict=True):
            args = (np.asarray(prob), np.asarray(gt, dtype=bool), thresholds, max_dist, apply_thin, backend,
                    quantize)
            n = workers if workers is not None else (default_workers() if args[0].size >= AUTO_MIN_PIXELS else 0)
            if n > 0 and pool is None:
                pool = _ImagePool(n)
            done = pool.submit(args) if n > 0 and pool is not None else bsds_counts(*args)
            if done is not None:
                total += done
        if pool is not None:
            done = pool.drain()
            if done is not None:
                total += done
    finally:
        if pool is not None:
            pool.close()
    return total


def ods_from_counts(counts: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """odsF (%), its threshold, precision and recall (%) from split-level counts (T, 4) of :func:`bsds_counts`."""
    c = np.asarray(counts, dtype=np.float64)
    precision = np.where(c[:, 1] > 0, c[:, 0] / np.maximum(c[:, 1], 1), 0.0)
    recall = np.where(c[:, 3] > 0, c[:, 2] / np.maximum(c[:, 3], 1), 0.0)
    f = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(f.argmax())
    return {
        "odsF": float(f[best] * 100),
        "threshold": float(np.asarray(thresholds)[best]),
        "precision": float(precision[best] * 100),
        "recall": float(recall[best] * 100),
    }


class BSDSEdgeMeter(Meter):
    """odsF (%) by the BSDS protocol (module docstring); ``pred`` are logits (B, 1, H, W), targets {0, 1, 255}.

    ``workers``: processes evaluating images in parallel (the protocol costs 0.3-5 s per 480x640 image);
    0 = in this process; None (default) = :func:`default_workers` processes for images of at least
    :data:`AUTO_MIN_PIXELS` pixels, in-process below. Results are identical for every value.
    """

    directions = {"odsF": True, "precision": True, "recall": True}

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: np.ndarray | list[float] | int | None = None,
        ignore_index: int = 255,
        backend: str = "scipy",
        workers: int | None = None,
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
        self.workers = _check_workers(workers)
        self.quantize = bool(quantize)
        self._pool: _ImagePool | None = None
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"counts": torch.zeros(len(self.thresholds), 4, dtype=torch.float64)}

    def reset(self) -> None:
        self._drain()
        super().reset()

    def _workers_for(self, pixels: int) -> int:
        if self.workers is not None:
            return self.workers
        return default_workers() if pixels >= AUTO_MIN_PIXELS else 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob = torch.sigmoid(pred.detach().float()).reshape(target.shape).cpu().numpy()
        tgt = target.detach().cpu().numpy()
        for p, g in zip(prob.reshape(-1, *prob.shape[-2:]), tgt.reshape(-1, *tgt.shape[-2:]), strict=True):
            box = _valid_box(g != self.ignore_index)
            if box is None:
                continue
            p, g = p[box], g[box]
            args = (p, g == 1, self.thresholds, self.max_dist, True, self.backend, self.quantize)
            workers = self._workers_for(p.size)
            if workers > 0:
                if self._pool is None:
                    self._pool = _ImagePool(workers)
                done = self._pool.submit(args)
            else:
                done = bsds_counts(*args)
            if done is not None:
                self._acc["counts"] += torch.from_numpy(done)

    def _drain(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                done = pool.drain()
            finally:
                pool.close()
            if done is not None:
                self._acc["counts"] += torch.from_numpy(done)

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
        return ods_from_counts(self._acc["counts"].numpy(), self.thresholds)

    def __getstate__(self) -> dict:
        self._drain()
        state = self.__dict__.copy()
        state["_pool"] = None
        return state
