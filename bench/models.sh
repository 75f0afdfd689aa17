#!/usr/bin/env bash
# Inference speed of every built-in model, one or more fmnist binaries side by side (to
# measure a change: build the old commit elsewhere and pass both). Runs `fmnist bench`
# for each model and binary alternately for several rounds and prints medians.
# Usage: bench/models.sh [ROUNDS] [BINARY...]   (default 3 rounds of target/release/fmnist)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release -q
  bins=(target/release/fmnist)
fi
export FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for model in simple simple-bn cnn-bn resnet-small resnet9; do
  for r in $(seq "$rounds"); do
    for i in "${!bins[@]}"; do
      "${bins[$i]}" bench --model "$model" --batches 5 --json --data-dir "$FMNIST_DIR" --offline \
        | python3 -c "import json, sys; r = json.load(sys.stdin); print('$model', $i, r['eval_images_per_s'], r['predict_p50_ms'])" >> "$out"
    done
  done
done
python3 - "$out" "${bins[@]}" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    model, i, ips, p50 = line.split()
    rows[(model, int(i))].append((float(ips), float(p50)))
bins = sys.argv[2:]
for i, b in enumerate(bins):
    print(f"[{i}] {b}")
print(f"{'model':14}" + "".join(f"{f'[{i}] images/s':>16}{f'[{i}] p50 ms':>13}" for i in range(len(bins)))
      + (f"{'[last]/[0]':>12}" if len(bins) > 1 else ""))
models = list(dict.fromkeys(m for m, _ in rows))
for m in models:
    med = [(statistics.median(x[0] for x in rows[(m, i)]), statistics.median(x[1] for x in rows[(m, i)]))
           for i in range(len(bins))]
    line = f"{m:14}" + "".join(f"{ips:>16.0f}{p50:>13.3f}" for ips, p50 in med)
    if len(bins) > 1:
        line += f"{med[-1][0] / med[0][0]:>12.2f}"
    print(line)
PY
