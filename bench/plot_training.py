"""Training evidence for one run: loss and validation curves (PNG) and a JSON summary.

    python bench/plot_training.py runs/deformable-3d bench/results/training/deformable-3d

Reads the latest checkpoint's history (``checkpoint.json``) and the chunk log's wall time, and
writes ``PREFIX.png`` (training loss, smoothed; validation Dice, endpoint error and folding) and
``PREFIX.json`` (steps done, last validation, seconds of training, hardware). Needs matplotlib
(the ``bench`` extra).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from deepreg_core.training.loop import latest_checkpoint


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` steps (shorter at the start)."""
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    out = (cumulative[window:] - cumulative[:-window]) / window
    head = cumulative[1:window] / np.arange(1, window)
    return np.concatenate([head, out])


def main(run: str, prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ckpt = latest_checkpoint(run)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    history = meta.get("history", {})
    train = history.get("train", [])
    val = history.get("val", [])
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(steps, smooth(loss, 200), label="train loss (mean of 200 steps)")
    if val:
        axes[0].plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation loss")
    axes[0].set_xlabel("step")
    axes[0].legend()
    for key, ax, before in (("dice", axes[1], "dice_before"), ("epe", axes[2], None)):
        rows = [r for r in val if key in r]
        if rows:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o-", label=f"validation {key}")
            if before and before in rows[0]:
                ax.axhline(rows[0][before], color="grey", ls="--", label="before registration")
            ax.set_xlabel("step")
            ax.legend()
    axes[2].set_ylabel("voxels of the training grid")
    fig.suptitle(f"{Path(run).name}: {meta['step']} steps")
    fig.tight_layout()
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{prefix}.png", dpi=80)
    seconds = sum(float(r.get("seconds", 0.0)) for r in train)
    summary = {
        "run": str(run), "step": meta["step"], "config": meta.get("config"),
        "last_validation": val[-1] if val else None,
        "train_seconds": round(seconds, 1),
        "hardware": f"{platform.processor() or platform.machine()}, CPU threads per run: "
                    f"{meta.get('extra', {}).get('threads', 'n/a')}",
        "package_version": meta.get("package_version"),
    }
    Path(f"{prefix}.json").write_text(json.dumps(summary, indent=1))
    print(f"{Path(run).name}: step {meta['step']}, last validation {val[-1] if val else None}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
