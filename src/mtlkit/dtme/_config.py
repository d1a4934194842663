"""Options of DTME (``--dtme key=value,...``) and Recon (``--recon key=value,...``), validated up front."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mtlkit.dtme._modules import MODULATORS
from mtlkit.dtme._select import APPLY_MODES, BUDGETS, SELECTIONS
from mtlkit.errors import MtlkitError

#: calibration set per dataset in the paper (App. B.3): None = the whole training set
PAPER_CALIBRATION_BATCHES: dict[str, int | None] = {"nyud": None, "pascal-context": None, "taskonomy": 100}
#: our choice for datasets the paper does not use (and when the dataset is unknown)
DEFAULT_CALIBRATION_BATCHES = 100


def calibration_batches_for(dataset: str | None) -> int | None:
    """Calibration batches for ``calib_batches=auto``: the paper's setting for its datasets (App. B.3: the
    full training set on NYUD-v2 and PASCAL-Context -> None, 100 random mini-batches on Taskonomy), else
    100 (our choice; the synthetic stand-ins included, they are for quick runs)."""
    if dataset in PAPER_CALIBRATION_BATCHES:
        return PAPER_CALIBRATION_BATCHES[dataset]
    return DEFAULT_CALIBRATION_BATCHES


def _calib_batches(value: Any) -> int | str | None:
    """A positive number of batches, ``all`` / ``None`` for one pass over the training set, or ``auto``."""
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    if value is None or (isinstance(value, str) and value.lower() in ("all", "full")):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MtlkitError(
            f"calib_batches={value!r}: must be a positive integer, 'all' (the whole training set) or 'auto' "
            "(the paper's setting for the dataset)"
        )
    return value


def default_iteration(iters: int) -> int:
    """Expansion point when none is given: after a short warm-up, 10% of the run, at most 100 iterations
    (our choice; the paper expands early and finds early best, Fig. 3)."""
    return min(100, iters // 10)


class _Options:
    """from_dict / to_dict with unknown keys named (mixed into the option dataclasses)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Any:
        values = dict(values or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(values) - set(names)
        if unknown:
            raise MtlkitError(f"unknown {cls.what} option(s) {', '.join(sorted(unknown))}; valid: {', '.join(names)}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def for_dataset(self, dataset: str | None) -> Any:
        """A copy with ``calib_batches=auto`` resolved for ``dataset`` (:func:`calibration_batches_for`)."""
        if self.calib_batches != "auto":
            return self
        return dataclasses.replace(self, calib_batches=calibration_batches_for(dataset))

    def resolved_calib_batches(self) -> int | None:
        """The number of calibration batches (None: one full pass); ``auto`` without a dataset gives 100."""
        return calibration_batches_for(None) if self.calib_batches == "auto" else self.calib_batches

    def resolved_iteration(self, iters: int | None) -> int:
        it = self.iteration if self.iteration is not None else default_iteration(iters or 1000)
        if iters is not None and it >= iters:
            raise MtlkitError(
                f"{self.what} iteration={it} is not before the end of training (iters={iters}); choose a smaller one"
            )
        return it

    def _check_common(self) -> None:
        if self.iteration is not None and (
            isinstance(self.iteration, bool) or not isinstance(self.iteration, int) or self.iteration < 0
        ):
            raise MtlkitError(f"{self.what} iteration={self.iteration!r}: must be an integer >= 0")
        self.calib_batches = _calib_batches(self.calib_batches)


@dataclass
class DTMEConfig(_Options):
    """DTME-MTL options (DESIGN.md §6). rho, r, tokens, selection, mode, modulator, budget and calib_batches
    default to the paper's settings; the expansion point is our choice (the paper: early, Fig. 3).

    iteration: when to expand (None: 10% of the run, at most 100). rho: share of expanded layers
    (n = round(ρ·L)). budget: total (at most n layers with TM or TE in all, the paper's Fig. 6) | each
    (n for TM and n for TE independently). r: range/null variance ratio (paper: 100). tokens: task
    tokens m per TE layer (paper: 6). selection: conflict | random | reverse | swap. mode: both | tm-only
    | te-only. modulator: affine | batchnorm. freeze: freeze the backbone after expansion (heads, TM and
    TE keep training). calib_batches: training batches for calibration, 'all' (one pass over the training
    set) or 'auto' (the paper's: all on NYUD-v2 and PASCAL-Context, 100 on Taskonomy, 100 elsewhere;
    resolved by :func:`calibration_batches_for` with the run's dataset). seed: for ``selection=random``
    (None: the run's seed). measure_inference: time and count the FLOPs of a forward pass before and
    after expansion. final_analysis: analyse the expanded model again at the end of training
    (``token_space_end.json``; the paper's Tab. 14 compares conflicts at the start and the end).
    """

    what = "dtme"

    iteration: int | None = None
    rho: float = 0.5
    r: float = 100.0
    tokens: int = 6
    selection: str = "conflict"
    mode: str = "both"
    modulator: str = "affine"
    budget: str = "total"
    freeze: bool = False
    calib_batches: int | str | None = "auto"
    seed: int | None = None
    measure_inference: bool = True
    final_analysis: bool = False

    def validate(self) -> None:
        self._check_common()
        if not (isinstance(self.rho, int | float) and 0 <= self.rho <= 1):
            raise MtlkitError(f"dtme rho={self.rho!r}: must be in [0, 1] (share of layers expanded)")
        if not (isinstance(self.r, int | float) and self.r > 0):
            raise MtlkitError(f"dtme r={self.r!r}: must be > 0 (range/null variance ratio)")
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 1:
            raise MtlkitError(f"dtme tokens={self.tokens!r}: must be a positive integer (task tokens per layer)")
        for key, valid in (("selection", SELECTIONS), ("mode", APPLY_MODES), ("modulator", tuple(MODULATORS)),
                           ("budget", BUDGETS)):
            if getattr(self, key) not in valid:
                raise MtlkitError(f"dtme {key}={getattr(self, key)!r}: must be one of {', '.join(valid)}")
        for key in ("freeze", "measure_inference", "final_analysis"):
            if not isinstance(getattr(self, key), bool):
                raise MtlkitError(f"dtme {key}={getattr(self, key)!r}: must be true or false")


@dataclass
class ReconConfig(_Options):
    """Recon baseline options (Shi et al., ICLR 2023; the DTME paper's Tab. 7).

    iteration: when to convert layers (None: as DTME). layers: number of blocks made task-specific, or
    share: their share of all blocks (give one; default layers=1, which with ViT-B and 4 tasks adds ~23%
    parameters, the overhead the DTME paper reports for Recon). threshold: a pair of task gradients of a
    layer conflicts when their cosine is below it (0: opposite directions). calib_batches: as DTME (the
    same calibration set, so the two are compared like for like; Recon's own paper does not fix one).
    """

    what = "recon"

    iteration: int | None = None
    layers: int | None = None
    share: float | None = None
    threshold: float = 0.0
    calib_batches: int | str | None = "auto"
    measure_inference: bool = True

    def validate(self) -> None:
        self._check_common()
        if self.layers is not None and self.share is not None:
            raise MtlkitError("recon: give either layers (a number of blocks) or share (a fraction), not both")
        if self.layers is not None and (isinstance(self.layers, bool) or not isinstance(self.layers, int)
                                        or self.layers < 1):
            raise MtlkitError(f"recon layers={self.layers!r}: must be a positive integer")
        if self.share is not None and not (isinstance(self.share, int | float) and 0 < self.share <= 1):
            raise MtlkitError(f"recon share={self.share!r}: must be in (0, 1]")
        if not isinstance(self.threshold, int | float) or not -1 <= self.threshold <= 1:
            raise MtlkitError(f"recon threshold={self.threshold!r}: must be a cosine in [-1, 1]")

    def num_layers(self, depth: int) -> int:
        if self.share is not None:
            return max(1, min(depth, int(self.share * depth + 0.5)))
        return min(depth, self.layers if self.layers is not None else 1)
