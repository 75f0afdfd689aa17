#!/usr/bin/env bash
# `fmnist serve` under load: starts the server on a loopback port with MODEL (or trains a
# one-epoch `simple` model when none is given), then `wrk` (Debian package `wrk`) POSTs one
# test image (a PNG) to /api/predict from CONNECTIONS connections for SECONDS seconds and
# prints requests/s and the latency percentiles. Server and load generator share the cores.
# Usage: bench/serve_load.sh [MODEL] [SECONDS] [CONNECTIONS] [THREADS]
#   (default 10 s, 16 connections, the server on all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q
fmnist=$PWD/target/release/fmnist
data=(--data-dir "${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}" --offline)
work=$(mktemp -d)
server=""
cleanup() { [ -z "$server" ] || kill -INT "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
model=${1:-}
if [ -z "$model" ]; then
  model=$work/model.safetensors
  "$fmnist" train --epochs 1 --out "$model" "${data[@]}" >/dev/null
fi
seconds=${2:-10}
connections=${3:-16}
threads=(); [ -z "${4:-}" ] || threads=(--threads "$4")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$fmnist" serve "$model" --addr "127.0.0.1:$port" "${threads[@]}" "${data[@]}" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/api/sample" -o "$work/sample.png"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = io.open("$work/sample.png", "rb")
wrk.body = f:read("*a")
f:close()
-- Every answer must be a prediction, not an error.
done = function(summary, latency, requests)
  io.write(string.format("non-2xx or failed: %d\n", summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
echo "model $(basename "$model"), $(stat -c %s "$work/sample.png")-byte PNG, $connections connections, ${seconds} s"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/api/predict"
