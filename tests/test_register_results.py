"""Using a result with a known transform: apply to layers, export, grid, screenshot."""

from __future__ import annotations

import os

import numpy as np
import pytest

SHIFT = np.array([1.0, -2.0])  # phi(x) = x + SHIFT, in fixed voxels
SPACING = (2.0, 1.5)
ORIGIN = (10.0, -4.0)


def _known_result(fixed, warped, shift, affine=None):
    """A RegistrationResult whose transform is a constant shift (a dataclass, no compute)."""
    from deepreg_core.inference import RegistrationResult

    ndim = fixed.ndim
    displacement = np.broadcast_to(np.asarray(shift, np.float32).reshape((-1,) + (1,) * ndim),
                                   (ndim, *fixed.shape)).copy()
    return RegistrationResult(
        fixed=fixed, warped=fixed.with_data(warped), displacement=displacement, affine=affine,
        jacobian=np.ones(fixed.shape, np.float32), folding_fraction=0.0,
        saliency=np.zeros(fixed.shape, np.float32),
        metrics={"ncc_before": 0.5, "ncc_after": 0.9, "folding_percent": 0.0, "seconds": 1.0},
        model_name="known shift", device="cpu", seed=0,
    )


@pytest.fixture
def shown(make_napari_viewer, blob_pair):
    from napari_deepreg._layers import layer_to_image

    viewer = make_napari_viewer(show=True)
    fixed, moving = blob_pair()
    fixed_layer = viewer.add_image(fixed, name="fixed", scale=SPACING, translate=ORIGIN)
    moving_layer = viewer.add_image(moving, name="moving", scale=SPACING, translate=ORIGIN)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    image = layer_to_image(fixed_layer, "fixed")
    translation = np.eye(3)
    translation[:2, 2] = SHIFT
    widget.show_result(_known_result(image, moving, SHIFT, translation), viewer.layers["fixed"],
                       viewer.layers["moving"])
    return viewer, widget, fixed_layer, moving_layer


def test_apply_to_labels_image_and_points(shown):
    viewer, widget, _, moving_layer = shown
    labels = np.zeros(moving_layer.data.shape, np.int32)
    labels[10:20, 12:25] = 3
    labels[25:30, 5:9] = 7
    labels_layer = viewer.add_labels(labels, name="seg", scale=SPACING, translate=ORIGIN)
    out = widget.apply_to_layer(labels_layer)
    assert out.name == "seg warped" and np.issubdtype(out.data.dtype, np.integer)
    # warped(x) = labels(x + shift) exactly, for an integer shift (nearest neighbour)
    np.testing.assert_array_equal(out.data[:-1, 2:], labels[1:, :-2])
    np.testing.assert_allclose(out.scale, SPACING)
    image_out = widget.apply_to_layer(moving_layer)
    np.testing.assert_allclose(image_out.data[:-1, 2:], moving_layer.data[1:, :-2], atol=1e-5)
    points = viewer.add_points([[5.0, 6.0], [20.0, 30.0]], name="pts", scale=SPACING,
                               translate=ORIGIN)
    moved = widget.apply_to_layer(points)
    # a moving point q lands at phi^-1(q) = q - shift on the fixed grid
    np.testing.assert_allclose(moved.data, np.array([[5.0, 6.0], [20.0, 30.0]]) - SHIFT,
                               atol=0.05)
    count = len(viewer.layers)
    widget.apply_to_layer(labels_layer)
    assert len(viewer.layers) == count  # applying again updates "seg warped"
    with pytest.raises(TypeError, match="Image, Labels or Points"):
        widget.apply_to_layer(viewer.add_shapes([[0, 0], [1, 1], [0, 1]], shape_type="polygon"))


def test_export_warped_and_transform(shown, tmp_path):
    from deepreg_core import interop
    from deepreg_core.io import read_image

    _, widget, _, _ = shown
    result = widget.result
    path = widget.export_warped(tmp_path / "warped.nii.gz")
    back = read_image(path)
    np.testing.assert_allclose(back.data, result.warped.data, atol=1e-6)
    np.testing.assert_allclose(back.affine, result.fixed.affine, atol=1e-5)
    written = widget.export_transform(tmp_path / "moving_warp.nii.gz")
    assert [p.name for p in written] == ["moving_warp.nii.gz", "moving_warp_affine.tfm"]
    u, grid = interop.load_displacement_nifti(written[0])
    np.testing.assert_allclose(u, result.displacement, atol=1e-4)
    np.testing.assert_allclose(grid.spacing, SPACING)
    world = interop.load_affine_itk(written[1])
    np.testing.assert_allclose(world, interop.affine_to_world(result.affine, result.fixed,
                                                              result.fixed), atol=1e-6)


def test_export_buttons_report_bad_paths(shown, errors, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    _, widget, _, _ = shown
    assert widget.export_transform_button.enabled
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("/tmp/x.txt", ""))
    widget.export_transform_button.native.click()
    assert ".nii or .nii.gz" in errors[-1]


def test_screenshot_shows_green_fixed_and_magenta_warped(shown):
    viewer, _, _, _ = shown
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    os.makedirs("/tmp/napari_deepreg_shots", exist_ok=True)
    from skimage.io import imsave

    imsave("/tmp/napari_deepreg_shots/register_result.png", shot.astype(np.uint8),
           check_contrast=False)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    assert shot.std() > 10  # not blank
    green = (g > 100) & (r < 0.6 * g) & (b < 0.6 * g)
    magenta = (r > 100) & (b > 100) & (g < 0.6 * np.minimum(r, b))
    assert green.mean() > 0.001 and magenta.mean() > 0.001, (green.mean(), magenta.mean())


def test_3d_grid_follows_the_display(make_napari_viewer):
    from deepreg_core.image import Image

    viewer = make_napari_viewer()
    volume = np.random.default_rng(0).random((12, 13, 14)).astype(np.float32)
    fixed_layer = viewer.add_image(volume, name="f3")
    moving_layer = viewer.add_image(volume, name="m3")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    image = Image.from_array(volume)
    widget.show_result(_known_result(image, volume, (0.0, 0.0, 0.0)), fixed_layer, moving_layer)
    slices = viewer.layers["m3 grid"].data.copy()
    names = [layer.name for layer in viewer.layers]
    assert names.index("m3 grid") < names.index("m3 warped")  # below the overlay
    viewer.dims.ndisplay = 3  # a 3D view: thin polylines, not a voxel cross-hatch
    lattice = viewer.layers["m3 grid"]
    assert lattice.__class__.__name__ == "Shapes" and set(lattice.shape_type) == {"path"}
    assert len(lattice.data) > 10 and all(path.shape[1] == 3 for path in lattice.data)
    names = [layer.name for layer in viewer.layers]
    assert names.index("m3 grid") < names.index("m3 warped")
    viewer.dims.ndisplay = 2
    grid = viewer.layers["m3 grid"]
    assert grid.__class__.__name__ == "Image"
    np.testing.assert_allclose(grid.data, slices)


def test_result_pictures_reuse_the_jacobian_register_returned(blob_pair):
    """render_outputs shows the result's own Jacobian and folds (computed once, in the core)."""
    from deepreg_core.api import Image, register
    from napari_deepreg._results import render_outputs

    fixed, moving = blob_pair()
    result = register(Image.from_array(fixed), Image.from_array(moving), preset="fast")
    outputs = render_outputs(result)
    assert outputs["jacobian"] is result.jacobian and outputs["folds"] is result.folds
    assert abs(float(outputs["jacobian"].mean()) - 1.0) < 0.2
