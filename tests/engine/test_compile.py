"""``run.compile``: the compiled forward trains and resumes exactly, falls back to eager with one warning when
capture fails, and is compiled again after a DTME expansion (CPU, cheap backends)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtlkit.engine import TrainConfig, Trainer, load_model
from mtlkit.engine._compile import Compiler, is_compiled
from mtlkit.errors import MtlkitError
from tests.faults.helpers import Stop, StopAt


def config(tmp_path, name, **kw):
    base = dict(dataset="tiny-random", tasks=["semseg", "depth"], image_size=16, model="micro", iters=6,
                batch_size=4, eval_every=3, eval_batch_size=8, out=str(tmp_path / name),
                baseline_cache=str(tmp_path / "cache"), progress=False, compile="aot_eager")
    return TrainConfig.from_dict({**base, **kw})



def test_compiled_run_trains_like_eager_and_resumes_exactly(tmp_path):
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback: the forward was captured
        trainer = Trainer(config(tmp_path, "full", method="upgrad"))
        assert is_compiled(trainer.model)
        assert {"forward_features", "forward_heads"} <= set(vars(trainer.model))  # what the strategies call
        compiled = trainer.fit()
    assert trainer.compiler.failed is None and trainer.compiler.compilations == 1
    eager = Trainer(config(tmp_path, "eager", method="upgrad", compile=None)).fit()
    for t in ("semseg", "depth"):  # same run up to floating-point reassociation
        assert compiled["primary"][t] == pytest.approx(eager["primary"][t], rel=1e-3)
    part = Trainer(config(tmp_path, "part", method="upgrad"))
    part.callbacks.append(StopAt(3))
    with pytest.raises(Stop):
        part.fit()
    Trainer(config(tmp_path, "part", method="upgrad")).fit(resume=True)
    a, b = load_model(tmp_path / "full")[0].state_dict(), load_model(tmp_path / "part")[0].state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # keys without "_orig_mod."


def _failing_backend(gm, example_inputs):
    raise RuntimeError("backend cannot compile this graph")


def test_capture_failure_falls_back_to_eager_with_one_warning():
    torch._dynamo.reset()
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    expected = model(x)
    compiler = Compiler(_failing_backend)
    compiler.apply(model)
    with pytest.warns(RuntimeWarning, match="graph capture failed .*running the model eagerly") as rec:
        out = model(x)
        again = model(x)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert torch.equal(out, expected) and torch.equal(again, expected)
    assert not is_compiled(model) and compiler.failed.startswith("BackendCompilerFailed")


def test_model_errors_are_not_swallowed():
    torch._dynamo.reset()
    model = torch.nn.Linear(3, 2)
    Compiler("eager").apply(model)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(torch.randn(4, 5))


def test_dtme_expansion_recompiles(tmp_path):
    torch._dynamo.reset()
    cfg = config(tmp_path, "dtme", compile="eager", iters=4, eval_every=0,
                 dtme={"iteration": 2, "calib_batches": 2, "tokens": 2})
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    assert metrics["dtme"]["expanded"]
    assert trainer.compiler.compilations == 2 and is_compiled(trainer.model)


def test_bad_compile_value(tmp_path):
    with pytest.raises(MtlkitError, match="compile=''"):
        config(tmp_path, "bad", compile="").validate()
