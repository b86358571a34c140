#!/usr/bin/env bash
# The training campaign in resumable chunks: each call trains NAME for at most CHUNK seconds
# (default 540), stops cleanly with a checkpoint (SIGTERM -> checkpoint -> exit), and resumes from
# runs/NAME next time. Repeat until the recipe's steps are done; then publish with
#   .venv/bin/python bench/publish_model.py runs/NAME NAME
# Usage: bash bench/train_chunks.sh NAME [CHUNK_SECONDS]      (THREADS=1 to share the cores)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; chunk=${2:-540}
recipe=src_core/deepreg_core/zoo/recipes/$name.yaml
resume=()
if ls runs/"$name"/checkpoints/step_*/checkpoint.json >/dev/null 2>&1; then resume=(--resume runs/"$name"); fi
export OMP_NUM_THREADS=${THREADS:-2} TQDM_MININTERVAL=60
mkdir -p runs/"$name"
status=0
timeout --signal=TERM --kill-after=120 "$chunk" .venv/bin/deepreg-core train "$recipe" \
    --output-dir runs/"$name" "${resume[@]}" >>runs/"$name"/train.log 2>&1 || status=$?
# 124: the chunk's time ran out and the run stopped with a checkpoint, as planned.
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then echo "train $name failed ($status)"; exit "$status"; fi
.venv/bin/python bench/plot_training.py runs/"$name" bench/results/training/"$name"
# Keep the three latest checkpoints (each holds the whole history; older ones are not needed to resume).
ls -d runs/"$name"/checkpoints/step_* | head -n -3 | xargs -r rm -rf
# Exit 3 once the recipe's steps are all done, so that a loop of chunks knows when to stop.
tail -n 1 runs/"$name"/train.log | grep -q '"event": "Finished"' && exit 3
exit 0
