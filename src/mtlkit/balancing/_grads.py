"""Per-task gradients from one forward: the Jacobian of the task losses with respect to shared parameters.

The network is split at the shared features ``z`` (the backbone's outputs that every head reads), as
TorchJD's ``mtl_backward`` does:

1. head pass: for each task, one ``autograd.grad`` of ``L_t`` with respect to ``z`` and the task's own
   parameters (only head t's graph is traversed, so the T calls together cost one backward of the heads);
2. backbone pass: the T feature gradients are stacked and pulled back through the backbone in one
   batched vector-Jacobian product (``torch.vmap`` over the task dimension, ``is_grads_batched``), or in
   chunks of ``chunk_size`` tasks (1 = a loop of T plain backward passes, the memory fallback);
3. one final backward through the backbone with the combined feature gradient ``Σ_t w_t ∂L_t/∂z``
   (loss weightings) or the aggregated parameter gradient written into ``.grad`` (aggregators).

Loss weightings that need per-task gradients of a few parameters only (AvgNorm / GradNorm at the last
shared layer) use :meth:`TaskGradients.cut_jacobian`: the per-task backward passes stop at the inputs of the
sub-graph that holds those parameters (found on the autograd graph), and keep the gradients there, so the
final :meth:`TaskGradients.backward_weighted_cut` writes Σ_t w_t J_t into those parameters and starts the
one backward of the rest of the network from the cut: the last layer is not differentiated again.

Without features (a user loop that does not pass them) the same quantities come from the losses directly:
``autograd.grad`` of the stacked losses, batched over the task dimension, then one backward of Σ w_t L_t.

``chunk_size=None`` picks all tasks at once on accelerators and the loop on CPU, where batching the
backward does not pay (``benchmarks/step_overhead.py`` measures both).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlkit.errors import MtlkitError

Features = Sequence[Tensor] | dict[str, Sequence[Tensor]] | Tensor | None


def flatten_features(features: Features) -> tuple[list[Tensor], bool]:
    """Unique feature tensors that need grad, and whether all tasks share them (not a per-task dict)."""
    if features is None:
        return [], True
    shared = not isinstance(features, dict)
    if isinstance(features, Tensor):
        items: Iterable[Tensor] = [features]
    elif isinstance(features, dict):
        items = [f for fs in features.values() for f in ([fs] if isinstance(fs, Tensor) else fs)]
    else:
        items = features
    out, seen = [], set()
    for f in items:
        if isinstance(f, Tensor) and f.requires_grad and f.grad_fn is not None and id(f) not in seen:
            seen.add(id(f))
            out.append(f)
    return out, shared


def graph_leaves(roots: Sequence[Tensor], stop: Sequence[Tensor] = ()) -> list[Tensor]:
    """Leaf tensors (parameters) in the autograd graph of ``roots``, not looking past ``stop`` tensors."""
    excluded = {f.grad_fn for f in stop if f.grad_fn is not None}
    todo = deque(r.grad_fn for r in roots if r.grad_fn is not None and r.grad_fn not in excluded)
    seen = set(todo) | excluded
    leaves, ids = [], set()
    while todo:
        node = todo.popleft()
        var = getattr(node, "variable", None)
        if var is not None and id(var) not in ids:
            ids.add(id(var))
            leaves.append(var)
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                todo.append(child)
    return leaves


def _zeros_for_none(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, like, strict=True)]


def _default_chunk(device: torch.device, chunk_size: int | None, n: int) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise MtlkitError(f"chunk_size must be >= 1 (or None for automatic), got {chunk_size}")
        return chunk_size
    return 1 if device.type == "cpu" else n


def _write_rows(out: Tensor, rows: slice | int, grads: Sequence[Tensor | None], inputs: Sequence[Tensor]) -> None:
    """Copy per-input gradients (``(k, *shape)`` for a slice of rows, ``shape`` for one row) into ``out``."""
    offset = 0
    for g, x in zip(grads, inputs, strict=True):
        n = x.numel()
        if g is None:
            out[rows, offset: offset + n] = 0
        else:
            out[rows, offset: offset + n] = g.reshape(out[rows, offset: offset + n].shape)
        offset += n


def batched_vjp(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    stacked_grads: Sequence[Tensor],
    chunk_size: int | None = None,
    retain_graph: bool = True,
) -> Tensor:
    """The ``(K, Σ numel(inputs))`` matrix whose row k is ``Σ_o stacked_grads[o][k] · ∂outputs[o]/∂inputs``.

    One VJP per row, written straight into the result (no intermediate stacking). Chunks of ``chunk_size``
    rows go through ``torch.vmap`` (``is_grads_batched``); a chunk of 1 is a plain backward. Out of memory
    in a batched chunk falls back to one row at a time (with a warning).
    """
    k = stacked_grads[0].shape[0]
    n = sum(x.numel() for x in inputs)
    out = torch.empty(k, n, dtype=inputs[0].dtype, device=inputs[0].device)
    chunk = min(_default_chunk(inputs[0].device, chunk_size, k), k)
    start = 0
    while start < k:
        end = min(start + chunk, k)
        keep = retain_graph or end < k
        try:
            if end - start == 1:
                g = torch.autograd.grad(
                    outputs, inputs, [s[start] for s in stacked_grads], retain_graph=keep, allow_unused=True
                )
                _write_rows(out, start, g, inputs)
            else:
                g = torch.autograd.grad(
                    outputs,
                    inputs,
                    [s[start:end] for s in stacked_grads],
                    retain_graph=keep,
                    allow_unused=True,
                    is_grads_batched=True,
                )
                _write_rows(out, slice(start, end), g, inputs)
        except torch.OutOfMemoryError:
            if end - start == 1:
                raise
            warnings.warn(
                f"out of memory batching {end - start} task gradients; falling back to one task at a time "
                "(set chunk_size to choose)",
                RuntimeWarning,
                stacklevel=2,
            )
            chunk = 1
            continue
        start = end
    return out


def flat(tensors: Sequence[Tensor]) -> Tensor:
    """Per-row concatenation ``[(K, *s_i)] -> (K, Σ numel)``."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


