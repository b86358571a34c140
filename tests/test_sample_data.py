"""Sample data through the manifest: brain pairs with labels, in physical space."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(("key", "ndim"), [("brain_2d", 2), ("brain_3d", 3)])
def test_open_sample_gives_a_deformed_pair_with_labels(make_napari_viewer, key, ndim):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-deepreg", key)
    names = [layer.name for layer in viewer.layers]
    assert names == ["fixed", "moving", "fixed labels", "moving labels"]
    fixed, moving = viewer.layers["fixed"], viewer.layers["moving"]
    assert fixed.data.ndim == ndim and fixed.data.shape == moving.data.shape
    assert fixed.__class__.__name__ == "Image"
    assert viewer.layers["fixed labels"].__class__.__name__ == "Labels"
    np.testing.assert_allclose(fixed.scale, [2.0] * ndim)  # 2 mm voxels
    assert set(np.unique(viewer.layers["fixed labels"].data)) <= {0, 1, 2}  # bg, GM, WM
    # the pair of sample_data/ (what the CLI examples use), deformed: the labels disagree
    from deepreg_core.io import read_image
    from napari_deepreg._sample_data import SAMPLE_DIR

    on_disk = read_image(SAMPLE_DIR / f"brain{ndim}d_fixed.nii.gz")
    np.testing.assert_array_equal(fixed.data, on_disk.data)
    fixed_labels, moving_labels = (viewer.layers[n].data for n in ("fixed labels", "moving labels"))
    assert 0.02 < np.mean(fixed_labels != moving_labels) < 0.5
    # the Register widget picks the pair by name
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    assert widget.fixed_combo.value == fixed and widget.moving_combo.value == moving


def test_generated_pair_holds_its_truth(tmp_path):
    """Without sample_data/ (an installed wheel) a pair is generated with its ground truth."""
    import torch

    from deepreg_core.spatial import warp
    from napari_deepreg._sample_data import brain_pair

    fixed, moving, _, _ = brain_pair(2, folder=tmp_path)
    truth = moving[1]["metadata"]["deepreg_true_displacement"]
    assert truth.shape == (2, *fixed[0].shape) and np.abs(truth).max() > 1.0

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    realigned = warp(torch.from_numpy(moving[0])[None, None], torch.from_numpy(truth)[None])
    assert ncc(realigned[0, 0].numpy(), fixed[0]) > ncc(moving[0], fixed[0]) + 0.02


def test_without_nilearn_the_pair_is_synthetic(monkeypatch, tmp_path):
    import sys

    from napari_deepreg._sample_data import SYNTH_SHAPE, brain_pair

    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn now raises ImportError
    layers = brain_pair(2, folder=tmp_path)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["fixed", "moving", "fixed labels",
                                                           "moving labels"]
    fixed, moving = layers[0][0], layers[1][0]
    assert fixed.shape == SYNTH_SHAPE[2] and not np.allclose(fixed, moving)
    assert "synthetic" in layers[0][1]["metadata"]["deepreg_meta"]["source"]
