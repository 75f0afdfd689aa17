#!/usr/bin/env bash
# Creates the reference implementations' Python environment (PyTorch and Keras/TensorFlow,
# CPU) once, in $ANCHORS_VENV (default ~/.cache/fmnist-anchors).
set -euo pipefail
venv=${ANCHORS_VENV:-$HOME/.cache/fmnist-anchors}
if ! "$venv/bin/python" -c "import torch, keras" 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q numpy torch tensorflow-cpu keras
fi
"$venv/bin/python" -c "import torch, keras; print('torch', torch.__version__, 'keras', keras.__version__)"
