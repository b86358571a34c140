"""What the Register widget adds to a registration's time: the widget's run against a direct call.

    xvfb-run -a python bench/widget_overhead.py [--data nib-epi] [--repeats 3]

The pair is an evaluation case (``deepreg_core.evaluation.make_case``) written to NIfTI and opened
through the plugin's reader, as a user would. In one napari window (shown; under Xvfb the canvas
is rendered in software), the same ``auto`` registration runs: called directly on the GUI
thread, then through the Register widget in a Qt event loop with the job runner's progress
throttle (``napari_deepreg._jobs.PROGRESS_INTERVAL``) as shipped and switched off (every
optimiser step repaints the progress bar, as before the throttle). Reported: the median of the
registration's own clock (``metrics["seconds"]``) over ``--repeats`` runs each, after a warm-up.
Results: ``bench/results/widget_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="nib-epi")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "widget_overhead.json"))
    args = parser.parse_args()

    import napari
    import nibabel as nib
    import numpy as np
    from qtpy.QtCore import QEventLoop, QTimer

    import napari_deepreg._jobs as jobs
    from deepreg_core.evaluation import SHAPES, make_case
    from deepreg_core.inference import register
    from deepreg_core.io import read_image

    folder = Path(tempfile.mkdtemp())
    fixed, moving, *_ = make_case(args.data, SHAPES[args.data], 1000)
    paths = []
    for name, image in (("fixed", fixed), ("moving", moving)):
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(image.data), np.asarray(image.affine)), path)
        paths.append(path)

    viewer = napari.Viewer(show=True)
    for path in paths:
        viewer.open([str(path)], plugin="napari-deepreg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.fixed_combo.value, widget.moving_combo.value = viewer.layers[0], viewer.layers[1]
    pair = [read_image(path) for path in paths]

    def direct() -> float:
        return float(register(*pair, preset="auto", device="cpu").metrics["seconds"])

    def through_widget() -> float:
        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: loop.quit() if widget.worker is None else None)
        widget.run()
        timer.start(50)
        loop.exec()
        timer.stop()
        return float(widget.result.metrics["seconds"])

    shipped = jobs.PROGRESS_INTERVAL
    report: dict = {"data": args.data, "repeats": args.repeats, "interval_s": shipped}
    direct()  # warm-up: imports, model loading
    through_widget()
    for name, run, interval in (("direct call", direct, shipped),
                                ("widget, progress throttled", through_widget, shipped),
                                ("widget, every step repainted", through_widget, 0.0)):
        jobs.PROGRESS_INTERVAL = interval
        times = [run() for _ in range(args.repeats)]
        report[name] = statistics.median(times)
        print(f"{name}: {report[name]:.2f} s (median of {args.repeats})", flush=True)
    jobs.PROGRESS_INTERVAL = shipped
    report["date"] = time.strftime("%Y-%m-%dT%H:%M")
    Path(args.output).write_text(json.dumps(report, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
