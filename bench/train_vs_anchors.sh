#!/usr/bin/env bash
# Default training, side by side in one run: `fmnist train` (defaults) against the PyTorch
# and Keras references of the same network and recipe for the same number of epochs.
# Prints each one's wall time, training images/s per epoch and final test accuracy.
# Usage: bench/train_vs_anchors.sh [EPOCHS]   (default 12, fmnist's default)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-12}
venv=${ANCHORS_VENV:-$HOME/.cache/fmnist-anchors}
bash bench/setup_anchors.sh
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}

run() {  # name, command...
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > "$work/$name.log" 2>&1
  end=$(date +%s.%N)
  awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN {print n, e - s}' >> "$work/times"
}

run fmnist ./target/release/fmnist train --epochs "$epochs" --out "$work/model.safetensors" --data-dir "$FMNIST_DIR" --offline
run torch "$venv/bin/python" bench/torch_cnn.py "$epochs"
run keras "$venv/bin/python" bench/keras_cnn.py "$epochs"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "%-8s %10s %22s %14s\n" tool "wall (s)" "train img/s (median)" "test acc (%)"
for t in fmnist torch keras; do
  wall=$(awk -v t=$t '$1==t {printf "%.1f", $2}' "$work/times")
  if [ $t = fmnist ]; then
    ips=$(grep -E '^epoch ' "$work/$t.log" | sed -E 's/.* ([0-9,]+) img\/s$/\1/' | tr -d , | median)
    acc=$(sed -nE 's/^test accuracy ([0-9.]+) %.*/\1/p' "$work/$t.log")
  else
    ips=$(sed -nE 's/.*= ([0-9]+) img\/s;.*/\1/p' "$work/$t.log" | median)
    acc=$(sed -nE 's/.*test acc ([0-9.]+);.*/\1/p' "$work/$t.log" | tail -1 | awk '{printf "%.2f", 100*$1}')
  fi
  printf "%-8s %10s %22s %14s\n" $t "$wall" "$ips" "$acc"
done
