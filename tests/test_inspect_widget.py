"""The Inspect deformation widget on fields with known Jacobians, through the manifest."""

from __future__ import annotations

import numpy as np
import pytest


def _scaling_field(shape, s):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return np.stack([(s - 1.0) * (g - (n - 1) / 2) for g, n in zip(grids, shape)])


@pytest.fixture
def inspect(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Inspect deformation")
    return viewer, widget


@pytest.mark.parametrize("shape", [(16, 18), (8, 9, 10)])
def test_uniform_scaling_gives_s_to_the_d(inspect, shape):
    viewer, widget = inspect
    s = 1.2
    viewer.add_image(_scaling_field(shape, s), name="scale field", visible=False)
    assert widget.field_combo.value == viewer.layers["scale field"]  # picked up automatically
    stats = widget.analyse()
    jacobian = viewer.layers["scale field jacobian"]
    np.testing.assert_allclose(jacobian.data, s ** len(shape), rtol=1e-5)
    assert stats.folding_fraction == 0.0
    assert viewer.layers["scale field folds"].data.sum() == 0
    low, high = jacobian.contrast_limits
    assert low + high == pytest.approx(2.0)  # the diverging colormap is centred on 1
    assert jacobian.colormap.name == "PiYG transparent at 1"
    assert "folding 0.000 %" in widget.summary_label.text()
    assert widget.histogram.counts.sum() == np.prod(shape)
    assert {"scale field grid", "scale field |u|"} <= {ly.name for ly in viewer.layers}


def test_a_fold_is_found_and_flagged(inspect, qtbot):
    viewer, widget = inspect
    u = np.zeros((2, 24, 24), np.float32)
    u[0, 10:14] = -2.5 * (np.arange(10, 14, dtype=np.float32)[:, None] - 11.5)
    viewer.add_image(np.moveaxis(u, 0, -1), name="folded", rgb=False)  # vectors last
    widget.field_combo.value = viewer.layers["folded"]
    widget.analyse_button.native.click()  # through the worker thread
    qtbot.waitUntil(lambda: widget.worker is None and widget.stats is not None, timeout=20_000)
    assert 0.0 < widget.stats.folding_fraction < 0.5
    folds = viewer.layers["folded folds"]
    assert folds.data[10:14].any() and not folds.data[:6].any()
    edges, counts = widget.histogram.edges, widget.histogram.counts
    assert counts[edges[:-1] < 0].sum() > 0  # the histogram shows negative determinants


def test_second_analysis_updates_layers_in_place(inspect):
    viewer, widget = inspect
    layer = viewer.add_image(_scaling_field((12, 12), 1.1), name="f")
    widget.analyse()
    count = len(viewer.layers)
    jacobian = viewer.layers["f jacobian"]
    layer.data = _scaling_field((12, 12), 0.9)
    widget.analyse()
    assert len(viewer.layers) == count
    assert viewer.layers["f jacobian"] is jacobian
    np.testing.assert_allclose(jacobian.data, 0.81, rtol=1e-5)


def test_itk_displacement_nifti_is_read_in_voxels(inspect, tmp_path):
    from deepreg_core import interop
    from deepreg_core.image import Image

    viewer, widget = inspect
    spacing = (2.0, 0.5, 1.5)
    grid = Image.from_array(np.zeros((8, 9, 10)), spacing=spacing, origin=(-5.0, 3.0, 1.0))
    u = _scaling_field(grid.shape, 0.8)
    path = interop.save_displacement_nifti(u, grid, tmp_path / "ants_warp.nii.gz")
    layer = widget.load_file(path)
    assert layer.name == "ants_warp field"
    assert widget.field_combo.value == layer  # (the widget sees layers through a proxy)
    held = layer.metadata["deepreg_field"]  # the layer shows |u| and holds the field
    np.testing.assert_allclose(held, u, atol=1e-4)  # LPS mm back to voxels
    assert layer.ndim == 3 and viewer.dims.ndim == 3  # no slider for the vector axis
    np.testing.assert_allclose(layer.scale, spacing)
    stats = widget.analyse()
    np.testing.assert_allclose(stats.jacobian, 0.8 ** 3, rtol=1e-4)
    np.testing.assert_allclose(viewer.layers["ants_warp field jacobian"].scale, spacing)
    magnitude = viewer.layers["ants_warp field |u|"].data  # in mm
    corner = np.linalg.norm(u[:, 0, 0, 0] * np.array(spacing))
    assert magnitude[0, 0, 0] == pytest.approx(corner, rel=1e-4)


def test_bad_inputs_give_notifications(inspect, errors, tmp_path):
    import nibabel as nib

    viewer, widget = inspect
    widget.analyse_button.native.click()
    assert errors and "no layer chosen" in errors[-1]
    image = viewer.add_image(np.zeros((2, 3, 4)), name="looks like a field")
    widget.field_combo.value = image
    image.data = np.full((2, 3, 4), np.nan)
    widget.analyse_button.native.click()
    assert "NaN" in errors[-1]
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "t1.nii")
    with pytest.raises(ValueError, match="expected an ITK displacement field"):
        widget.load_file(tmp_path / "t1.nii")
    assert widget.worker is None
