"""Batch throughput: pairs per minute against the number of dask workers (1, 2).

Each repeat registers the same pairs into a fresh batch folder on a LocalCluster that is already
up and warm (one pair run first, so torch and the model are loaded in every worker): the figure
is the steady rate of `deepreg_core.batch`, not cluster start-up. Medians over the repeats go to
bench/results/batch_throughput.json.

    .venv/bin/python bench/batch_throughput.py --pairs 12 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster
from scipy.ndimage import gaussian_filter, shift

from deepreg_core.batch import Pair, batch
from deepreg_core.image import Image
from deepreg_core.io import write_image

RESULTS = Path(__file__).parent / "results" / "batch_throughput.json"


def make_pairs(root: Path, n: int, size: int) -> list[Pair]:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        image = gaussian_filter(rng.random((size, size)), 3).astype(np.float32)
        moved = shift(image, rng.normal(0, 2, 2), order=1).astype(np.float32)
        write_image(Image.from_array(image, spacing=(1.0, 1.0)), root / f"f{i}.nii.gz")
        write_image(Image.from_array(moved, spacing=(1.0, 1.0)), root / f"m{i}.nii.gz")
        pairs.append(Pair(f"p{i}", str(root / f"f{i}.nii.gz"), str(root / f"m{i}.nii.gz")))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="deformable-2d")
    parser.add_argument("--preset", default="auto")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    pairs = make_pairs(root, args.pairs, args.size)
    options = {"model": args.model, "preset": args.preset, "qa": False}
    rows = []
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster, \
                Client(cluster) as client:
            for w in range(workers):  # warm every worker: torch imported, model loaded
                batch([Pair(f"warm{w}", pairs[0].fixed, pairs[0].moving)],
                      root / f"warm-{workers}-{w}", scheduler=client, **options)
            rates = []
            for repeat in range(args.repeats):
                out = root / f"out-{workers}-{repeat}"
                t0 = time.perf_counter()
                summary = batch(pairs, out, scheduler=client, **options)
                seconds = time.perf_counter() - t0
                assert summary.done == len(pairs), summary
                rates.append(60.0 * len(pairs) / seconds)
                shutil.rmtree(out)
            rows.append({"workers": workers, "pairs_per_minute_median": statistics.median(rates),
                         "pairs_per_minute": [round(r, 2) for r in rates]})
            print(rows[-1], flush=True)
    shutil.rmtree(root, ignore_errors=True)
    report = {"pairs": args.pairs, "size": [args.size, args.size], "repeats": args.repeats,
              "options": options, "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(),
              "note": "2 CPU cores shared with other jobs; OMP_NUM_THREADS=1 per worker",
              "results": rows,
              "speedup_2_vs_1": rows[1]["pairs_per_minute_median"]
              / rows[0]["pairs_per_minute_median"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
