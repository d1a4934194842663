"""Fixtures of the balancing tests (helpers in ``balancing_helpers``)."""

from __future__ import annotations

import pytest

from .balancing_helpers import make_model, make_tasks


@pytest.fixture
def tasks():
    return make_tasks()


@pytest.fixture
def model(tasks):
    return make_model(tasks)
