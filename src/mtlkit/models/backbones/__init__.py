"""Backbones from timm: every ViT is timm's ``VisionTransformer``, every other family a timm ``features_only`` model.

Interface every backbone offers (what :class:`~mtlkit.models.MultiTaskModel`, the balancing methods and the
heads use): ``forward(x) -> [feature maps (B, C_i, h_i, w_i)]`` (the shared representation of ``on=features``
methods), ``out_channels`` (C_i), ``img_size``, ``family``, ``last_layer_parameters()`` (the last shared layer,
AvgNorm / GradNorm ``params=last``); all its parameters are shared ones.

ViTs (:class:`ViTBackbone`) add the token-level interface of DTME and Recon: ``embed``, ``blocks``,
``tokens_to_map``, ``norm``, ``out_indices``, ``embed_dim``, ``num_prefix_tokens``, ``prefix_token_names``,
``token_slices()``, ``grid``.

Features per family (the seeds' settings; ``out_indices=`` overrides): see :data:`FAMILIES` and
:func:`vit_out_indices`.
"""

from mtlkit.models.backbones._features import FeatureBackbone, last_block
from mtlkit.models.backbones._presets import FAMILIES, VIT_PRESETS, Family, Preset, vit_out_indices
from mtlkit.models.backbones._timm import checkpoint_report, count_parameters_meta, create_backbone, resolve
from mtlkit.models.backbones._vit import ViTBackbone

__all__ = [
    "FAMILIES",
    "VIT_PRESETS",
    "Family",
    "FeatureBackbone",
    "Preset",
    "ViTBackbone",
    "checkpoint_report",
    "count_parameters_meta",
    "create_backbone",
    "last_block",
    "resolve",
    "vit_out_indices",
]
