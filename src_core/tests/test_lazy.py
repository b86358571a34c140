"""Images larger than memory: block-wise warping equals the in-memory warp; memory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

zarr = pytest.importorskip("zarr")

from model_folders import make_model_folder  # noqa: E402

from deepreg_core import lazy, spatial  # noqa: E402
from deepreg_core.image import Image  # noqa: E402
from deepreg_core.inference import register  # noqa: E402
from deepreg_core.io import read_image, write_image  # noqa: E402


@pytest.mark.parametrize("shape, chunks", [((30, 34, 22), 16), ((45, 38), 16)])
def test_blockwise_warp_equals_the_in_memory_warp(tmp_path, shape, chunks):
    rng = np.random.default_rng(0)
    moving = rng.random(shape).astype(np.float32)
    coarse = torch.from_numpy(rng.normal(0, 2.5, (1, len(shape), *[4] * len(shape))))
    u = spatial.resize_displacement(coarse.float(), shape)
    expected = spatial.warp(torch.from_numpy(moving)[None, None], u)[0, 0].numpy()
    image = Image.from_array(moving, spacing=(1.5,) * len(shape))
    target = lazy.create_zarr(tmp_path / "w.zarr", shape, chunks)
    lazy.warp_blockwise(lazy.from_image(image, chunks), shape, image.affine, target,
                        displacement=u[0].numpy(), chunks=chunks)
    np.testing.assert_allclose(target[:], expected, atol=2e-5)


def test_register_large_equals_register_when_it_fits(tmp_path):
    model = make_model_folder(tmp_path / "m", "affine-3d", kind="affine", ndim=3)
    rng = np.random.default_rng(1)
    data = rng.random((26, 30, 20)).astype(np.float32)
    affine = np.diag([1.2, 1.0, 0.8, 1.0])
    affine[:3, 3] = (-5, 3, 7)
    write_image(Image(data, affine), tmp_path / "f.nii")
    write_image(Image(np.roll(data, 2, 0), affine), tmp_path / "m.nii")
    options = {"model": str(model), "refine_steps": 6, "qa": False}
    result = lazy.register_large(tmp_path / "f.nii", tmp_path / "m.nii", tmp_path / "out",
                                 max_voxels=10**6, chunks=16, **options)
    assert result.factor == pytest.approx(1.0) and result.level_shape == (26, 30, 20)
    expected = register(read_image(tmp_path / "f.nii"), read_image(tmp_path / "m.nii"), **options)
    nifti = read_image(tmp_path / "out" / "warped.nii.gz")
    np.testing.assert_allclose(nifti.data, expected.warped.data, atol=2e-5)
    np.testing.assert_allclose(nifti.affine, affine, rtol=1e-6)
    ome = zarr.open_group(str(tmp_path / "out" / "warped.ome.zarr"), mode="r")
    meta = ome.attrs["multiscales"][0]
    assert meta["version"] == "0.4" and [d["path"] for d in meta["datasets"]] == ["0", "1", "2"]
    scale, translation = meta["datasets"][0]["coordinateTransformations"]
    assert scale["type"] == "scale" and translation["type"] == "translation"
    np.testing.assert_allclose(scale["scale"], [1.2, 1.0, 0.8], rtol=1e-6)
    np.testing.assert_allclose(translation["translation"], [-5.0, 3.0, 7.0], rtol=1e-6)
    reopened = lazy.open_lazy(tmp_path / "out" / "warped.ome.zarr")
    np.testing.assert_allclose(np.asarray(reopened.data), expected.warped.data, atol=2e-5)
    np.testing.assert_allclose(reopened.affine, affine, rtol=1e-6, atol=1e-6)
    assert reopened.levels[1].shape == (13, 15, 10)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["factor"] == 1.0


def test_a_level_that_fits_is_averaged_about_its_centres(tmp_path):
    ramp = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 16, 16), np.float32)
    image = lazy.from_image(Image.from_array(ramp, spacing=(1.0, 1.0, 1.0)), chunks=8)
    level, factor = image.level_image(max_voxels=16 * 8 * 8)
    assert factor == pytest.approx(2.0) and level.shape == (16, 8, 8)
    centres = level.index_to_world(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))[:, 0]
    np.testing.assert_allclose(level.data[[0, 3], 0, 0], centres)  # a ramp's mean = its centre


def test_a_rotated_image_keeps_its_exact_affine_in_ome_zarr(tmp_path):
    angle = np.deg2rad(20)
    affine = np.eye(3)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    group = tmp_path / "r.ome.zarr"
    lazy.create_zarr(group / "0", (16, 16), 8)[:] = np.ones((16, 16), np.float32)
    lazy.write_ome_zarr_metadata(group, affine, levels=2, chunks=8)
    np.testing.assert_allclose(lazy.open_lazy(group).affine, affine)


def test_bad_inputs_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image"):
        lazy.open_lazy(tmp_path / "missing.nii")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="expected a .nii"):
        lazy.open_lazy(tmp_path / "x.txt")
    image = lazy.from_image(Image.from_array(np.zeros((8, 8), np.float32)))
    with pytest.raises(ValueError, match="expected shape"):
        lazy.warp_blockwise(image, (8, 8), np.eye(3), lazy.create_zarr(tmp_path / "t", (4, 4)))
    with pytest.raises(ValueError, match="max_voxels"):
        image.level_image(2)


CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import zarr
    from deepreg_core import lazy
    zarr.config.set({"async.concurrency": 2, "threading.max_workers": 1})

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                    if l.startswith(key))

    root, model, budget = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    options = dict(model=model, refine_steps=4, qa=False, scheduler="synchronous", chunks=32,
                   nifti=False, pyramid_levels=2)
    # warm up (imports, thread pools) on a small pair, then limit the address space
    lazy.register_large(root / "small_f.zarr", root / "small_m.zarr", root / "warm",
                        max_voxels=20**3, **options)
    base = status("VmSize:")
    resource.setrlimit(resource.RLIMIT_AS, (base + budget, base + budget))
    result = lazy.register_large(root / "big_f.zarr", root / "big_m.zarr", root / "out",
                                 max_voxels=40**3, **options)
    print(json.dumps({"base": base, "limit": base + budget, "peak": status("VmPeak:"),
                      "level": list(result.level_shape)}))
""")


