"""Fixtures of the DTME tests (tiny models and batches from :mod:`.helpers`)."""

import pytest

from .helpers import random_batch, tiny_tasks


@pytest.fixture
def tasks():
    return tiny_tasks()


@pytest.fixture
def batches():
    return [random_batch(seed=i) for i in range(3)]
