"""Shared fixtures for the core tests: small model folders built from real configs."""

from __future__ import annotations

import pytest
from model_folders import make_model_folder


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs a subprocess for seconds (kill/interrupt cases); still part of "
        "`make test`, deselect with -m 'not slow' for a quick loop"
    )


@pytest.fixture
def model_folder(tmp_path):
    return make_model_folder(tmp_path / "models", "tiny-deformable-2d", kind="deformable", ndim=2)
