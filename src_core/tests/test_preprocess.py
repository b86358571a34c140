"""One preprocessing path: normalisation, anti-aliased resizing and affine conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepreg_core import zoo
from deepreg_core.image import Image
from deepreg_core.inference import register
from deepreg_core.io import read_image, write_image
from deepreg_core.preprocess import (
    network_input,
    normalize_intensity,
    normalized_to_voxel_affine,
    resize_image,
    resize_labels,
    voxel_to_normalized_affine,
)
from deepreg_core.training.config import DataConfig
from deepreg_core.training.data import make_dataset


def _smooth_image(shape, seed):
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 1, 6, 7)).astype(np.float32))
    image = torch.nn.functional.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)
    return (200.0 * image[0, 0] + 50.0).numpy() + rng.normal(0, 2.0, shape).astype(np.float32)


def test_a_training_sample_and_an_inference_input_of_one_image_are_identical(tmp_path):
    model = zoo.load_model("deformable-2d")
    shape = tuple(model.config.data.shape)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, seed in (("a", 0), ("b", 1)):  # larger than the network's grid: down-sampled
        write_image(Image.from_array(_smooth_image((211, 175), seed)), folder / f"{name}.tif")
    data = make_dataset(DataConfig(source="folder", folder=str(folder), shape=list(shape),
                                   validation_fraction=0.0, validation_count=0), seed=0)
    training = {float(b.fixed.sum()): b.fixed for b in data.train_images}

    seen = []
    model.network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    image = read_image(folder / "a.tif")
    register(image, image, model=model, preset="fast", qa=False)
    (fed,) = seen
    sample = min(training.values(), key=lambda t: float((t - fed).abs().max()))
    assert torch.equal(fed, sample)  # bit for bit: the same function on both paths


def test_normalize_intensity_numpy_and_torch_agree_and_handle_degenerate_images():
    data = np.linspace(-3.0, 5.0, 1000, dtype=np.float32).reshape(10, 100)
    out = normalize_intensity(data)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    torch.testing.assert_close(normalize_intensity(torch.from_numpy(data)), torch.from_numpy(out))
    assert not normalize_intensity(np.full((4, 4), 3.0)).any()  # constant -> zeros
    # a mostly constant image uses min..max instead of the equal percentiles
    spike = np.zeros((20, 20), np.float32)
    spike[0, 0] = 7.0
    assert normalize_intensity(spike).max() == 1.0
    # tiny finite values (float32 denormals) normalise like any other image, never to NaN
    tiny = data * np.float32(1e-40)
    small = normalize_intensity(tiny)
    assert np.isfinite(small).all()
    np.testing.assert_allclose(small, out, atol=0.02)


def test_resize_image_anti_aliases_when_down_sampling():
    # a one-voxel checkerboard has mean 0.5; plain interpolation to an odd grid aliases it
    checker = torch.from_numpy((np.indices((64, 64)).sum(0) % 2).astype(np.float32))[None, None]
    small = resize_image(checker, (21, 21))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # edges replicate one parity
    assert float((small[inner] - 0.5).abs().max()) < 0.1
    aliased = torch.nn.functional.interpolate(checker, size=(21, 21), mode="bilinear",
                                              align_corners=True)
    assert float((aliased[inner] - 0.5).abs().max()) > 0.4
    assert network_input(checker * 10.0, (21, 21)).shape == (1, 1, 21, 21)


def test_resize_labels_keeps_label_values():
    labels = torch.randint(0, 5, (1, 1, 9, 11))
    out = resize_labels(labels, (18, 22))
    assert out.dtype == torch.long and set(out.unique().tolist()) <= set(labels.unique().tolist())
    assert torch.equal(resize_labels(out, (18, 22)), out)


@pytest.mark.parametrize("shape", [(9, 13), (7, 10, 12)])
def test_affine_conversions_are_inverse(shape):
    ndim = len(shape)
    generator = torch.Generator().manual_seed(3)
    theta = torch.eye(ndim + 1)[None] + 0.1 * torch.randn(1, ndim + 1, ndim + 1,
                                                          generator=generator)
    theta[:, ndim] = torch.eye(ndim + 1)[ndim]
    voxel = normalized_to_voxel_affine(theta, shape)
    torch.testing.assert_close(voxel_to_normalized_affine(voxel, shape), theta)
    # normalised coordinates span 2 over n - 1 voxels: a shift of 0.5 is (n - 1) / 4 voxels
    shift = torch.eye(ndim + 1)[None]
    shift[0, 0, ndim] = 0.5
    assert float(normalized_to_voxel_affine(shift, shape)[0, 0, ndim]) == (shape[0] - 1) / 4
