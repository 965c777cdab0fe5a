#!/usr/bin/env bash
# Wheels for a GPU machine without internet access that already has PyTorch, Lightning, OpenCV and
# Rich (Python 3.12, x86-64 Linux): downloads into .whl/ what device_check.sh installs from there.
# Run it on a machine with access to the package index, then copy .whl/ along with the checkout.
set -euo pipefail
DEST=${1:-.whl}
PY=${DEVICE_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  "${platforms[@]}" -d "$DEST" \
  "kornia>=0.7" kornia_rs "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" "torchdata>=0.11,<0.12" \
  "psutil>=5.9,<8" joblib "hydra-joblib-launcher>=1.2,<2" pytest pluggy iniconfig
# published as a source archive only: build its (pure Python) wheel here
python3 -m pip wheel -q --no-deps -w "$DEST" "antlr4-python3-runtime==4.9.*"
ls "$DEST"
