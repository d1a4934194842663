"""Distillation from single-task networks: URL (Li, Liu & Bilen, IJCV 2023) and the imbalance study's
feature-distance probe (§V.F.1, Fig. 6).

- :func:`url_distance`: the URL distance (both sides L2-normalised per position over channels, squared
  distance summed over channels, averaged over batch and positions);
- :class:`URLAdaptor`: per-task 1x1 convolutions, Xavier-normal init;
- :class:`URLDistiller`: frozen teachers, adaptors, λ, the adaptors' optimizer and schedule;
  :func:`backward_with_distillation` adds the distillation loss after the balancer;
- :class:`FeatureDistanceProbe`: probe adaptors on detached multi-task features (never touches the model);
- :class:`FeatureExtractor`, :func:`select_features`: which feature a model exposes (``forward_features``
  plus the optional ``distill_feature`` attribute);
- :func:`plot_feature_distance`: Fig. 6 as PNG.

Official code: VICO-UoE/UniversalRepresentations, ``DensePred/nyu_url.py`` (cited line by line in each module).
"""

from mtlkit.distill._adaptor import URLAdaptor
from mtlkit.distill._bank import AdaptorBank
from mtlkit.distill._distance import url_distance
from mtlkit.distill._distiller import (
    OFFICIAL_EPOCHS,
    OFFICIAL_LR,
    OFFICIAL_WEIGHT_DECAY,
    OFFICIAL_WEIGHTS,
    OPTIONS,
    PAPER,
    URLDistiller,
    backward_with_distillation,
    resolve_weights,
)
from mtlkit.distill._features import (
    FeatureExtractor,
    build_teacher,
    freeze,
    model_select,
    select_features,
    teacher_feature,
)
from mtlkit.distill._plots import load_feature_distance, plot_feature_distance
from mtlkit.distill._probe import LOG_KEY, FeatureDistanceProbe

__all__ = [
    "LOG_KEY",
    "OFFICIAL_EPOCHS",
    "OFFICIAL_LR",
    "OFFICIAL_WEIGHTS",
    "OFFICIAL_WEIGHT_DECAY",
    "OPTIONS",
    "PAPER",
    "AdaptorBank",
    "FeatureDistanceProbe",
    "FeatureExtractor",
    "URLAdaptor",
    "URLDistiller",
    "backward_with_distillation",
    "build_teacher",
    "freeze",
    "load_feature_distance",
    "model_select",
    "plot_feature_distance",
    "resolve_weights",
    "select_features",
    "teacher_feature",
    "url_distance",
]
