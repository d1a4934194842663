"""The URL feature distance: L2-normalise both sides per position, squared distance summed over channels, mean.

Official code (VICO-UoE/UniversalRepresentations, ``DensePred/nyu_url.py`` lines 186-195)::

    feat_ti = F.normalize(feat_ti, p=2, dim=1, eps=1e-12)
    feat_si[l] = F.normalize(feat_si[l], p=2, dim=1, eps=1e-12)
    dist_feat = dist_feat + (feat_si[l] - feat_ti.detach()).pow(2).sum(1).mean()

Reduction: for features ``(B, C, *spatial)`` both sides are divided by their L2 norm over the channel axis
(dim 1) at every position, the squared difference is **summed over channels** and **averaged over the batch
and all spatial positions**. The value therefore lies in ``[0, 4]`` (0: same direction at every position,
2: orthogonal, 4: opposite), whatever the number of channels or the resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkit.errors import MtlkitError

EPS = 1e-12  # nyu_url.py lines 188 and 194


def url_distance(student: torch.Tensor, teacher: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Scalar URL distance between adapted student features and teacher features of the same shape.

    ``teacher`` is detached (it never receives a gradient, as ``feat_ti.detach()`` in the official code).
    Computed in float32 (a mixed-precision forward would otherwise normalise in half precision; our choice).
    """
    if student.shape != teacher.shape:
        raise MtlkitError(
            f"URL distance needs features of the same shape, got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}; resize the adapted student features to the teacher's size first"
        )
    if student.dim() < 2:
        raise MtlkitError(f"URL distance needs features (B, C, ...), got shape {tuple(student.shape)}")
    s = F.normalize(student.float(), p=2, dim=1, eps=eps)
    t = F.normalize(teacher.detach().float(), p=2, dim=1, eps=eps)
    return (s - t).pow(2).sum(1).mean()
