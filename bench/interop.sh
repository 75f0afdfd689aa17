#!/usr/bin/env bash
# Models that travel, checked end to end on this machine (bench/interop.py says what):
# a trained `standard` model exported to ONNX and run by onnxruntime, the seed's CNN
# trained in PyTorch and imported into fmnist from safetensors, .pt and ONNX, and the same
# CNN trained in Keras and imported through tf2onnx.
# Usage: bench/interop.sh [--standard MODEL] [--epochs N] [--out DIR]
# Sets up the references' Python environment (bench/setup_anchors.sh) when it is missing,
# and adds onnx, onnxruntime, onnxscript, safetensors, tf2onnx and this checkout's fmnist
# package.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ANCHORS_VENV:-$HOME/.cache/fmnist-anchors}
TF_CPP_MIN_LOG_LEVEL=3 bash bench/setup_anchors.sh >/dev/null 2>&1 || bash bench/setup_anchors.sh
"$venv/bin/python" -c "import onnx, onnxruntime, onnxscript, safetensors, tf2onnx" 2>/dev/null \
  || "$venv/bin/pip" install -q onnx onnxruntime onnxscript safetensors tf2onnx
cargo build --release -q
"$venv/bin/pip" install -q ./python
export FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
exec "$venv/bin/python" bench/interop.py --bin target/release/fmnist "$@"
