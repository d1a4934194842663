"""Training batches whose randomness belongs to them: the loader draws nothing from the global RNG.

Two things made a resumed run differ from the uninterrupted one: creating a DataLoader iterator draws a
base seed from torch's global RNG (one draw more in the resumed process), and augmentations drew from
whatever global RNG state the process (or worker) had. Here:

- the training DataLoader gets its own ``torch.Generator`` (seeded from the run's seed; its state is saved
  and restored with the run), so creating an iterator leaves the global RNG alone;
- every item of global batch ``i`` at position ``j`` gets its own seed, a pure function of (run seed, i, j)
  forked from a generator seeded with the run seed and ``i``; the item is loaded with torch's, numpy's and
  Python's global RNGs seeded from it and restored afterwards (:class:`SeededItems`). Augmentations that draw
  from any global RNG (``mtlkit.data.transforms.sample_rng`` draws from torch's) are therefore the same in
  an uninterrupted run, a resumed run, with any number of DataLoader workers and on every process count
  (the seed follows the item's position in the *global* batch).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlkit.engine._sampler import IterationBatchSampler
from mtlkit.errors import MtlkitError

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, iteration) over the 64-bit seed space


def item_seeds(seed: int, iteration: int, n: int) -> list[int]:
    """The seeds of the ``n`` items of global batch ``iteration`` (a pure function of its arguments)."""
    g = torch.Generator().manual_seed((int(seed) * _MIX + int(iteration)) % 2**63)
    return torch.randint(0, 2**62, (n,), generator=g).tolist()


class SeededBatchSampler(IterationBatchSampler):
    """:class:`IterationBatchSampler` whose batches are ``[(index, item_seed), ...]`` for :class:`SeededItems`."""

    def __init__(self, n: int, batch_size: int, seed: int, *args: Any, **kwargs: Any) -> None:
        world = kwargs.get("world", args[2] if len(args) > 2 else 1)
        if n < batch_size * world:
            raise MtlkitError(f"batch_size={batch_size}: the training split has {n} samples, fewer than one batch "
                              f"({batch_size} x {world} process(es)); lower --batch-size")
        super().__init__(n, batch_size, seed, *args, **kwargs)

    def batch(self, it: int) -> list[tuple[int, int]]:  # type: ignore[override]
        epoch, k = divmod(it, self.per_epoch)
        gb = self.batch_size * self.world
        idx = self._perm(epoch)[k * gb : (k + 1) * gb].tolist()
        seeds = item_seeds(self.seed, it, gb)
        pairs = list(zip(idx, seeds, strict=True))
        return pairs[self.rank :: self.world]


class SeededItems(Dataset):
    """``dataset[index]`` computed under the global RNGs seeded with the item's seed (restored afterwards)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