class TaskGradients:
    """Per-task gradients of one forward's losses and the final backward, split at the shared features.

    Build it once per step; ask for :meth:`jacobian` (rows = tasks) of any set of backbone parameters, or
    :meth:`feature_jacobian` (MGDA-UB style), then finish with exactly one of :meth:`backward_weighted`,
    :meth:`backward_aggregated` or :meth:`backward_features`, which frees the graph.
    """

    def __init__(
        self,
        losses: Sequence[Tensor],
        features: Features = None,
        chunk_size: int | None = None,
    ) -> None:
        self.losses = list(losses)
        self.features, self.features_shared = flatten_features(features)
        self.chunk_size = chunk_size
        self._head: tuple[list[Tensor], list[list[tuple[Tensor, Tensor]]]] | None = None
        self._cut: _Cut | None = None
        self.done = False

    @property
    def split(self) -> bool:
        """Whether the per-task work is split at the features (faster) rather than done from the losses."""
        return bool(self.features)

    # ------------------------------------------------------------------ head pass
    def _head_pass(self) -> tuple[list[Tensor], list[list[tuple[Tensor, Tensor]]]]:
        """Per task: ∂L_t/∂z for every feature tensor (stacked over tasks) and (param, grad) of its head."""
        if self._head is None:
            feats = self.features
            per_task_feat: list[list[Tensor]] = []
            head_grads: list[list[tuple[Tensor, Tensor]]] = []
            for loss in self.losses:
                params = [p for p in graph_leaves([loss], stop=feats) if p.requires_grad]
                if not loss.requires_grad:
                    per_task_feat.append([torch.zeros_like(f) for f in feats])
                    head_grads.append([])
                    continue
                g = torch.autograd.grad(loss, feats + params, retain_graph=True, allow_unused=True)
                per_task_feat.append(_zeros_for_none(g[: len(feats)], feats))
                head_grads.append([(p, gp) for p, gp in zip(params, g[len(feats):], strict=True) if gp is not None])
            stacked = [torch.stack([pt[i] for pt in per_task_feat]) for i in range(len(feats))]
            self._head = (stacked, head_grads)
        return self._head

    # ------------------------------------------------------------------ Jacobians
    def jacobian(self, params: Sequence[Tensor]) -> Tensor:
        """``(T, n)`` matrix of per-task gradients with respect to ``params`` (flattened, in order)."""
        self._check_open()
        params = list(params)
        if not params:
            raise MtlkitError("no parameters to differentiate: pass shared=model.shared_parameters()")
        if self.split:
            stacked, _ = self._head_pass()
            return batched_vjp(self.features, params, stacked, self.chunk_size, retain_graph=True)
        if _default_chunk(params[0].device, self.chunk_size, len(self.losses)) == 1:
            # one loss at a time: a non-finite task cannot leak into the others' rows through 0 · NaN
            out = torch.empty(len(self.losses), sum(p.numel() for p in params), dtype=params[0].dtype,
                              device=params[0].device)
            for i, loss in enumerate(self.losses):
                g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) if loss.requires_grad \
                    else [None] * len(params)
                _write_rows(out, i, g, params)
            return out
        losses = torch.stack([loss.reshape(()) for loss in self.losses])
        eye = torch.eye(len(self.losses), dtype=losses.dtype, device=losses.device)
        return batched_vjp([losses], params, [eye], self.chunk_size, retain_graph=True)

    def feature_jacobian(self) -> Tensor:
        """``(T, m)`` per-task gradients with respect to the shared representation (all feature tensors)."""
        self._check_open()
        if not self.split:
            raise MtlkitError(
                "this method works on the shared representation and needs the features: pass "
                "features=... (the backbone outputs every head reads), or use the option on=params"
            )
        if not self.features_shared:
            raise MtlkitError(
                "on=features needs one representation shared by all tasks, but the backbone forks per task "
                "(DTME); use on=params"
            )
        stacked, _ = self._head_pass()
        return flat(stacked)

    def cut_jacobian(self, params: Sequence[Tensor]) -> Tensor:
        """:meth:`jacobian` of ``params``, keeping what :meth:`backward_weighted_cut` needs to skip the
        sub-graph of ``params`` in the final backward. Falls back to :meth:`jacobian` (and the final backward
        to :meth:`backward_weighted`) without features, or where the graph has no clean cut."""
        self._check_open()
        params = list(params)
        cut = _find_cut(self.features, params) if (self.split and params) else None
        if cut is None:
            return self.jacobian(params)
        stacked, _ = self._head_pass()
        roots = [self.features[i] for i in cut.roots]
        grads = [stacked[i] for i in cut.roots]
        inputs: list[Any] = params + cut.extra + cut.edges
        t = len(self.losses)
        n = sum(p.numel() for p in params)
        out = torch.empty(t, n, dtype=params[0].dtype, device=params[0].device)
        extra_rows: list[list[Tensor | None]] = [[] for _ in range(t)]
        edge_rows: list[list[Tensor | None]] = [[] for _ in range(t)]
        chunk = min(_default_chunk(params[0].device, self.chunk_size, t), t)
        start = 0
        while start < t:  # chunks of tasks as batched_vjp: vmap on accelerators, a loop on CPU
            end = min(start + chunk, t)
            try:
                if end - start == 1:
                    g = torch.autograd.grad(roots, inputs, [s[start] for s in grads], retain_graph=True,
                                            allow_unused=True)
                    g = [None if x is None else x.unsqueeze(0) for x in g]
                else:
                    g = torch.autograd.grad(roots, inputs, [s[start:end] for s in grads], retain_graph=True,
                                            allow_unused=True, is_grads_batched=True)
            except torch.OutOfMemoryError:
                if end - start == 1:
                    raise
                warnings.warn(f"out of memory batching {end - start} task gradients; falling back to one task at "
                              "a time (set chunk_size to choose)", RuntimeWarning, stacklevel=2)
                chunk = 1
                continue
            _write_rows(out, slice(start, end), g[: len(params)], params)
            n_fixed = len(params) + len(cut.extra)
            for k in range(end - start):
                extra_rows[start + k] = [None if x is None else x[k] for x in g[len(params): n_fixed]]
                edge_rows[start + k] = [None if x is None else x[k] for x in g[n_fixed:]]
            start = end
        cut.params, cut.extra_rows, cut.edge_rows, cut.jac = params, extra_rows, edge_rows, out
        self._cut = cut
        return out

    def backward_weighted_cut(self, weights: Sequence[float] | Tensor) -> None:
        """:meth:`backward_weighted` after :meth:`cut_jacobian`: the cut parameters get Σ_t w_t J_t from the
        rows already computed, the rest of the network one backward started at the cut."""
        cut = self._cut
        if cut is None:
            self.backward_weighted(weights)
            return
        self._check_open()
        w = [float(x) for x in weights]
        active = [i for i, x in enumerate(w) if x != 0.0]
        stacked, heads = self._head_pass()
        for i in active:
            for p, g in heads[i]:
                _accumulate(p, w[i] * g)
        if active:
            wt = torch.tensor([w[i] for i in active], dtype=cut.jac.dtype, device=cut.jac.device)
            combined = wt @ cut.jac[active]
            offset = 0
            for p in cut.params:
                n = p.numel()
                _accumulate(p, combined[offset: offset + n].view_as(p).to(p.dtype))
                offset += n
            for k, p in enumerate(cut.extra):
                parts = [w[i] * cut.extra_rows[i][k] for i in active if cut.extra_rows[i][k] is not None]
                if parts:
                    _accumulate(p, sum(parts))
            roots: list[Any] = []
            seeds: list[Tensor] = []
            for k, edge in enumerate(cut.edges):
                parts = [w[i] * cut.edge_rows[i][k] for i in active if cut.edge_rows[i][k] is not None]
                if parts:
                    roots.append(edge)
                    seeds.append(sum(parts))
            from torch.autograd.graph import get_gradient_edge

            for j, f in enumerate(self.features):
                if j not in cut.roots:
                    roots.append(get_gradient_edge(f))
                    seeds.append(sum(w[i] * stacked[j][i] for i in active))
            if roots:
                torch.autograd.backward(roots, seeds)
        self._cut = None
        self._close()

    # ------------------------------------------------------------------ final backward
    def backward_weighted(self, weights: Sequence[float] | Tensor) -> None:
        """Accumulate ``∇ Σ_t w_t L_t`` into ``.grad`` of every parameter (tasks with w_t = 0 are skipped)."""
        self._check_open()
        w = [float(x) for x in weights]
        active = [i for i, x in enumerate(w) if x != 0.0]
        if self.split:
            stacked, heads = self._head_pass()
            for i in active:
                for p, g in heads[i]:
                    _accumulate(p, w[i] * g)
            if active:
                grads = [sum(w[i] * s[i] for i in active) for s in stacked]
                torch.autograd.backward(self.features, grads)
        elif active:
            total = sum(w[i] * self.losses[i] for i in active)
            if total.requires_grad:
                total.backward()
        self._close()

    def backward_aggregated(
        self,
        shared: Sequence[Tensor],
        combined: Tensor | None,
        skip: Sequence[int] = (),
        head_weights: Sequence[float] | None = None,
    ) -> None:
        """``.grad`` of ``shared`` += ``combined`` (flat; taken over: where ``.grad`` is None its slices become
        the gradients, without a copy; None: the shared gradients are already written); every other parameter
        gets ``∇ Σ_t L_t``.

        Task-specific parameters (heads; DTME's per-task backbone parameters) thus get their own task's
        unweighted gradient, as TorchJD's ``mtl_backward`` and the official CAGrad / PCGrad code do; with
        ``head_weights`` they get ``∇ Σ_t w_t L_t`` instead (the official MGDA / Nash-MTL / IMTL-G code).
        Tasks in ``skip`` (non-finite gradients) contribute nothing this step.
        """
        self._check_open()
        shared = list(shared)
        shared_ids = {id(p) for p in shared}
        offset = 0
        for p in shared if combined is not None else []:
            n = p.numel()
            _accumulate(p, combined[offset: offset + n].view_as(p).to(p.dtype))
            offset += n
        hw = _head_weights(head_weights, len(self.losses))
        active = [i for i in range(len(self.losses)) if i not in set(skip) and hw[i] != 0.0]
        if self.split:
            stacked, heads = self._head_pass()
            for i in active:
                for p, g in heads[i]:
                    if id(p) not in shared_ids:
                        _accumulate(p, g if hw[i] == 1.0 else hw[i] * g)
            others = [p for p in graph_leaves(self.features) if p.requires_grad and id(p) not in shared_ids]
            if others and active:
                grads = [sum(hw[i] * s[i] for i in active) for s in stacked]
                torch.autograd.backward(self.features, grads, inputs=others)
        elif active:
            leaves = graph_leaves([self.losses[i] for i in active])
            others = [p for p in leaves if p.requires_grad and id(p) not in shared_ids]
            if others:
                torch.autograd.backward(sum(hw[i] * self.losses[i] for i in active), inputs=others)
        self._close()

    def backward_features(
        self, combined: Tensor, skip: Sequence[int] = (), head_weights: Sequence[float] | None = None
    ) -> None:
        """Back-propagate an aggregated representation gradient (flat, ``(m,)``) through the backbone; heads
        get their own task's gradient (times ``head_weights[t]`` when given)."""
        self._check_open()
        stacked, heads = self._head_pass()
        hw = _head_weights(head_weights, len(self.losses))
        for i in range(len(self.losses)):
            if i in set(skip) or hw[i] == 0.0:
                continue
            for p, g in heads[i]:
                _accumulate(p, g if hw[i] == 1.0 else hw[i] * g)
        grads, offset = [], 0
        for f in self.features:
            n = f.numel()
            grads.append(combined[offset: offset + n].view_as(f).to(f.dtype))
            offset += n
        torch.autograd.backward(self.features, grads)
        self._close()

    def _check_open(self) -> None:
        if self.done:
            raise RuntimeError("TaskGradients: the graph was already used by a final backward")

    def _close(self) -> None:
        self.done = True
        self._head = None
        self._cut = None


