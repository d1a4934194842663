"""Single-task baselines and Δm through the API.

::

    base = mtlkit.baselines.train(lambda tasks: MyModel(tasks), tasks, train, key="census-mlp-v1",
                                  val_data=val, test_data=test, iters=500)
    metrics = mtlkit.Trainer(MyModel(list(tasks)), tasks, train, ..., baseline=base).fit()
    metrics["delta_m"]                      # or base.delta_m(metrics["primary"], higher_is_better)

Results are cached in ``<cache>/<key>/baselines.json`` (cache: ``$MTLKIT_CACHE/baselines``, default
``~/.cache/mtlkit/baselines``); ``find(key)`` reads them back, ``Trainer(baseline=key)`` too.
"""

from mtlkit.engine._single_task import train_baselines as train
from mtlkit.engine._single_task import train_single_task_baselines
from mtlkit.engine.baselines import Baselines, cache_root, find, find_baselines

__all__ = ["Baselines", "cache_root", "find", "find_baselines", "train", "train_single_task_baselines"]
