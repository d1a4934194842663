"""``step_memory`` (peak of the first step) in metrics.json and the ``max_memory`` refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlkit.cli import main as cli_main
from mtlkit.engine import Trainer
from mtlkit.engine._memory import StepMemory, human
from mtlkit.engine._speed_config import parse_bytes
from mtlkit.errors import MtlkitError


def test_parse_bytes():
    assert parse_bytes("8GB") == 8 * 2**30
    assert parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert parse_bytes("512mb") == 512 * 2**20
    assert parse_bytes(1000) == 1000
    for bad in ("eight GB", "8XB", "0GB", -3):
        with pytest.raises(MtlkitError, match="max_memory="):
            parse_bytes(bad)
    assert human(3 * 2**30) == "3.00 GiB" and human(5 * 2**20 // 2) == "2.50 MiB"


def test_cpu_peak_sees_a_large_allocation():
    meter = StepMemory(torch.device("cpu"))
    before = StepMemory(torch.device("cpu"))
    before.measure(lambda: None)
    size = 256 * 2**20

    def step():
        x = torch.ones(size // 4)  # 256 MiB of float32, touched
        return float(x[-1])

    meter.measure(step)
    assert meter.kind == "cpu_peak_rss"
    assert meter.peak >= before.peak + 0.9 * size  # the step's allocation is in the peak


def test_metrics_record_step_memory(tiny_config):
    cfg = tiny_config.replace(iters=2, eval_every=0, tasks=["depth"])
    metrics = Trainer(cfg).fit()
    mem = json.loads(Path(cfg.out, "metrics.json").read_text())["step_memory"]
    assert mem == metrics["step_memory"] and mem["kind"] == "cpu_peak_rss"
    assert 50 * 2**20 < mem["peak_bytes"] < 64 * 2**30 and mem["limit_bytes"] is None


def test_max_memory_refuses_before_anything_is_saved(tiny_config, capsys):
    cfg = tiny_config.replace(iters=3, eval_every=0, tasks=["depth"], max_memory="1MB")
    with pytest.raises(MtlkitError, match=r"max_memory='1MB': one training step peaks at .* above the limit of "
                                          r"1.00 MiB; lower batch_size"):
        Trainer(cfg).fit()
    assert not Path(cfg.out, "resume.json").exists() and not Path(cfg.out, "metrics.json").exists()
    code = cli_main(["train", "--dataset", "tiny-random", "--image-size", "16", "--model", "micro", "--iters", "2",
                     "--batch-size", "4", "--tasks", "depth", "--out", cfg.out, "--no-progress",
                     "--max-memory", "1MB"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "max_memory='1MB'" in err[0]
    # a generous limit trains
    ok = tiny_config.replace(iters=2, eval_every=0, tasks=["depth"], max_memory="64GB")
    assert Trainer(ok).fit()["step_memory"]["limit_bytes"] == 64 * 2**30
