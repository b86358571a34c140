#!/usr/bin/env bash
# Train (or resume) every zoo recipe in turn, then publish each into the package.
# Usage: bash bench/train_zoo.sh [recipe[:zoo-name] ...]   (zoo-name "-": train, do not publish;
# default: the recipes of the shipped
# models, in an order where a recipe that starts from another model comes after it). Resumable:
# re-run after a stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(deformable-2d affine-2d deformable-3d-mni:deformable-3d global-local-2d
           affine-3d-stage1:- affine-3d)
fi
for entry in "${names[@]}"; do
    name=${entry%%:*}; zoo_name=${entry#*:}
    recipe=src_core/deepreg_core/zoo/recipes/$name.yaml
    resume=()
    if ls runs/$name/checkpoints/step_* >/dev/null 2>&1; then resume=(--resume runs/$name); fi
    echo "== $name ${resume[*]}"
    .venv/bin/deepreg-core train "$recipe" --output-dir runs/$name "${resume[@]}"
    [ "$zoo_name" = "-" ] && continue  # a stage that another recipe starts from: not published
    $PY bench/publish_model.py runs/$name "$zoo_name"
done
