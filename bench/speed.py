"""Network-only inference time and peak memory at 160 x 192 x 224 (a 1 mm T1-sized volume).

    python bench/speed.py [--model deformable-3d] [--repeats 5]

Times (median of repeats, after one warm-up) in the same run: the bare network forward on the
working grid, the whole ``register()`` call with the network (resampling, normalisation, network,
upsampling, Jacobian, saliency, metrics), the same by zoo name with ``preset="fast"`` (what a user
gets: the zoo's affine network runs first, ``Preset.affine_start``), and, as a baseline, one forward of a full-resolution UNet of the
same widths (what a VoxelMorph-style network costs without a working grid). Peak resident memory
is measured in a fresh process per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = (160, 192, 224)


def measure(what: str, model: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from deepreg_core import zoo
    from deepreg_core.image import Image
    from deepreg_core.inference import register
    from deepreg_core.models import build_model
    from deepreg_core.preprocess import resize_image

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = rng.random(SHAPE, dtype=np.float32)
    fixed, moving = Image.from_array(data), Image.from_array(np.roll(data, 2, axis=0))
    net = zoo.load_model(model)
    if what == "network":
        f = resize_image(torch.from_numpy(data)[None, None], net.config.data.shape)

        def run():
            with torch.no_grad():
                net(f, f)
    elif what == "register":
        def run():
            register(fixed, moving, model=net, refine_steps=0, device="cpu", fallback=False)
    elif what == "register-fast":
        def run():
            register(fixed, moving, model=model, preset="fast", device="cpu")
    elif what == "full-resolution-unet":
        cfg = net.config.model.model_copy(update={"working_scale": 1.0})
        full = build_model(cfg).eval()
        f = torch.from_numpy(data)[None, None]

        def run():
            with torch.no_grad():
                full(f, f)
    else:
        raise ValueError(what)
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"what": what, "median_s": statistics.median(times), "times": times,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="deformable-3d")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.repeats)))
        return
    rows = []
    for what in ("network", "register", "register-fast", "full-resolution-unet"):
        out = subprocess.run([sys.executable, __file__, "--one", what, "--model", args.model,
                              "--repeats", str(args.repeats if what != "full-resolution-unet" else 2)],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode:
            print(out.stderr[-1500:], file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    path = Path(__file__).parent / "results" / "speed.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"shape": SHAPE, "model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
