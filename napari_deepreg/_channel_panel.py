"""The Register widget's channels section: register on one channel (or the mean), warp them all.

A mixin of :class:`~napari_deepreg._register_widget.RegisterWidget` (it expects ``viewer``,
``fixed_combo`` and ``moving_combo``). A layer has a channel axis when napari's axis labels name
one (``c``, ``ch``, ``channel``: the layer's own labels, else the viewer's for the layer's axes) or
when the user designates it once in the "channel axis" picker. Such a layer is 3D ``(C, Y, X)``
or 4D ``(C, Z, Y, X)`` (the channel axis anywhere); the registration then runs through the core's
``register_channels_iter`` and the result is one layer ``"<moving> warped"`` holding every
channel, the channel axis where it was in the moving layer.

Layers split by napari's ``channel_axis`` (one layer per channel) need none of this: register one
channel and "Apply transform to layer" the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, SpinBox
from qtpy.QtWidgets import QLabel
from superqt import QCollapsible

from deepreg_core import api
from napari_deepreg import _layers

CHANNEL_LABELS = ("c", "ch", "channel", "channels")
FROM_LABELS = "from axis labels"
NO_AXIS = "none"
AXIS_CHOICES = (FROM_LABELS, NO_AXIS, "0", "1", "2", "3")


def labelled_channel_axis(viewer: Any, layer: Any) -> int | None:
    """The axis of ``layer`` that napari's axis labels call a channel axis, else None.

    The layer's own ``axis_labels`` when it has any (napari's defaults are ``"-1"``, ``"-2"``...),
    else the viewer's labels of the layer's axes (its last ``layer.ndim``) unless they come from
    another layer's own labels (napari shows those in the viewer's dims too).
    """
    def own(ly: Any) -> list[str]:
        labels = [str(label) for label in (getattr(ly, "axis_labels", ()) or ())]
        return [] if all(label.lstrip("-").isdigit() for label in labels) else labels

    labels = own(layer)
    if not labels and not any(own(other) for other in viewer.layers):
        labels = [str(label) for label in list(viewer.dims.axis_labels)[-layer.ndim:]]
    for axis, label in enumerate(labels):
        if label.lower() in CHANNEL_LABELS:
            return axis
    return None


def drop_axis(matrix: np.ndarray, axis: int) -> np.ndarray:
    """A homogeneous voxel-to-world matrix without the row and column of ``axis``."""
    keep = [i for i in range(matrix.shape[0]) if i != axis]
    return np.asarray(matrix, dtype=np.float64)[np.ix_(keep, keep)]


def insert_axis(matrix: np.ndarray, axis: int) -> np.ndarray:
    """A homogeneous matrix with a unit, untranslated axis inserted at ``axis``."""
    n = matrix.shape[0] - 1
    out = np.eye(n + 2)
    old = [i for i in range(n + 1) if i != axis]
    out[np.ix_([*old, n + 1], [*old, n + 1])] = matrix
    return out


def split_channels(layer: Any, axis: int, matrix: np.ndarray, role: str) -> list[Any]:
    """One core ``Image`` per channel of ``layer`` (copies), placed by ``matrix`` minus ``axis``.

    Raises
    ------
    ValueError
        A channel axis on a 2D layer, an axis out of range, a multiscale layer, non-finite data.
    """
    if layer.ndim not in (3, 4):
        raise ValueError(
            f"channel axis: {role} {layer.name!r} is {layer.ndim}D {tuple(layer.data.shape)}; a "
            "channel axis needs a 3D (C, Y, X) or 4D (C, Z, Y, X) layer. Set 'channel axis' to "
            "'none' for this layer."
        )
    if not 0 <= axis < layer.ndim:
        raise ValueError(f"channel axis: expected 0..{layer.ndim - 1} for {role} "
                         f"{layer.name!r} ({layer.ndim}D), got {axis}.")
    if getattr(layer, "multiscale", False) or getattr(layer, "rgb", False):
        raise ValueError(f"{role}: {layer.name!r} is multiscale or RGB; a channel axis needs a "
                         "plain image layer (split the channels into layers instead).")
    data = np.array(layer.data, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{role}: layer {layer.name!r} holds NaN or infinite values. Replace "
                         "them (e.g. np.nan_to_num) before registering.")
    spatial = drop_axis(matrix, axis)
    meta = dict(layer.metadata.get(_layers.META_KEY, {}))
    return [api.Image(np.ascontiguousarray(np.take(data, c, axis=axis)), spatial, meta)
            for c in range(data.shape[axis])]


class ChannelPanel:
    """Channel axis and "register on" choice of the Register widget."""

    def _build_channels(self) -> QCollapsible:
        self.channel_axis_combo = ComboBox(
            label="channel axis", choices=list(AXIS_CHOICES), value=FROM_LABELS,
            tooltip="Which layer axis holds channels: napari's axis labels (c, ch, channel), "
                    "none, or an axis index for layers without labels")
        self.channel_on_combo = ComboBox(label="register on", choices=["channel", "mean"],
                                         value="channel")
        self.channel_spin = SpinBox(label="channel", min=0, max=63, value=0)
        self.channels = Container(widgets=[self.channel_axis_combo, self.channel_on_combo,
                                           self.channel_spin])
        self.channel_label = QLabel("")
        self.channel_label.setWordWrap(True)
        box = QCollapsible("Channels (register on one, warp all)")
        box.addWidget(self.channels.native)
        box.addWidget(self.channel_label)
        self.channel_on_combo.changed.connect(
            lambda value: setattr(self.channel_spin, "enabled", value == "channel"))
        self.channel_axis_combo.changed.connect(self._channel_axis_changed)
        return box

    def channel_axis(self, layer: Any) -> int | None:
        """The channel axis of ``layer``: the picker's, else from the axis labels, else None."""
        if layer is None:
            return None
        choice = self.channel_axis_combo.value
        if choice == NO_AXIS:
            return None
        if choice == FROM_LABELS:
            return labelled_channel_axis(self.viewer, layer)
        return int(choice)

    def fixed_channel_axis(self, fixed_layer: Any) -> int | None:
        """The fixed layer's channel axis; an axis picked by index applies to it only when it
        has as many axes as the moving layer (a single-channel fixed image has none)."""
        moving_layer = self.moving_combo.value
        if (self.channel_axis_combo.value not in (FROM_LABELS, NO_AXIS)
                and moving_layer is not None and fixed_layer is not None
                and fixed_layer.ndim < moving_layer.ndim):
            return None
        return self.channel_axis(fixed_layer)

    def spatial_ndim(self, fixed_layer: Any) -> int:
        """The fixed layer's dimensionality without its channel axis."""
        axis = self.fixed_channel_axis(fixed_layer)
        return fixed_layer.ndim - (axis is not None and axis < fixed_layer.ndim
                                   and fixed_layer.ndim > 2)

    def offers_channels(self, layer: Any) -> bool:
        """A 4D image layer offered because it has a channel axis (labels or picker)."""
        return (layer.__class__.__name__ == "Image" and layer.ndim == 4
                and _layers.FIELD_KEY not in layer.metadata and self.channel_axis(layer) is not None)

    def _channel_axis_changed(self, *_: Any) -> None:
        self.reset_choices()
        self._show_channels()

    def _show_channels(self, *_: Any) -> None:
        words = []
        for role, combo in (("fixed", self.fixed_combo), ("moving", self.moving_combo)):
            layer = combo.value
            axis = (self.fixed_channel_axis(layer) if role == "fixed"
                    else self.channel_axis(layer))
            if layer is not None and axis is not None and axis < layer.ndim:
                words.append(f"{role}: {layer.data.shape[axis]} channels on axis {axis}")
        self.channel_label.setText("; ".join(words) or "no channel axis: one image each")

    def _channel_choice(self) -> int | str:
        return "mean" if self.channel_on_combo.value == "mean" else int(self.channel_spin.value)

    def _collect_channels(self, fixed_layer: Any, moving_layer: Any, base_matrix: Any,
                          ) -> tuple[Any, Any, Any, Any, dict[str, Any]] | None:
        """Channel lists of the two layers, or None when neither has a channel axis.

        Returns ``(fixed, moving, fixed_reference, moving_reference, channels)``: the inputs of
        ``register_channels_iter`` (a list of channel Images, or one Image for a fixed layer
        without channels), single images of the registered channel for the checks and the
        landmarks, and the keywords ``{"channel": ..., "axis": ...}`` of the job.
        ``base_matrix(layer)`` is the moving layer's world matrix to start from.

        Raises
        ------
        ValueError
            A channel index out of range, a channel axis on a 2D layer, a fixed layer with
            channels but not the moving one, different spatial dimensionality.
        """
        if fixed_layer is None or moving_layer is None:
            return None
        fixed_axis = self.fixed_channel_axis(fixed_layer)
        moving_axis = self.channel_axis(moving_layer)
        if fixed_axis is None and moving_axis is None:
            return None
        if moving_axis is None:
            raise ValueError(
                f"channel axis: fixed {fixed_layer.name!r} has channels but moving "
                f"{moving_layer.name!r} does not. Pick a multi-channel moving layer, or a "
                "single-channel fixed layer (e.g. napari's 'Split Stack')."
            )
        moving = split_channels(moving_layer, moving_axis, base_matrix(moving_layer), "moving")
        if fixed_axis is None:
            fixed = _layers.layer_to_image(fixed_layer, "fixed")
            fixed_channels = [fixed]
        else:
            fixed_channels = split_channels(fixed_layer, fixed_axis,
                                            _layers.layer_world_matrix(fixed_layer), "fixed")
            fixed = fixed_channels
        if fixed_channels[0].ndim != moving[0].ndim:
            raise ValueError(
                f"fixed {fixed_layer.name!r} is {fixed_channels[0].ndim}D "
                f"{fixed_channels[0].shape} per channel but moving {moving_layer.name!r} is "
                f"{moving[0].ndim}D {moving[0].shape} per channel; pick two 2D or two 3D "
                "images (with or without channels)."
            )
        channel = self._channel_choice()
        index = 0 if channel == "mean" else channel
        for role, layer, images in (("moving", moving_layer, moving),
                                    ("fixed", fixed_layer, fixed_channels)):
            if role == "fixed" and fixed_axis is None:
                continue
            if not 0 <= index < len(images):
                raise ValueError(
                    f"channel: expected an index in [0, {len(images) - 1}] ({role} "
                    f"{layer.name!r} has {len(images)} channels), got {index}."
                )
        fixed_ref = fixed_channels[0] if fixed_axis is None else fixed_channels[index]
        return fixed, moving, fixed_ref, moving[index], {"channel": channel, "axis": moving_axis}

    def _channel_stack_spec(self, stack: np.ndarray, axis: int, fixed_layer: Any,
                            source: str) -> Any:
        """The ``"<moving> warped"`` layer of every channel, placed like the fixed image."""
        from napari_deepreg._results import LayerSpec, robust_limits

        data = np.moveaxis(np.asarray(stack, dtype=np.float32), 0, axis)
        fixed_axis = self.fixed_channel_axis(fixed_layer)
        if fixed_axis == axis and fixed_layer.ndim == data.ndim:
            place = _layers.placement_like(fixed_layer)
        else:
            matrix = _layers.layer_world_matrix(fixed_layer)
            if fixed_axis is not None:
                matrix = drop_axis(matrix, fixed_axis)
            place = _layers.placement_from_affine(insert_axis(matrix, axis))
        return LayerSpec("warped", f"{source} warped", "image", data,
                         {"colormap": "magenta", "blending": "additive",
                          "contrast_limits": robust_limits(data), **place})

    def _spatial_place(self, fixed_layer: Any) -> dict[str, Any]:
        """Placement keywords of the fixed layer's spatial axes (its channel axis dropped)."""
        axis = self.fixed_channel_axis(fixed_layer)
        if axis is None or fixed_layer.ndim <= 2:
            return _layers.placement_like(fixed_layer)
        return _layers.placement_from_affine(
            drop_axis(_layers.layer_world_matrix(fixed_layer), axis))
