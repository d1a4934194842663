"""The resume files: no pickle (a crafted resume.pt is refused, never unpickled), exact round trip of every
state value, one-line errors for corrupt, truncated, mismatched and foreign files."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from mtlkit.cli import main as cli_main
from mtlkit.engine import Trainer
from mtlkit.engine._state import (
    JSON_FILE,
    TENSORS_FILE,
    ResumeError,
    load_resume,
    pack,
    rng_state,
    save_resume,
    set_rng_state,
    unpack,
)


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/mtlkit-pwned", "w"))  # would create a file if unpickled


def test_crafted_pickle_is_refused_not_unpickled(tmp_path):
    (tmp_path / "resume.pt").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ResumeError, match="never loaded"):
        load_resume(tmp_path)
    import os

    assert not os.path.exists("/tmp/mtlkit-pwned")


def test_round_trip_of_every_kind_of_value(tmp_path):
    state = {
        "iteration": 3,
        "model": {"w": torch.randn(2, 3), "n": torch.tensor(7), "b": torch.tensor([True, False])},
        "optimizer": {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.ones(3)}},
                      "param_groups": [{"params": [0], "betas": (0.9, 0.999), "lr": float("inf"), "name": "x"}]},
        "np": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "scalar": np.float64(0.25),
        "nested": [(1, "a", None), {"__tensor__": "not a marker"}],
        "view": torch.arange(10.0)[2:5],  # a view of a larger storage
    }
    save_resume(state, tmp_path)
    back = load_resume(tmp_path)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["model"]["b"].dtype == torch.bool
    assert back["optimizer"]["state"][0]["exp_avg"].tolist() == [1.0, 1.0, 1.0]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["optimizer"]["param_groups"][0]["lr"] == float("inf")
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["scalar"] == 0.25 and back["nested"] == [(1, "a", None), {"__tensor__": "not a marker"}]
    assert back["view"].tolist() == [2.0, 3.0, 4.0]
    assert not (tmp_path / "resume.pt").exists()


def test_unstorable_values_are_named():
    with pytest.raises(Exception, match=r"\.bad holds a object"):
        pack({"bad": object()})


def test_rng_states_are_uint8_tensors_and_restore_every_stream():
    g = torch.Generator().manual_seed(5)
    state = rng_state(g)
    assert state["torch"].dtype == torch.uint8 and state["numpy"]["key"].dtype == torch.uint8
    assert state["python"]["internal"].dtype == torch.uint8 and state["loader"].dtype == torch.uint8
    tensors, meta = pack(state)
    draws = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(), torch.rand(1, generator=g).item())
    torch.manual_seed(99), np.random.seed(99), random.seed(99), g.manual_seed(99)
    set_rng_state(unpack(json.loads(json.dumps(meta)), tensors), g)
    again = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(), torch.rand(1, generator=g).item())
    assert again == draws


@pytest.fixture
def saved(tmp_path):
    save_resume({"iteration": 1, "w": torch.ones(4)}, tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / JSON_FILE).write_text("{not json"), "resume.json is corrupt"),
    (lambda d: (d / JSON_FILE).write_text("[1, 2]"), "not an mtlkit resume state"),
    (lambda d: (d / TENSORS_FILE).write_bytes((d / TENSORS_FILE).read_bytes()[:40]), "resume.safetensors is corrupt"),
    (lambda d: (d / TENSORS_FILE).write_bytes(b"\x00" * 7), "resume.safetensors is corrupt"),
    (lambda d: (d / TENSORS_FILE).unlink(), "resume.safetensors is missing"),
    (lambda d: save_resume({"iteration": 2}, d / "other") or (d / JSON_FILE).write_bytes(
        (d / "other" / JSON_FILE).read_bytes()), "different saves"),
    (lambda d: (d / JSON_FILE).write_text((d / JSON_FILE).read_text().replace('"version": 1', '"version": 9')),
     "format version 9"),
])
def test_damaged_files_give_one_line_errors(saved, damage, message):
    (saved / "other").mkdir()
    damage(saved)
    with pytest.raises(ResumeError, match=message) as e:
        load_resume(saved)
    assert "\n" not in str(e.value)


def test_cli_resume_of_a_corrupt_run_exits_2(tiny_config, capsys):
    cfg = tiny_config.replace(iters=2, eval_every=0)
    Trainer(cfg).fit()
    (tiny_config.out and __import__("pathlib").Path(cfg.out, TENSORS_FILE)).write_bytes(b"garbage!")
    argv = ["train", "--dataset", "tiny-random", "--image-size", "16", "--model", "micro", "--iters", "2",
            "--batch-size", "4", "--eval-every", "0", "--out", cfg.out, "--no-progress", "--resume"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume.safetensors is corrupt" in err[0]


def test_different_config_on_resume_is_refused_with_the_keys(tiny_config):
    cfg = tiny_config.replace(iters=6, eval_every=3)
    t = Trainer(cfg)
    t.callbacks.append(type("S", (), {"on_iteration_start": lambda s, tr, it: (_ for _ in ()).throw(KeyError)
                                      if it == 4 else None})())
    with pytest.raises(KeyError):
        t.fit()
    with pytest.raises(ResumeError, match=r"optim\.lr: 0\.001 -> 0\.002.*run\.iters: 6 -> 8"):
        Trainer(cfg.replace(lr=2e-3, iters=8)).fit(resume=True)
    Trainer(cfg.replace(progress=True, num_workers=0)).fit(resume=True)  # display-only keys may change
