"""Fixtures for the real-dataset loader tests: the shared sample files (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def find_shared_data() -> Path | None:
    """``$MTLKIT_SHARED_DATA``, else the nearest ``shared/data`` beside the repository or one of its parents."""
    env = os.environ.get("MTLKIT_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in Path(__file__).resolve().parents[2:]:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = find_shared_data()
    if path is None:
        pytest.skip("real sample data (../shared/data) not available")
    return path
