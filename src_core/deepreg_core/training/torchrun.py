"""The ``torchrun`` entry point: ``torchrun --nproc_per_node=N -m deepreg_core.training.torchrun``.

Kept out of :mod:`deepreg_core.training.distributed` (which :mod:`~deepreg_core.training.loop`
imports) so that the two never import each other.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepreg_core.training.torchrun CONFIG [--resume DIR] [--output-dir DIR]``.

    Trains from a YAML config (under ``torchrun`` for several processes); rank 0 prints one line
    per metrics event and the final checkpoint, and every rank prints the SHA-256 of its final
    weights (equal on all ranks).
    """
    from deepreg_core.events import CheckpointSaved, Finished, Metrics, Stopped
    from deepreg_core.training.config import load_config
    from deepreg_core.training.loop import train

    parser = argparse.ArgumentParser(prog="python -m deepreg_core.training.torchrun",
                                     description="Train a registration network (DDP-aware).")
    parser.add_argument("config", help="YAML TrainConfig")
    parser.add_argument("--resume", help="checkpoint folder (or output folder) to resume from")
    parser.add_argument("--output-dir", help="override output_dir")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.output_dir:
        config = config.model_copy(update={"output_dir": args.output_dir})
    rank = int(os.environ.get("RANK", "0"))
    for event in train(config, resume=args.resume):
        if isinstance(event, Finished):
            print(f"rank {rank}: weights sha256 {event.result['weights_sha256']}", flush=True)
        if rank != 0:
            continue
        if isinstance(event, Metrics):
            text = " ".join(f"{k}={v:.4g}" for k, v in event.values.items())
            print(f"[{event.phase} {event.step}] {text}", flush=True)
        elif isinstance(event, (CheckpointSaved, Stopped)):
            print(f"{type(event).__name__}: step {event.step} -> "
                  f"{getattr(event, 'path', getattr(event, 'checkpoint', None))}", flush=True)
        elif isinstance(event, Finished):
            print(f"Finished: {event.result['checkpoint']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
