"""Time series and channels against known truth: a drifting series, a 2-channel image."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from deepreg_core import spatial
from deepreg_core.channels import register_channels
from deepreg_core.events import Finished, Metrics, Started, Stopped, StopToken
from deepreg_core.image import Image
from deepreg_core.series import register_series, register_series_iter
from deepreg_core.stacks import as_frames

SIZE, PAD = 48, 8
# content drift per frame (voxels, array order): frame t is frame 0 moved by +SHIFTS[t]
SHIFTS = np.array([[0.0, 0.0], [0.6, -0.4], [1.3, -0.7], [1.9, -1.2]])
AFFINE = dict(model="affine", preset="auto", device="cpu")


def _smooth(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((SIZE + 2 * PAD,) * 2)
    image = gaussian_filter(noise, 3.0)
    return ((image - image.min()) / np.ptp(image)).astype(np.float32)


def _moved(image: np.ndarray, shift) -> np.ndarray:
    """``image`` with its content moved by ``+shift`` voxels (a sub-voxel warp), cropped."""
    u = torch.tensor(-np.asarray(shift), dtype=torch.float32).view(1, 2, 1, 1)
    u = u.expand(1, 2, *image.shape).contiguous()
    out = spatial.warp(torch.from_numpy(image)[None, None], u, padding="border")[0, 0].numpy()
    return out[PAD:-PAD, PAD:-PAD]


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    base = _smooth(0)
    return np.stack([_moved(base, s) for s in SHIFTS], axis=2)  # (H, W, T): time last


def _recovered(result) -> np.ndarray:
    """The mean displacement per frame, voxels ``(T, 2)``."""
    return result.displacements.reshape(len(SHIFTS), 2, -1).mean(axis=2)


@pytest.mark.parametrize("reference", ["first", "previous", "mean", 2])
def test_known_drift_is_recovered_to_a_fraction_of_a_voxel(series, reference):
    result = register_series(series, time_axis=2, spacing=(0.5, 0.5), reference=reference,
                             **AFFINE)
    assert result.complete and result.frames_done == 4 and result.corrected.shape == (4, 48, 48)
    found = _recovered(result)
    if reference in ("mean", 2):  # aligned to the mean position or to frame 2: compare motion
        anchor = 0 if reference == "mean" else 2
        error = np.abs((found - found[anchor]) - (SHIFTS - SHIFTS[anchor])).max()
    else:
        error = np.abs(found - SHIFTS).max()
        assert np.all(found[0] == 0.0)  # frame 0 is the reference: the identity
    assert error < 0.15, (reference, found)
    # the drift in mm (spacing 0.5) and its vector
    assert np.allclose(result.drift_vector_mm, found * 0.5, atol=1e-4)
    assert result.drift_mm.shape == (4,) and len(result.metrics) == 4
    if reference == "first":  # inside, the corrected frames match the reference
        inner = (slice(4, -4),) * 2
        raw = np.abs(series[..., 3] - series[..., 0])[inner].mean()
        fixed = np.abs(result.corrected[3] - result.corrected[0])[inner].mean()
        assert fixed < 0.2 * raw


def test_cancel_keeps_the_frames_done(series):
    token = StopToken()
    events = []
    for event in register_series_iter(series, time_axis=2, model="affine", preset="fast",
                                      device="cpu", stop=token):
        events.append(event)
        if isinstance(event, Metrics) and event.step == 2:
            token.stop()
    assert isinstance(events[0], Started) and events[0].total_steps == 4
    last = events[-1]
    assert isinstance(last, Stopped) and last.step == 2
    result = last.result
    assert result.frames_done == 2 and not result.complete and result.total_frames == 4
    assert result.corrected.shape == (2, 48, 48) and result.displacements.shape == (2, 2, 48, 48)
    assert len(result.metrics) == 2 and result.drift_mm.shape == (2,)
    assert np.array_equal(result.corrected[0], series[..., 0])  # the reference frame, untouched


def test_a_list_of_frames_gives_the_same_series(series):
    frames = [Image.from_array(series[..., t]) for t in range(2)]
    last = None
    for last in register_series_iter(frames, model="affine", preset="fast", device="cpu"):
        pass
    assert isinstance(last, Finished) and last.result.frames_done == 2


def test_two_channels_warped_identically():
    """Channel 1 moves with channel 0: registering channel 0 must bring channel 1 along."""
    shift = (1.2, -0.8)
    base0, base1 = _smooth(1), _smooth(2)
    fixed = np.stack([_moved(base0, (0, 0)), _moved(base1, (0, 0))])  # (C, H, W)
    moving = np.stack([_moved(base0, shift), _moved(base1, shift)])
    out = register_channels(fixed, moving, channel_axis=0, channel=0, **AFFINE)
    found = out.registration.displacement.reshape(2, -1).mean(axis=1)
    assert np.abs(found - shift).max() < 0.15
    assert out.warped_channels.shape == (2, 48, 48)
    # the same transform for both channels: channel 0 equals the registration's warped image
    assert np.allclose(out.warped_channels[0], out.registration.warped.data, atol=1e-5)
    inner = (slice(4, -4),) * 2
    before = np.abs(moving[1] - fixed[1])[inner].mean()
    after = np.abs(out.warped_channels[1] - fixed[1])[inner].mean()
    assert after < 0.2 * before
    # the mean of the channels registers too, to a single-channel fixed image
    mean = register_channels(Image.from_array(fixed[0]), moving, channel_axis=0,
                             channel="mean", model="affine", preset="fast", device="cpu")
    assert mean.channel == "mean" and mean.warped_channels.shape == (2, 48, 48)


# ----------------------------------------------------------------------------- bad input


def test_a_time_axis_of_length_one_is_refused():
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        register_series(np.zeros((1, 16, 16), np.float32), time_axis=0, model="affine")


def test_frames_of_different_shapes_are_refused():
    frames = [Image.from_array(np.zeros((16, 16))), Image.from_array(np.zeros((16, 17)))]
    with pytest.raises(ValueError, match=r"frame 1: expected .* shape of frame 0 \(16, 16\), "
                                         r"got \(16, 17\)"):
        register_series(frames, model="affine")


@pytest.mark.parametrize("kwargs, message", [
    (dict(time_axis=None), "expected the index of the extra axis"),
    (dict(time_axis=3), r"expected an axis in \[-3, 2\]"),
    (dict(time_axis=0, reference="last"), "reference: expected one of"),
    (dict(time_axis=0, reference=5), r"reference: expected a frame index in \[0, 2\]"),
    (dict(time_axis=0, preset="slow"), "preset: expected one of"),
])
def test_bad_series_options_are_refused_before_any_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(register_series_iter(np.zeros((3, 16, 16), np.float32), model="affine", **kwargs))


def test_a_channel_out_of_range_is_refused():
    stack = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"channel: expected an index in \[0, 1\] \(moving has "
                                         r"2 channels along channel_axis 0\), got 2"):
        register_channels(stack[0], stack, channel_axis=0, channel=2, model="affine")
    with pytest.raises(TypeError, match="channel: expected a channel index or 'mean'"):
        register_channels(stack, stack, channel_axis=0, channel="max", model="affine")


def test_an_image_with_a_time_axis_splits_with_its_geometry():
    image = Image.from_array(np.zeros((16, 16, 5)), spacing=(0.5, 0.25, 2.0))
    frames = as_frames(image, 2)
    assert len(frames) == 5 and frames[0].spacing == (0.5, 0.25)


# ----------------------------------------------------------------------------- the CLI


def test_cli_series_writes_the_corrected_stack_metrics_and_drift(series, tmp_path):
    import csv

    import nibabel as nib
    import tifffile

    from deepreg_core.cli import main

    tifffile.imwrite(tmp_path / "movie.tif", np.moveaxis(series, 2, 0), imagej=True,
                     metadata={"axes": "TYX"})
    nib.save(nib.Nifti1Image(series[:, :, None, :], np.diag([0.5, 0.5, 1.0, 1.0])),
             tmp_path / "movie.nii.gz")
    options = ["--model", "affine", "--preset", "fast", "--device", "cpu", "--no-qa"]
    assert main(["series", str(tmp_path / "movie.tif"), "-o", str(tmp_path / "a"),
                 "--time-axis", "0", *options]) == 0
    assert tifffile.imread(tmp_path / "a" / "corrected.tif").shape == (4, 48, 48)
    assert main(["series", str(tmp_path / "movie.nii.gz"), "-o", str(tmp_path / "b"),
                 "--time-axis", "2", "--reference", "previous", *options]) == 0
    written = nib.load(tmp_path / "b" / "corrected.nii.gz")
    assert written.shape == (48, 48, 1, 4) and np.allclose(written.affine[0, 0], 0.5)
    rows = list(csv.DictReader(open(tmp_path / "b" / "drift.csv")))
    assert [row["frame"] for row in rows] == ["0", "1", "2", "3"] and "drift_axis1_mm" in rows[0]
    assert (tmp_path / "b" / "metrics.csv").is_file() and (tmp_path / "b" / "metrics.json").is_file()
    import json

    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["notes"] == []


def test_cli_channels_and_bad_input_end_with_one_line(series, tmp_path, capsys):
    import tifffile

    from deepreg_core.cli import main

    tifffile.imwrite(tmp_path / "moving.tif", np.moveaxis(series[..., :2], 2, 0), imagej=True,
                     metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "fixed.tif", series[..., 0])
    options = ["--model", "affine", "--preset", "fast", "--device", "cpu", "--no-qa"]
    assert main(["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"), "-o",
                 str(tmp_path / "c"), "--channel-axis", "0", "--channel", "mean", *options]) == 0
    assert tifffile.imread(tmp_path / "c" / "warped_channels.tif").shape == (2, 48, 48)
    capsys.readouterr()
    for argv, message in [
        (["series", str(tmp_path / "moving.tif"), "--time-axis", "3"], "--time-axis: expected"),
        (["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"),
          "--channel-axis", "0", "--channel", "2"], r"channel: expected an index in \[0, 1\]"),
        (["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"),
          "--channel", "1"], "--channel needs --channel-axis"),
    ]:
        assert main([*argv, "-o", str(tmp_path / "bad"), *options]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deepreg-core: error:")
        assert re.search(message, err[0]), err[0]
        assert not (tmp_path / "bad").exists()


def test_a_rigid_series_recovers_the_drift(series):
    """model="rigid" (no network: rigid refinement in mm) corrects a translating series."""
    result = register_series(series, time_axis=2, spacing=(0.5, 0.5), reference="first",
                             model="rigid", preset="auto", device="cpu")
    assert np.abs(_recovered(result) - SHIFTS).max() < 0.15


def test_fallbacks_are_kept_per_frame_and_written(series, tmp_path):
    """A network that shifts every frame by 7 voxels (worse than doing nothing): `fast` keeps
    each frame where it was and the series says so per frame; ``fallback=False`` keeps the
    shift."""
    from deepreg_core.models import ModelConfig, build_model

    net = build_model(ModelConfig(kind="deformable", ndim=2, features=[8, 16],
                                  diffeomorphic=False))
    with torch.no_grad():
        net.head.conv.weight.zero_()
        net.head.conv.bias.zero_()
        net.head.conv.bias[0] = 7.0
    frames = [Image.from_array(series[..., t]) for t in range(3)]
    kept = register_series(frames, model=net, preset="fast", device="cpu")
    assert [note.split(":")[0] for note in kept.notes] == ["frame 1", "frame 2"]
    assert all("kept the identity" in note for note in kept.notes)
    np.testing.assert_allclose(kept.drift_mm, 0.0)
    raw = register_series(frames, model=net, preset="fast", device="cpu", fallback=False)
    assert raw.notes == () and raw.warnings
    np.testing.assert_allclose(raw.drift_mm[1:], 7.0, rtol=1e-3)
