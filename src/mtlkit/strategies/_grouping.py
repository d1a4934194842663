"""Task groupings for selective group updates: affinity clustering and the paper's ablation groupings.

``affinity_groups`` follows the official code (``form_task_affinity.next_group`` in sel-update-mtl):
``X[s, t] = A[s, t] / A[t, t]`` (each column divided by the target's self-affinity), ``X = (X + X^T) / 2``,
then scikit-learn's ``AffinityPropagation(affinity="precomputed", preference=None, convergence_iter=50)``;
when it does not converge it is retried (10 attempts in all, ``convergence_iter`` + 100 each time), and when
no attempt gives clusters the caller keeps its previous groups.

Our choices, stated once:

- The official code ran scikit-learn 1.0.2, where a non-converged fit has no clusters; newer versions may
  return "degenerate" clusters with a ``ConvergenceWarning``. We treat that warning as non-convergence,
  reproducing the official behaviour.
- The official retries keep ``max_iter=200`` although ``convergence_iter`` grows past it, so from the
  third attempt on they cannot converge. We raise ``max_iter`` with ``convergence_iter`` (``+150``) so
  that a retry really is "more iterations" (DESIGN.md section 5).
- The official code draws the solver's tie-breaking noise from NumPy's global generator
  (``random_state=None`` in scikit-learn 1.0.2). We pass ``random_state=attempt``: the result depends on
  the matrix only, so every process and a resumed run form the same groups, and no global RNG is consumed.
- A matrix that cannot be normalised (a zero self-affinity, e.g. a task never measured yet) gives no
  groups, so the previous groups are kept; the official code would pass NaN/inf to the solver and crash.
- Groups are returned in a canonical order: tasks inside a group in task order, groups ordered by their
  first task. ``order="forward"`` updates them in that order, ``"backward"`` in reverse.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence

import numpy as np

from mtlkit.errors import MtlkitError

Groups = list[list[str]]
ORDERS = ("random", "forward", "backward")


def canonical(groups: Sequence[Sequence[str]], tasks: Sequence[str]) -> Groups:
    """Tasks inside each group in task order; groups ordered by their first task."""
    pos = {t: i for i, t in enumerate(tasks)}
    inner = [sorted(g, key=pos.__getitem__) for g in groups if len(g)]
    return sorted(inner, key=lambda g: pos[g[0]])


def normalized_affinity(matrix: np.ndarray) -> np.ndarray:
    """``X[s, t] = A[s, t] / A[t, t]``, symmetrised; non-finite entries where ``A[t, t] == 0``."""
    a = np.asarray(matrix, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = a / np.diag(a)[None, :]
    return (x + x.T) / 2.0


def affinity_groups(
    matrix: np.ndarray,
    tasks: Sequence[str],
    *,
    preference: float | None = None,
    convergence_iter: int = 50,
    attempts: int = 10,
) -> Groups | None:
    """Cluster tasks by AffinityPropagation on the normalised affinity; ``None`` when no clusters are found."""
    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    tasks = list(tasks)
    x = normalized_affinity(matrix)
    if x.shape != (len(tasks), len(tasks)):
        raise MtlkitError(f"affinity matrix of shape {x.shape} for {len(tasks)} tasks")
    if not np.isfinite(x).all():
        return None
    if len(tasks) == 1:
        return [tasks]
    conv = int(convergence_iter)
    for attempt in range(int(attempts)):
        solver = AffinityPropagation(
            affinity="precomputed",
            preference=preference,
            convergence_iter=conv,
            max_iter=max(200, conv + 150),
            random_state=attempt,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            labels = solver.fit_predict(x)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        if converged and len(solver.cluster_centers_indices_) > 0 and (labels >= 0).all():
            groups: dict[int, list[str]] = {}
            for t, label in zip(tasks, labels.tolist(), strict=True):
                groups.setdefault(int(label), []).append(t)
            return canonical(list(groups.values()), tasks)
        conv += 100
    return None


def joint_groups(tasks: Sequence[str]) -> Groups:
    """All tasks in one group (plain joint training, GD in the paper's Tab. 4)."""
    return [list(tasks)]


def separate_groups(tasks: Sequence[str]) -> Groups:
    """Every task its own group (the paper's "Separate" ablation; also the warm-up grouping)."""
    return [[t] for t in tasks]


def random_groups(
    tasks: Sequence[str], rng: random.Random, *, size: int | None = None, count: int | None = None
) -> Groups:
    """A random partition into groups of ``size`` tasks (the last may be smaller) or into ``count`` groups.

    The paper's Tab. D.5 ("Random (=2..6)") lost the symbol in our copy, so both readings are offered.
    """
    if (size is None) == (count is None):
        raise MtlkitError("random grouping needs exactly one of group_size or num_groups")
    n = len(tasks)
    perm = list(tasks)
    rng.shuffle(perm)
    if size is not None:
        if not 1 <= int(size):
            raise MtlkitError(f"group_size must be >= 1, got {size}")
        size = int(size)
        chunks = [perm[i : i + size] for i in range(0, n, size)]
    else:
        if not 1 <= int(count):
            raise MtlkitError(f"num_groups must be >= 1, got {count}")
        k = min(int(count), n)
        bounds = [round(i * n / k) for i in range(k + 1)]
        chunks = [perm[bounds[i] : bounds[i + 1]] for i in range(k)]
    return canonical(chunks, tasks)


def order_groups(groups: Groups, order: str, rng: random.Random) -> Groups:
    """The update order of one batch: ``random`` (the paper's default), ``forward`` or ``backward``."""
    if order not in ORDERS:
        raise MtlkitError(f"group order must be one of {ORDERS}, got {order!r}")
    out = [list(g) for g in groups]
    if order == "random":
        rng.shuffle(out)
    elif order == "backward":
        out.reverse()
    return out
