#!/usr/bin/env bash
# The presets' Results table: trains each preset once per seed with the release binary
# and prints, per run, the whole command's wall time and the test accuracy, then per
# preset the mean and spread (min–max) over the seeds. PRECISION=bf16 trains in bf16 mixed
# precision (`--precision`); MODELS=DIR keeps the trained models there (as
# DIR/PRESET-SEED.safetensors, e.g. for `fmnist eval --photos-dir`).
# Usage: bench/presets.sh [PRESET...]   (default: fast standard best photo; SEEDS="1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(fast standard best photo)
seeds=${SEEDS:-1 2 3}
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models=${MODELS:-$work}
mkdir -p "$models"
data=(--data-dir "${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}" --offline
  --precision "${PRECISION:-fp32}")

printf "%-9s %5s %10s %13s\n" preset seed "wall (s)" "test acc (%)"
for p in "${presets[@]}"; do
  for s in $seeds; do
    start=$(date +%s.%N)
    ./target/release/fmnist train --preset "$p" --seed "$s" --out "$models/$p-$s.safetensors" \
      "${data[@]}" > "$work/$p-$s.log" 2>&1
    end=$(date +%s.%N)
    acc=$(sed -nE 's/^test accuracy (of the ensemble )?([0-9.]+) %.*/\2/p' "$work/$p-$s.log")
    wall=$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", e - s}')
    printf "%-9s %5s %10s %13s\n" "$p" "$s" "$wall" "$acc" | tee -a "$work/rows"
  done
done
echo
printf "%-9s %22s %26s\n" preset "wall (s) mean [min-max]" "test acc (%) mean [min-max]"
for p in "${presets[@]}"; do
  awk -v p="$p" '$1 == p {
      n++; w += $3; a += $4
      if (n == 1 || $3 < wmin) wmin = $3; if ($3 > wmax) wmax = $3
      if (n == 1 || $4 < amin) amin = $4; if ($4 > amax) amax = $4
    } END {
      printf "%-9s %8.1f [%.1f-%.1f] %12.2f [%.2f-%.2f]\n", p, w / n, wmin, wmax, a / n, amin, amax
    }' "$work/rows"
done