class _Cut:
    """Where the sub-graph of some parameters meets the rest of the graph (see :func:`_find_cut`)."""

    def __init__(self, roots: list[int], edges: list[Any], extra: list[Tensor]) -> None:
        self.roots, self.edges, self.extra = roots, edges, extra
        self.params: list[Tensor] = []
        self.extra_rows: list[list[Tensor | None]] = []
        self.edge_rows: list[list[Tensor | None]] = []
        self.jac: Tensor | None = None


def _find_cut(features: Sequence[Tensor], params: Sequence[Tensor]) -> _Cut | None:
    """The sub-graph S of the nodes between the features and ``params`` (nodes from which one of them is
    reachable), the feature tensors that enter it, the edges by which it leaves to the rest of the graph
    (gradient edges of S's inputs) and the other leaves S reads directly (their S part is accumulated from
    the kept rows). ``None`` when no parameter is reached, or when one exit lies below another (the
    gradients captured there would overlap: no clean cut)."""
    from torch.autograd.graph import GradientEdge

    targets = {id(p) for p in params}
    starts = [f.grad_fn for f in features]
    reach: dict[Any, bool] = {}
    order: list[Any] = []
    todo: list[tuple[Any, bool]] = [(n, False) for n in starts if n is not None]
    while todo:  # iterative post-order: reach[node] = node is a target leaf or a child reaches one
        node, expanded = todo.pop()
        if expanded:
            var = getattr(node, "variable", None)
            hit = var is not None and id(var) in targets
            reach[node] = hit or any(reach.get(c, False) for c, _ in node.next_functions if c is not None)
            order.append(node)
            continue
        if node in reach:
            continue
        reach[node] = False  # visiting (the autograd graph is acyclic)
        todo.append((node, True))
        todo.extend((c, False) for c, _ in node.next_functions if c is not None and c not in reach)
    inside = {n for n in order if reach[n] and getattr(n, "variable", None) is None}
    if not inside:
        return None
    edges: dict[tuple[int, int], Any] = {}
    extra: dict[int, Tensor] = {}
    extra_nodes = set()
    for node in inside:
        for child, nr in node.next_functions:
            if child is None or child in inside:
                continue
            var = getattr(child, "variable", None)
            if var is not None:
                if id(var) not in targets and var.requires_grad:
                    extra[id(var)] = var
                    extra_nodes.add(child)
            else:
                edges[(id(child), nr)] = GradientEdge(child, nr)
    exits = {e.node for e in edges.values()}
    if (len(exits) > 1 or extra_nodes) and _below(exits, exits | extra_nodes):
        return None
    roots = [i for i, n in enumerate(starts) if n in inside]
    return _Cut(roots, list(edges.values()), list(extra.values()))


