"""The demo behind ``make demo``: the 3D sample pair, the Register widget, the default model run.

    python -m napari_deepreg.demo                 # opens napari and leaves it open
    python -m napari_deepreg.demo --headless --output demo_output   # under Xvfb: screenshots, exit

With ``--headless`` the viewer is not shown; after the registration finishes, screenshots are
saved into ``--output`` and the process exits (non-zero if the registration failed):
``window.png`` (the whole window, 1500x950), ``canvas.png`` (a slice: green fixed, magenta warped,
the grid under them), ``canvas_3d.png`` (the 3D view with the grid's polylines) and
``register_dock.png`` (the Register dock with its read-out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def pump_until(app, predicate, timeout: float) -> bool:
    """Process Qt events until ``predicate()`` is true or ``timeout`` seconds passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_deepreg.demo")
    parser.add_argument("--headless", action="store_true", help="screenshots, then exit")
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--sample", default="brain_3d", choices=["brain_3d", "brain_2d"])
    parser.add_argument("--preset", default="auto", choices=["auto", "fast", "accurate"])
    parser.add_argument("--refine-steps", type=int, default=None,
                        help="a fixed refinement budget instead of the preset's")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    # shown even with --headless (under Xvfb that costs nothing): Mesa renders a hidden
    # viewer's canvas black, so its screenshot would show nothing
    viewer = napari.Viewer(title="napari-deepreg demo", show=True)
    viewer.window.resize(1500, 950) if hasattr(viewer.window, "resize") else None
    viewer.open_sample("napari-deepreg", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    app = QApplication.instance()
    widget.reset_choices()
    widget.preset_combo.value = args.preset
    if args.refine_steps is not None:
        widget.refine_check.value = True
        widget.steps_spin.value = args.refine_steps
    widget.run()
    finished = pump_until(app, lambda: getattr(widget, "worker", None) is None, args.timeout)
    pump_until(app, lambda: False, 1.0)  # let the result layers draw
    if not args.headless:
        napari.run()
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    viewer.dims.ndisplay = 2
    viewer.screenshot(str(out / "canvas.png"), canvas_only=True)
    viewer.screenshot(str(out / "window.png"), canvas_only=False)
    widget.grab().save(str(out / "register_dock.png"))
    if args.sample == "brain_3d":
        viewer.dims.ndisplay = 3
        viewer.camera.angles = (0.0, 30.0, 70.0)
        pump_until(app, lambda: False, 1.0)
        viewer.screenshot(str(out / "canvas_3d.png"), canvas_only=True)
        viewer.dims.ndisplay = 2
    result = getattr(widget, "result", None)
    summary = {"finished": bool(finished and result is not None),
               "layers": [layer.name for layer in viewer.layers]}
    if result is not None:
        summary["metrics"] = result.metrics
        summary["model"] = result.model_name
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    viewer.close()
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
