"""The published configurations: backbone, input size and architecture options per (architecture, dataset).

Input sizes are the seeds' (the imbalance study's supplementary: NYUD-v2 448x576, PASCAL-Context 512x512, as
InvPT). ``official_params``: the parameter count of the official model at that configuration, counted from
the official code's module definitions (docs/architectures.md has the table and how it was counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mtlkit.errors import MtlkitError

NYUD_SIZE = (448, 576)
PASCAL_SIZE = (512, 512)


@dataclass(frozen=True)
class Published:
    arch: str
    dataset: str
    #: timm model name and its ``create_model`` options
    backbone: str
    backbone_kwargs: dict[str, Any]
    img_size: tuple[int, int]
    #: options of the architecture's constructor
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the official config / code it reproduces
    source: str = ""
    official_params: int = 0

    @property
    def official_tasks(self) -> dict[str, int]:
        """The official configs' task outputs (saliency: 1 sigmoid channel in the survey code, 2 softmax
        channels in InvPT / TaskPrompter); mtlkit's own tasks may differ (its saliency has one channel)."""
        if self.dataset == "nyud":
            return {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
        sal = 1 if self.arch in ("mtan", "mtinet") else 2
        return {"semseg": 21, "parts": 7, "saliency": sal, "normals": 3, "edge": 1}


def _p(key: str, backbone: str, bkw: dict, kwargs: dict, source: str, n: int) -> tuple[str, Published]:
    arch, _, dataset = key.split("-")
    size = NYUD_SIZE if dataset == "nyud" else PASCAL_SIZE
    return key, Published(arch, dataset, backbone, bkw, size, kwargs, source, n)


_SURVEY = "SimonVandenhende/Multi-Task-Learning-PyTorch configs/"
_MTT = "prismformore/Multi-Task-Transformer "
_R18 = {"output_stride": 8}
_HR18 = {"feature_location": ""}
_TP_NYUD_L = {"embed_dim": 768, "final_embed_dim": 768, "chan_nheads": 16, "use_ctr": False}
_TP_PASCAL_L = {"embed_dim": 300, "final_embed_dim": 350, "chan_nheads": 1, "use_ctr": True}
_TP_PASCAL_B = {"embed_dim": 780, "final_embed_dim": 1024, "chan_nheads": 16, "use_ctr": True}

#: key: "<arch>-<backbone short name>-<dataset>"
PUBLISHED: dict[str, Published] = dict(
    [
        _p("mtan-resnet18-nyud", "resnet18", _R18, {}, _SURVEY + "pascal/resnet18/mtan.yml on NYUD", 31_630_637),
        _p("mtan-resnet18-pascal", "resnet18", _R18, {}, _SURVEY + "pascal/resnet18/mtan.yml", 36_613_425),
        _p("mtinet-hrnet18-nyud", "hrnet_w18_small_v2", _HR18, {}, _SURVEY + "nyud/hrnet18/mti_net.yml", 17_960_945),
        _p(
            "mtinet-hrnet18-pascal", "hrnet_w18_small_v2", _HR18, {}, _SURVEY + "pascal/hrnet18/mti_net.yml", 24_494_171
        ),
        _p(
            "invpt-vitL-nyud",
            "vit_large_patch16_384",
            {},
            {},
            _MTT + "InvPT/configs/nyud/nyud_vitLp16.yml",
            402_092_888,
        ),
        _p("invpt-vitB-nyud", "vit_base_patch16_384", {}, {}, _MTT + "(nyud_vitLp16 decoder on ViT-B)", 160_823_896),
        _p(
            "invpt-vitL-pascal",
            "vit_large_patch16_384",
            {},
            {},
            _MTT + "InvPT/configs/pascal/pascal_vitLp16.yml",
            422_929_810,
        ),
        _p(
            "invpt-vitB-pascal", "vit_base_patch16_384", {}, {}, _MTT + "(pascal_vitLp16 decoder on ViT-B)", 176_347_794
        ),
        _p(
            "taskprompter-vitL-nyud",
            "vit_large_patch16_384",
            {},
            _TP_NYUD_L,
            _MTT + "TaskPrompter/configs/nyud/nyud_vitLp16_taskprompter.yml",
            513_505_709,
        ),
        _p(
            "taskprompter-vitL-pascal",
            "vit_large_patch16_384",
            {},
            _TP_PASCAL_L,
            _MTT + "TaskPrompter/configs/pascal/pascal_vitLp16_taskprompter.yml",
            401_104_864,
        ),
        _p(
            "taskprompter-vitB-pascal",
            "vit_base_patch16_384",
            {},
            _TP_PASCAL_B,
            _MTT + "TaskPrompter/configs/pascal/pascal_vitBp16_taskprompter.yml",
            418_332_214,
        ),
    ]
)


def published(arch: str, dataset: str, backbone: str | None = None) -> Published:
    """The published configuration of ``arch`` on ``dataset`` ("nyud" / "pascal"); ``backbone``: the short
    name in the key (resnet18, hrnet18, vitL, vitB), default the first published one."""
    matches = [
        p
        for key, p in PUBLISHED.items()
        if p.arch == arch and p.dataset == dataset and (backbone is None or key.split("-")[1] == backbone)
    ]
    if not matches:
        valid = ", ".join(PUBLISHED)
        raise MtlkitError(f"no published configuration for {arch} / {dataset} / {backbone}; published: {valid}")
    return matches[0]
