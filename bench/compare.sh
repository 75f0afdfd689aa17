#!/usr/bin/env bash
# fmnist against PyTorch and Keras, side by side on this machine: runs `fmnist bench --json`
# and the two reference benchmarks (same network, recipe, batch and data) alternately for
# several rounds, then prints each figure's median and the ratios fmnist / PyTorch and
# fmnist / Keras. Sets up the Python environment when it is missing.
# Usage: bench/compare.sh [ROUNDS] [BATCHES]   (default 3 rounds of 100 training steps)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
batches=${2:-100}
venv=${ANCHORS_VENV:-$HOME/.cache/fmnist-anchors}
TF_CPP_MIN_LOG_LEVEL=3 bash bench/setup_anchors.sh >/dev/null 2>&1 || bash bench/setup_anchors.sh
cargo build --release -q
export FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  ./target/release/fmnist bench --batches "$batches" --json --data-dir "$FMNIST_DIR" --offline \
    | sed 's/^{/{"tool":"fmnist",/' >> "$out"
  (cd bench && "$venv/bin/python" torch_bench.py "$batches") >> "$out"
  (cd bench && "$venv/bin/python" keras_bench.py "$batches" 2>/dev/null) >> "$out"
done
"$venv/bin/python" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tools = {}
for r in rows:
    tools.setdefault(r["tool"].split()[0], []).append(r)
names = {t: tools[t][0]["tool"] for t in tools}
keys = ["train_images_per_s", "eval_images_per_s", "predict_p50_ms", "predict_p99_ms",
        "train_peak_rss_mb", "peak_rss_mb"]
med = {t: {k: statistics.median(r[k] for r in rs) for k in keys} for t, rs in tools.items()}
print(f"medians of {len(tools['fmnist'])} rounds, {tools['fmnist'][0]['threads']} threads "
      "(images/s: higher is better; ms and MB: lower is better)")
print(f"{'':22}" + "".join(f"{names[t]:>20}" for t in med) + f"{'fmnist/torch':>14}{'fmnist/keras':>14}")
for k in keys:
    ratio = lambda t: med["fmnist"][k] / med[t][k]
    print(f"{k:22}" + "".join(f"{med[t][k]:>20.3f}" if "ms" in k else f"{med[t][k]:>20.0f}" for t in med)
          + f"{ratio('torch'):>14.2f}{ratio('keras'):>14.2f}")
PY