def _volume(path, shape, shift):
    z = zarr.open_array(str(path), mode="w", shape=shape, chunks=(32,) * 3, dtype="float32",
                        zarr_format=2)
    axes = [np.linspace(0, 6, n, dtype=np.float32) for n in shape]
    for i in range(0, shape[0], 32):
        z[i:i + 32] = (np.sin(axes[0][i:i + 32, None, None] + shift)
                       * np.cos(axes[1][None, :, None]) * np.sin(axes[2][None, None, :] + 1))
    z.attrs["deepreg:affine"] = np.eye(4).tolist()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, RLIMIT_AS")
def test_peak_memory_stays_bounded_on_a_volume_larger_than_the_limit(tmp_path):
    budget = 12 * 2**20  # address space the child may add after its warm-up
    shape = (256, 256, 128)  # 32 MiB per volume: fixed + moving + warped = 8x the budget
    model = make_model_folder(tmp_path / "m", "affine-3d", kind="affine", ndim=3)
    for name, size in (("small", (24, 24, 24)), ("big", shape)):
        _volume(tmp_path / f"{name}_f.zarr", size, 0.0)
        _volume(tmp_path / f"{name}_m.zarr", size, 0.2)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(model), str(budget)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["peak"] <= report["limit"]
    assert 4 * np.prod(shape) >= 2.5 * budget
    warped = lazy.open_lazy(tmp_path / "out" / "warped.ome.zarr")
    assert warped.shape == shape and float(warped.data[128, 128, 64].compute()) != 0.0


def test_the_large_command_registers_on_a_level_and_warps_the_full_grid(tmp_path, capsys):
    from deepreg_core.cli import main

    model = make_model_folder(tmp_path / "m", "affine-3d", kind="affine", ndim=3)
    data = np.random.default_rng(2).random((32, 36, 28)).astype(np.float32)
    write_image(Image(data, np.eye(4)), tmp_path / "f.nii.gz")
    write_image(Image(np.roll(data, 1, 0), np.eye(4)), tmp_path / "m.nii.gz")
    code = main(["large", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "-o",
                 str(tmp_path / "out"), "--max-voxels", "5000", "--chunks", "16", "--model",
                 str(model), "--refine-steps", "4"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["factor"] > 1 and np.prod(report["level_shape"]) <= 5000
    assert read_image(tmp_path / "out" / "warped.nii.gz").shape == (32, 36, 28)
    assert main(["large", str(tmp_path / "nope.nii.gz"), str(tmp_path / "m.nii.gz"), "-o",
                 str(tmp_path / "out2")]) == 2
    assert "deepreg-core: error:" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
