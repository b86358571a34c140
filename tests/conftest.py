"""Shared fixtures for the napari plugin tests.

The napari canvas needs OpenGL, which Qt's offscreen platform does not give. Without a display
these tests start their own Xvfb server when one is installed (``apt-get install xvfb``; the
same as running them under ``xvfb-run -a``), else fall back to the offscreen platform and skip
the tests that need a viewer.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest


def _start_xvfb() -> bool:
    """Start a private Xvfb server and point DISPLAY at it; stop it at exit."""
    executable = shutil.which("Xvfb")
    if executable is None:
        return False
    for number in range(99, 140):
        if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
            continue
        server = subprocess.Popen(
            [executable, f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if os.path.exists(f"/tmp/.X11-unix/X{number}") or server.poll() is not None:
                break
            time.sleep(0.05)
        if server.poll() is None:

            def stop(server: subprocess.Popen = server) -> None:
                server.terminate()
                server.wait(timeout=10)

            atexit.register(stop)
            os.environ["DISPLAY"] = f":{number}"
            return True
    return False


HAS_DISPLAY = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or _start_xvfb()
if not HAS_DISPLAY:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the plugin sets napari reader preferences when activated: never in the user's settings file
os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="napari-deepreg-tests-"),
                                           "settings.yaml")


def pytest_collection_modifyitems(config, items):
    if HAS_DISPLAY:
        return
    skip = pytest.mark.skip(reason="the napari canvas needs a display: install xvfb")
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages passed to ``napari.utils.notifications.show_error`` during the test."""
    from napari.utils import notifications

    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda message: messages.append(str(message)))
    return messages


@pytest.fixture
def tiny_model_2d():
    """An untrained (near-identity) 2D deformable network: real compute, seconds on a CPU."""
    import torch

    from deepreg_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(kind="deformable", ndim=2, features=[4, 8]))


def _blob_pair(shape=(40, 44), shift=(2.0, -3.0)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 2D blob image and the same blob shifted by ``shift`` voxels (float32)."""
    y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    centre = np.array(shape, dtype=np.float32) / 2

    def blobs(cy, cx):
        return (np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 30.0)
                + 0.6 * np.exp(-((y - cy - 8) ** 2 + (x - cx + 9) ** 2) / 12.0))

    fixed = blobs(*centre)
    moving = blobs(centre[0] + shift[0], centre[1] + shift[1])
    return fixed.astype(np.float32), moving.astype(np.float32)


@pytest.fixture
def blob_pair():
    """``blob_pair(shape, shift)``: a smooth 2D image and its copy shifted by ``shift`` voxels."""
    return _blob_pair


@pytest.fixture
def wait_for_worker(qtbot):
    """``wait_for_worker(widget)``: wait until the widget's worker finished and was handled."""

    def wait(widget, timeout: int = 60_000) -> None:
        qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)

    return wait
