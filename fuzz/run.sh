#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with libFuzzer (cargo fuzz), each target for
# SECONDS (default 600), from a small seed corpus made here. Findings land in
# fuzz/artifacts/TARGET/ (`cargo fuzz fmt TARGET FILE` shows one); fix each and keep its
# bytes as a unit test beside the code it broke.
# cargo fuzz needs nightly features: RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
#   (targets: idx model_file architecture memory_budget resume image onnx)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx model_file architecture memory_budget resume image onnx)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo build --release -q
cargo fuzz build -O

corpus=fuzz/corpus
mkdir -p "$corpus"/{idx,model_file,architecture,memory_budget,resume,image,onnx}
data=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Seeds: real files of each kind, small enough to mutate quickly.
python3 - "$corpus/idx" <<'PY'
import struct, sys, gzip
d = sys.argv[1]
open(f"{d}/labels", "wb").write(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + bytes(range(5)))
img = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 3) + bytes(range(18))
open(f"{d}/images", "wb").write(img)
open(f"{d}/images.gz", "wb").write(gzip.compress(img))
PY
./target/release/fmnist train --epochs 1 --limit 100 --val-size 50 --out "$work/m.safetensors" \
  --data-dir "$data" --offline > /dev/null
cp "$work/m.safetensors" "$corpus/model_file/simple"
./target/release/fmnist export "$work/m.safetensors" --onnx "$corpus/onnx/simple.onnx" > /dev/null
cp crates/fmnist/tests/data/torch_tiny_legacy.onnx "$corpus/onnx/"
./target/release/fmnist train --model simple-bn --epochs 3 --limit 100 --val-size 50 --ema 0.9 \
  --out "$work/s.safetensors" --data-dir "$data" --offline > /dev/null &
pid=$!
while [ ! -f "$work/s.checkpoint.safetensors" ]; do sleep 0.1; done
cp "$work/s.checkpoint.safetensors" "$corpus/model_file/checkpoint"
cp "$work/s.checkpoint.safetensors" "$corpus/resume/checkpoint"
wait "$pid"
for f in crates/fmnist/tests/fixtures/*.json; do [ -f "$f" ] && cp "$f" "$corpus/architecture/"; done
python3 - "$corpus/architecture" <<'PY'
import json, sys
d = sys.argv[1]
json.dump({"name": "t", "input": [28, 28, 1], "layers": [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "batch_norm"},
    {"type": "relu"}, {"type": "max_pool2d", "size": 2},
    {"type": "residual", "body": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"}]},
    {"type": "global_avg_pool"}, {"type": "flatten"}, {"type": "dropout", "rate": 0.5},
    {"type": "linear", "units": 10}]}, open(f"{d}/small.json", "w"))
PY
cp "$corpus"/architecture/* "$corpus/memory_budget/"
./target/release/fmnist data --preview "$work/preview.png" --data-dir "$data" --offline > /dev/null
./target/release/fmnist predict "$work/m.safetensors" "$work/preview.png" --show-input "$work" > /dev/null
cp "$work"/*.input.png "$corpus/image/input.png"
python3 - "$corpus/image" <<'PY'
import struct, sys, zlib
d = sys.argv[1]
def png(w, h, rows, colour):
    def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(f"{d}/rgb.png", "wb").write(png(4, 3, b"".join(b"\0" + bytes([x * 60, 200, 30] * 4) for x in range(3)), 2))
open(f"{d}/tiny.bmp", "wb").write(b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 0, 0, 0, 0) + b"\xff\x00\x00\x00")
PY
for t in "${targets[@]}"; do
  echo "fuzzing $t for $seconds s" >&2
  cargo fuzz run -O "$t" "$corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
    -timeout=30 -print_final_stats=1 2>&1 | grep -E "^(stat::|Done|==|SUMMARY|artifact_prefix|Test unit)" || true
done
