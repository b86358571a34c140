"""2D registration time per pair inside one process (a batch of pairs through the API).

    python bench/api_batch_2d.py [--cases 5] [--preset auto fast accurate] [--seed 1000]

Issue 11's 2D target is "registration under 0.3 s a pair in process": the model is loaded once,
then each held-out MNI slice case (``evaluation.make_case("slice", ...)``, seeds from 1000, a
stream training never draws) goes through ``register_iter``. The first pair is a warm-up and is
not counted. Per pair the script records the wall time, the steps each refinement level ran and
its seconds, Dice of GM/WM and endpoint error inside the brain; medians go to stdout and
``bench/results/api_batch_2d.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).parent


def run(preset: str, cases: list, warmup) -> dict:
    from deepreg_core.evaluation import case_metrics
    from deepreg_core.events import Finished, Progress
    from deepreg_core.inference import register_iter

    def one(case):
        fixed, moving, fl, ml, truth = case
        levels: dict[str, list[float]] = {}
        mark = time.perf_counter()
        start, last = mark, None
        for event in register_iter(fixed, moving, model="auto", preset=preset, device="cpu",
                                   fixed_labels=fl, moving_labels=ml):
            now = time.perf_counter()
            if isinstance(event, Progress) and event.message.startswith("refine"):
                name = event.message.split(" (")[0]
                entry = levels.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += now - mark
            mark = now
            if isinstance(event, Finished):
                last = event.result
        seconds = time.perf_counter() - start
        s = case_metrics(last, fl, truth)
        return seconds, levels, s

    one(warmup)
    rows = []
    for case in cases:
        seconds, levels, s = one(case)
        rows.append({"seconds": seconds, "levels": levels, **s})
    summary = {"seconds": statistics.median(r["seconds"] for r in rows)}
    for key in rows[0]:
        if key not in ("seconds", "levels") and isinstance(rows[0][key], (int, float)):
            summary[key] = statistics.median(r[key] for r in rows)
    return {"summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--preset", nargs="+", default=["fast", "auto", "accurate"])
    parser.add_argument("--output", default=str(HERE / "results" / "api_batch_2d.json"))
    args = parser.parse_args()
    import torch

    from deepreg_core.evaluation import SHAPES, make_case

    torch.manual_seed(0)
    cases = [make_case("slice", SHAPES["slice"], args.seed + i) for i in range(args.cases)]
    warmup = make_case("slice", SHAPES["slice"], args.seed + args.cases)
    report = {"threads": torch.get_num_threads(), "cases": args.cases, "seed": args.seed}
    for preset in args.preset:
        report[preset] = run(preset, cases, warmup)
        s = report[preset]["summary"]
        print(f"{preset:9s} " + "  ".join(f"{k} {v:.4g}" for k, v in s.items()))
        for row in report[preset]["rows"][:1]:
            print("   levels (steps, s):", {k: (v[0], round(v[1], 3))
                                            for k, v in row["levels"].items()})
    Path(args.output).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
