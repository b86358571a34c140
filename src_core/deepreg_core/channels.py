"""Register multi-channel images on one channel (or their mean); warp every channel alike.

A microscope image often holds several channels of one field of view (a nuclear stain, a
membrane marker, ...): one channel carries the structure that registers well, the others must
follow it. :func:`register_channels_iter` registers the chosen channel of the moving image to the
same channel of the fixed one (or to a single-channel fixed image) with
:func:`deepreg_core.inference.register_iter`, then applies that one transform to every moving
channel (:func:`deepreg_core.inference.apply_transform`). ``channel="mean"`` registers the mean
of the channels, each normalised to [0, 1] first so that no channel dominates by its range.

Example
-------
>>> from deepreg_core.channels import register_channels
>>> out = register_channels(fixed_cyx, moving_cyx, channel_axis=0, channel=1,
...                         model="affine")  # doctest: +SKIP
>>> out.warped_channels.shape  # doctest: +SKIP
(2, 256, 256)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from deepreg_core.events import Event, Finished, Stopped
from deepreg_core.image import Image
from deepreg_core.inference import RegistrationResult
from deepreg_core.stacks import as_frames

__all__ = ["ChannelsResult", "register_channels", "register_channels_iter"]


@dataclass(frozen=True, repr=False)
class ChannelsResult:
    """The registration of the chosen channel and every moving channel warped by it.

    Attributes
    ----------
    registration : RegistrationResult
        The registration of the chosen channel (or mean), on the fixed grid.
    warped_channels : ndarray, shape (C, *fixed.shape), float32
        Every moving channel resampled onto the fixed grid and warped, channel first.
    channel : int or "mean"
        What was registered.
    """

    registration: RegistrationResult
    warped_channels: np.ndarray
    channel: int | str

    def __repr__(self) -> str:
        return (f"ChannelsResult({len(self.warped_channels)} channels of "
                f"{self.registration.fixed.shape}, registered on channel {self.channel!r})")


def _select(channels: list[Image], channel: int | str, axis: int | None, role: str) -> Image:
    """The channel to register (or the mean of the normalised channels)."""
    from deepreg_core.preprocess import normalize_intensity

    if channel == "mean":
        return channels[0].with_data(
            np.mean([normalize_intensity(c.data) for c in channels], axis=0).astype(np.float32))
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise TypeError(f"channel: expected a channel index or 'mean', got {channel!r}.")
    if not 0 <= int(channel) < len(channels):
        raise ValueError(
            f"channel: expected an index in [0, {len(channels) - 1}] ({role} has "
            f"{len(channels)} channels along channel_axis {axis}), got {channel}."
        )
    return channels[int(channel)]


def register_channels_iter(
    fixed: Image | Sequence[Image] | np.ndarray,
    moving: Sequence[Image] | Image | np.ndarray,
    *,
    channel: int | str = 0,
    channel_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    **options,
) -> Iterator[Event]:
    """Register on one channel, warp all channels; yields events, ends with ``Finished``.

    Parameters
    ----------
    fixed : Image, list of Image or ndarray
        Either a single-channel image of the moving channels' dimensionality, or a
        multi-channel image laid out like ``moving`` (same ``channel_axis``).
    moving : list of Image, Image or ndarray
        The channels: a list, a 3D :class:`Image` holding a 2D multi-channel image, or a 3D/4D
        array with the channels at ``channel_axis``.
    channel : int or "mean"
        The channel registered (in both images), or the mean of the normalised channels.
    channel_axis : int
        Where the channels lie in an Image or array input.
    spacing : sequence of float, optional
        Voxel size of one channel for array inputs (default 1 per voxel).
    **options
        Passed to :func:`deepreg_core.inference.register_iter` (``model``, ``preset``,
        ``refine_steps``, ``device``, ``stop``, ...).

    Yields
    ------
    The registration's events, then ``Finished(ChannelsResult)`` (or its ``Stopped``).

    Raises
    ------
    ValueError, TypeError
        Before any work: a channel index out of range, a bad ``channel_axis``, channels of
        different shapes, or options the registration refuses.
    """
    from deepreg_core.inference import apply_transform, register_iter

    moving_channels = as_frames(moving, channel_axis, spacing=spacing, name="channel_axis")
    ndim = moving_channels[0].ndim
    if isinstance(fixed, np.ndarray) and fixed.ndim == ndim:
        fixed = Image.from_array(fixed, spacing=spacing)
    if isinstance(fixed, Image) and fixed.ndim == ndim:
        fixed_channel = fixed
    else:
        fixed_channels = as_frames(fixed, channel_axis, spacing=spacing, name="channel_axis")
        fixed_channel = _select(fixed_channels, channel, channel_axis, "fixed")
    moving_channel = _select(moving_channels, channel, channel_axis, "moving")
    result = None
    for event in register_iter(fixed_channel, moving_channel, **options):
        if isinstance(event, Finished):
            result = event.result
        else:
            yield event
        if isinstance(event, Stopped):
            return
    if result is None:  # pragma: no cover - register_iter ends with Finished or Stopped
        return
    warped = np.stack([apply_transform(result, c).data for c in moving_channels])
    yield Finished(result=ChannelsResult(result, warped.astype(np.float32, copy=False), channel))


def register_channels(fixed, moving, **kwargs) -> ChannelsResult:
    """Run :func:`register_channels_iter` and return its :class:`ChannelsResult`.

    Takes the same arguments.

    Raises
    ------
    RuntimeError
        The registration was stopped (``stop=token``) before it finished.
    """
    from deepreg_core.events import drain

    last = drain(register_channels_iter(fixed, moving, **kwargs))
    if isinstance(last, Finished):
        return last.result
    raise RuntimeError("registration was stopped before it finished")