def _below(exits: set[Any], nodes: set[Any]) -> bool:
    """Whether one of ``nodes`` (the exits and the leaves read inside) is reachable from an exit: then the
    gradient captured there would also hold what the backward from the cut brings (no clean cut)."""
    for start in exits:
        seen, todo = set(), [c for c, _ in start.next_functions if c is not None]
        while todo:
            n = todo.pop()
            if n in nodes:
                return True
            if n in seen:
                continue
            seen.add(n)
            todo.extend(c for c, _ in n.next_functions if c is not None)
    return False


def _head_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    out = [float(w) for w in weights]
    if len(out) != n:
        raise ValueError(f"{len(out)} head weights for {n} tasks")
    return out


def _accumulate(p: Tensor, g: Tensor) -> None:
    """``p.grad += g``; a first gradient is taken over without a copy (every ``g`` passed here is a buffer
    of this step that nothing else holds: a head gradient, or a slice of the aggregated update)."""
    if p.grad is None:
        p.grad = g.detach()
    else:
        p.grad.add_(g.detach())


def task_jacobian(
    losses: dict[str, Tensor] | Sequence[Tensor],
    params: Sequence[Tensor],
    features: Features = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The ``(T, n)`` Jacobian of the task losses with respect to ``params`` (graph kept for a later backward).

    ``features``: the backbone outputs every head reads (speeds it up: the heads are differentiated once per
    task and only the backbone part is batched). Rows follow the order of ``losses``.
    """
    values = list(losses.values()) if isinstance(losses, dict) else list(losses)
    return TaskGradients(values, features, chunk_size).jacobian(params)


def finite_rows(jac: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(J, J Jᵀ, finite)`` with the rows that hold a NaN / inf zeroed. Detected on the Gramian's diagonal
    (a T-vector) rather than on all of J, which costs as much as a pass over J."""
    gramian = jac @ jac.T
    finite = torch.isfinite(gramian.diagonal())
    if not bool(finite.all()):
        finite = torch.isfinite(jac).all(dim=1)  # the exact rows (the diagonal can also overflow)
        jac = torch.where(finite[:, None], jac, torch.zeros_like(jac))
        gramian = jac @ jac.T
    return jac, gramian, finite


def gramian_stats(gramian: Tensor, eps: float = 1e-12) -> dict[str, Any]:
    """Norms, cosine matrix and number of conflicting pairs (negative dot product) from a Gramian J Jᵀ."""
    g = gramian.detach().double()
    norms = g.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norms, norms).clamp_min(eps)
    cos = g / denom
    t = g.shape[0]
    iu = torch.triu_indices(t, t, 1)
    conflicts = int((g[iu[0], iu[1]] < 0).sum())
    return {"norms": norms, "cos": cos, "conflicts": conflicts}
