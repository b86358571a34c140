"""Multiscale and dask-backed layers: registered on a level that fits, placed where it belongs."""

from __future__ import annotations

import numpy as np
import pytest


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


@pytest.fixture
def infos(monkeypatch) -> list[str]:
    from napari.utils import notifications

    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda message: messages.append(str(message)))
    return messages


def test_a_multiscale_layer_is_registered_on_the_finest_level_that_fits(make_napari_viewer, infos):
    from napari_deepreg._layers import layer_to_image

    viewer = make_napari_viewer()
    level0 = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    pyramid = [level0, _block_mean(level0, 2), _block_mean(level0, 4)]
    layer = viewer.add_image(pyramid, multiscale=True, scale=(2.0, 0.5), translate=(5.0, -3.0))
    image = layer_to_image(layer, "fixed", max_voxels=40 * 40)
    np.testing.assert_array_equal(image.data, pyramid[1])
    # a level-1 voxel sits at the centre of the 2 x 2 level-0 block it averages
    whole = layer_to_image(layer, "fixed")
    np.testing.assert_allclose(image.index_to_world(np.array([[3.0, 7.0]])),
                               whole.index_to_world(np.array([[6.5, 14.5]])))
    assert "pyramid level 1 of 3" in infos[-1] and "(32, 24)" in infos[-1]
    assert whole.shape == (64, 48)  # level 0 fits the default cap: no notice
    assert len(infos) == 1


def test_dask_data_over_the_cap_is_block_averaged_never_read_whole(make_napari_viewer, infos):
    import dask.array as da

    from napari_deepreg._layers import layer_to_image

    viewer = make_napari_viewer()
    values = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    layer = viewer.add_image(da.from_array(values, chunks=16))
    image = layer_to_image(layer, "moving", max_voxels=300)
    np.testing.assert_allclose(image.data, _block_mean(values, 4), rtol=1e-6)
    assert "averaged in blocks of 4" in infos[-1]
    labels = viewer.add_labels(da.from_array((values > 0.5).astype(np.int32), chunks=16))
    coarse = layer_to_image(labels, "moving labels", kind="labels", max_voxels=300)
    assert coarse.data.dtype.kind == "i" and set(np.unique(coarse.data)) <= {0, 1}
