"""Loader options (pin_memory on CUDA, persistent workers and prefetch with workers) and channels_last for CNNs."""

from __future__ import annotations

import torch

from mtlkit.engine import TrainConfig, Trainer
from mtlkit.engine._loading import PREFETCH, is_convolutional, loader_options, prepare_model


def test_loader_options_by_device_and_workers():
    assert loader_options("cpu", 0) == {}
    assert loader_options("cpu", 2) == {"persistent_workers": True, "prefetch_factor": PREFETCH}
    assert loader_options(torch.device("cuda", 1), 0) == {"pin_memory": True}
    assert loader_options("cuda", 3) == {"pin_memory": True, "persistent_workers": True, "prefetch_factor": PREFETCH}


class _CNN(torch.nn.Module):
    def __init__(self, convs: int) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(convs)],
                                            torch.nn.Conv2d(3, 3, 1))


def test_cnn_detection_and_channels_last_only_on_cuda(tiny_config):
    assert is_convolutional(_CNN(4)) and not is_convolutional(_CNN(3))  # 1x1 convolutions do not count
    vit = Trainer(tiny_config).model
    assert not is_convolutional(vit)  # one convolution: the patch embedding
    cnn = _CNN(5)
    assert not prepare_model(cnn, "cpu")
    assert cnn.backbone[0].weight.is_contiguous()


def test_trainer_loaders_use_the_options_and_keep_eval_workers(tiny_config):
    cfg: TrainConfig = tiny_config.replace(iters=2, eval_every=0, num_workers=1, tasks=["depth"])
    trainer = Trainer(cfg)
    train = trainer._loader().loader
    assert train.persistent_workers and train.prefetch_factor == PREFETCH and not train.pin_memory
    assert trainer._eval_loader("val") is trainer._eval_loader("val")  # one set of workers per split
    metrics = trainer.fit()
    assert metrics["iterations"] == 2
