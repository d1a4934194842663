"""Frozen teachers and one adaptor per task: what URL and the feature-distance probe share.

For task ``t``: the teacher's feature ``T_t(x)`` (no gradient, eval mode), the student's distilled feature(s)
``S_l``, and ``D_t = Σ_l d(resize(A_t,l(S_l)), T_t(x))`` with ``d`` the URL distance and ``resize`` bilinear
to the teacher's spatial size when they differ (``nyu_url.py`` lines 181-196: adapt, resize, normalise,
distance, summed over the student features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.distill._adaptor import URLAdaptor
from mtlkit.distill._distance import url_distance
from mtlkit.distill._features import DEFAULT_SELECT, Select, channels_of, freeze, select_features, teacher_feature
from mtlkit.errors import MtlkitError

Channels = int | Sequence[int] | Mapping[str, int | Sequence[int]]


def _per_task(value: Any, tasks: list[str], what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [t for t in tasks if t not in value]
        if missing:
            raise MtlkitError(f"{what} misses task(s) {missing}; give one entry per teacher")
        return {t: value[t] for t in tasks}
    return dict.fromkeys(tasks, value)


class AdaptorBank:
    """Frozen teachers ``{task: module mapping inputs to features}`` and a :class:`URLAdaptor` per task.

    Teachers are kept in a plain dict, never registered as submodules of anything: they are in no
    ``state_dict``, no ``parameters()``, and ``train()`` never reaches them.
    """

    def __init__(
        self,
        teachers: Mapping[str, nn.Module],
        student_channels: Channels,
        teacher_channels: int | Mapping[str, int],
        *,
        select: Select = DEFAULT_SELECT,
        generator: torch.Generator | None = None,
    ) -> None:
        if not teachers:
            raise MtlkitError("distillation needs at least one teacher {task: single-task feature extractor}")
        self.tasks: list[str] = list(teachers)
        bad = [t for t in self.tasks if "." in t or not t]
        if bad:
            raise MtlkitError(f"task names {bad} cannot name an adaptor (no dots, not empty)")
        self.teachers: dict[str, nn.Module] = {t: freeze(m) for t, m in teachers.items()}
        self.select = select
        sc = _per_task(student_channels, self.tasks, "student_channels")
        tc = _per_task(teacher_channels, self.tasks, "teacher_channels")
        self.adaptors = nn.ModuleDict({t: URLAdaptor(sc[t], int(tc[t]), generator=generator) for t in self.tasks})

    # ------------------------------------------------------------------ construction from one batch
    @classmethod
    def channels_from_example(
        cls, teachers: Mapping[str, nn.Module], student_features: Any, inputs: Any, select: Select = DEFAULT_SELECT
    ) -> tuple[dict[str, list[int]], dict[str, int]]:
        """``(student_channels, teacher_channels)`` per task, read off one batch: ``student_features`` as
        ``forward_features`` returned them, ``inputs`` fed to every (frozen) teacher."""
        tasks = list(teachers)
        student = {t: channels_of(select_features(student_features, select, t)) for t in tasks}
        teacher = {}
        for t, m in teachers.items():
            freeze(m)
            with torch.no_grad():
                teacher[t] = int(teacher_feature(m(inputs)).shape[1])
        return student, teacher

    # ------------------------------------------------------------------ features and distances
    def teacher_features(self, inputs: Any) -> dict[str, torch.Tensor]:
        """Every teacher's feature on ``inputs``: eval mode, no graph (teachers never get gradients)."""
        out = {}
        with torch.no_grad():
            for t, m in self.teachers.items():
                if m.training:  # someone switched it back to training mode: BatchNorm statistics would move
                    m.eval()
                out[t] = teacher_feature(m(inputs)).detach()
        return out

    def distances(
        self, student_features: Any, inputs: Any = None, teacher_features: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{task: D_t}`` (differentiable with respect to the student features and the adaptors)."""
        picked = {t: select_features(student_features, self.select, t) for t in self.tasks}
        return self.distances_of(picked, inputs, teacher_features)

    def distances_of(
        self, picked: Mapping[str, list[torch.Tensor]], inputs: Any = None,
        teacher_features: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`distances`, from the already selected student features ``{task: [features]}``."""
        if teacher_features is None:
            if inputs is None:
                raise MtlkitError("distillation needs the inputs (for the teachers) or the teacher features")
            teacher_features = self.teacher_features(inputs)
        missing = [t for t in self.tasks if t not in teacher_features]
        if missing:
            raise MtlkitError(f"teacher features miss task(s) {missing}")
        out = {}
        for t in self.tasks:
            target = teacher_features[t].detach()
            adapted = self.adaptors[t](list(picked[t]))
            d = target.new_zeros((), dtype=torch.float32)
            for a in adapted:
                if a.dim() != target.dim():
                    raise MtlkitError(
                        f"task {t!r}: student feature {tuple(a.shape)} and teacher feature {tuple(target.shape)} "
                        "must both be maps (B, C, H, W) or both vectors (B, C)"
                    )
                if a.dim() == 4 and a.shape[-2:] != target.shape[-2:]:  # nyu_url.py lines 192-193
                    a = F.interpolate(a, size=target.shape[-2:], mode="bilinear")
                d = d + url_distance(a, target)
            out[t] = d
        return out

    # ------------------------------------------------------------------ plumbing
    def parameters(self) -> list[nn.Parameter]:
        """The adaptors' parameters (teachers have none that train)."""
        return list(self.adaptors.parameters())

    def to(self, device: torch.device | str) -> AdaptorBank:
        """Move adaptors and teachers (parameters keep their identity, so an optimizer stays valid)."""
        self.adaptors.to(device)
        for m in self.teachers.values():
            m.to(device)
        self._move_optimizer_state(torch.device(device))
        return self

    def _move_optimizer_state(self, device: torch.device) -> None:
        opt = getattr(self, "optimizer", None)
        if opt is None:
            return
        for state in opt.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    state[k] = v.to(device)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None
