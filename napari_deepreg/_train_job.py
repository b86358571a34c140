"""The Train widget's work outside the GUI: layer data on disk, the job, publishing a model.

:func:`training_job` is the generator the widget runs in a ``thread_worker``: it writes the chosen
layers as a training folder (so the saved ``config.yaml`` reruns from the CLI), forwards the core's
``train`` events, then publishes the model folder (``deepreg_core.api.publish_model``) and yields
:class:`Published`. Nothing here imports napari or Qt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

LAYER_DATA = "data"
"""Sub-folder of the output folder that holds the layers trained on (``fixed`` + ``moving_XX``)."""


@dataclass(frozen=True)
class Published:
    """The model folder ``path`` is complete; ``step`` steps were trained (``finished``: all)."""

    name: str
    path: Path
    step: int
    finished: bool


def format_eta(seconds: float) -> str:
    """``"1:05:09 left"``, ``"2:03 left"``; empty for an unknown (non-finite) time.

    Example
    -------
    >>> format_eta(123.4)
    '2:03 left'
    """
    if not seconds == seconds or seconds in (float("inf"), float("-inf")):
        return ""
    total = max(int(round(seconds)), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}") + " left"


def export_layer_pairs(fixed: Any, moving: Sequence[Any], folder: Path) -> Path:
    """Write the fixed image and each moving image resampled onto its grid as NIfTI files.

    Parameters
    ----------
    fixed : deepreg_core.image.Image
        The atlas (one pair: the fixed image); written to ``folder/fixed.nii.gz``.
    moving : sequence of Image
        Resampled onto ``fixed``'s grid through world coordinates, written to
        ``folder/moving_00.nii.gz`` ...
    folder : Path
        Created if missing.

    Returns
    -------
    Path
        The atlas file, for ``DataConfig(source="folder", pairing="atlas", atlas=...)``.
    """
    from deepreg_core.api import Image, resample_to, write_image

    folder.mkdir(parents=True, exist_ok=True)
    atlas = folder / "fixed.nii.gz"
    write_image(Image(fixed.data.astype("float32"), fixed.affine), atlas)
    for index, image in enumerate(moving):
        on_grid = resample_to(image, fixed, padding="border")
        write_image(Image(on_grid.data, fixed.affine), folder / f"moving_{index:02d}.nii.gz")
    return atlas


def model_card(name: str, config: Any, step: int, finished: bool, losses: dict[str, dict],
               settings: dict[str, Any]) -> str:
    """Markdown card of a model trained in the widget: settings and the last losses."""
    m, loss, optim = config.model, config.loss, config.optim
    lines = [
        f"# {name}",
        "",
        f"Trained in the napari Train widget on {datetime.now():%Y-%m-%d %H:%M}; "
        f"{'finished' if finished else 'stopped'} at step {step} of {optim.steps}.",
        "",
        "## Settings",
        "",
        f"- data: {settings.get('data', config.data.source)}",
        f"- model: {m.kind}, {m.ndim}D, features {list(m.features)}",
        f"- fine-tuned from: {settings.get('init', 'none')}",
        *([f"- resumed from: {settings['resumed']}"] if settings.get("resumed") else []),
        f"- working grid: {list(config.data.shape)} voxels",
        f"- loss: {loss.similarity} + {loss.regularization_weight:g} x {loss.regularizer}",
        f"- optimiser: AdamW, lr {optim.lr:g}, batch {optim.batch_size}",
        f"- device: {config.device}, seed {config.seed}",
        "",
        "## Last losses",
        "",
    ]
    for phase in ("train", "val"):
        values = losses.get(phase)
        if values:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "step")
            lines.append(f"- {phase} (step {values.get('step', '?')}): {shown}")
    if not any(losses.values()):
        lines.append("- none recorded")
    return "\n".join(lines) + "\n"


def training_job(config: Any, stop: Any, *, resume: Path | None = None,
                 layers: tuple[Any, list[Any]] | None = None, name: str = "model",
                 settings: dict[str, Any] | None = None) -> Iterator[Any]:
    """Train (or resume), forwarding the core's events; then publish and yield :class:`Published`.

    ``layers = (fixed Image, [moving Images])`` are written under ``config.data.folder`` first.
    """
    from deepreg_core.api import Finished, Metrics, Stopped, publish_model, train

    if layers is not None:
        export_layer_pairs(layers[0], layers[1], Path(config.data.folder))
    losses: dict[str, dict] = {"train": {}, "val": {}}
    last: Any = None
    for event in train(config, stop=stop, resume=resume):
        if isinstance(event, Metrics):
            losses[event.phase] = {"step": event.step, **event.values}
        last = event
        yield event
    if isinstance(last, Finished):
        checkpoint, step, finished = Path(last.result["checkpoint"]), last.result["step"], True
    elif isinstance(last, Stopped) and last.checkpoint is not None:
        checkpoint, step, finished = Path(last.checkpoint), last.step, False
    else:
        return
    card = model_card(name, config, step, finished, losses, settings or {})
    path = publish_model(checkpoint, Path(config.output_dir), card, name=name)
    yield Published(name=name, path=path, step=step, finished=finished)
