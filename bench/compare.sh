#!/usr/bin/env bash
# fmnist against PyTorch and Keras, side by side on this machine: runs `fmnist bench --json`
# (fp32, and bf16 mixed precision where the CPU has bf16 instructions) and the reference
# benchmarks (same network, recipe, batch and data) in the variants a user reaches for:
# PyTorch default, channels_last, channels_last + bf16 autocast and torch.compile; Keras
# float32 and the mixed_bfloat16 policy. All alternate for several rounds; then it prints
# each figure's median and fmnist's ratios to the best fp32 and the best bf16 reference.
# Sets up the Python environment when it is missing.
# Usage: bench/compare.sh [ROUNDS] [BATCHES]   (default 3 rounds of 100 training steps)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
batches=${2:-100}
venv=${ANCHORS_VENV:-$HOME/.cache/fmnist-anchors}
TF_CPP_MIN_LOG_LEVEL=3 bash bench/setup_anchors.sh >/dev/null 2>&1 || bash bench/setup_anchors.sh
cargo build --release -q
export FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
fmnist=./target/release/fmnist
out=$(mktemp)
log=$(mktemp)
trap 'rm -f "$out" "$log"' EXIT
precisions=fp32
if "$fmnist" bench --precision bf16 --batches 1 --data-dir "$FMNIST_DIR" --offline >/dev/null 2>"$log"; then
  precisions="fp32 bf16"
else
  echo "fmnist bf16 left out: $(cat "$log")" >&2
fi
torch_variants="default channels_last bf16 compile"
if ! (cd bench && "$venv/bin/python" torch_bench.py 2 128 compile >/dev/null 2>"$log"); then
  echo "torch.compile left out: it fails here: $(grep -v '^\s*$' "$log" | tail -1)" >&2
  torch_variants="default channels_last bf16"
fi
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  for p in $precisions; do
    "$fmnist" bench --batches "$batches" --json --precision "$p" --data-dir "$FMNIST_DIR" --offline \
      | sed "s/^{/{\"tool\":\"fmnist-$p\",\"label\":\"fmnist $p\",/" >> "$out"
  done
  for v in $torch_variants; do
    (cd bench && "$venv/bin/python" torch_bench.py "$batches" 128 "$v") >> "$out"
  done
  for policy in float32 mixed_bfloat16; do
    (cd bench && "$venv/bin/python" keras_bench.py "$batches" 128 "$policy" 2>/dev/null) >> "$out"
  done
done
"$venv/bin/python" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tools = {}
for r in rows:
    tools.setdefault(r["tool"], []).append(r)
label = {t: rs[0]["label"] + (f" ({rs[0]['precision']})" if t.startswith("fmnist") else "")
         for t, rs in tools.items()}
bf16 = {t: rs[0]["precision"].startswith("bf16") for t, rs in tools.items()}
keys = ["train_images_per_s", "eval_images_per_s", "predict_p50_ms", "predict_p99_ms",
        "train_peak_rss_mb", "peak_rss_mb"]
med = {t: {k: statistics.median(r[k] for r in rs) for k in keys} for t, rs in tools.items()}
higher = lambda k: k.endswith("_per_s")
def best(k, want_bf16):
    refs = [t for t in med if not t.startswith("fmnist") and bf16[t] == want_bf16]
    pick = max if higher(k) else min
    return pick(refs, key=lambda t: med[t][k]) if refs else None
def ratio(t, ref, k):
    # Always "how many times better fmnist is": > 1 is fmnist ahead.
    a, b = med[t][k], med[ref][k]
    return a / b if higher(k) else b / a
fm = tools["fmnist-fp32"][0]
print(f"medians of {len(tools['fmnist-fp32'])} rounds, {fm['threads']} threads, batch "
      f"{fm['batch_size']} (images/s: higher is better; ms and MB: lower is better)\n")
w = max(len(l) for l in label.values()) + 2
print(f"{'':{w}}" + "".join(f"{k:>20}" for k in keys))
for t in med:
    print(f"{label[t]:{w}}" + "".join(
        f"{med[t][k]:>20.3f}" if "ms" in k else f"{med[t][k]:>20.0f}" for k in keys))
print("\nfmnist's advantage (× better; > 1 means fmnist is ahead) over the best reference:")
for t, want in [("fmnist-fp32", False), ("fmnist-bf16", True), ("fmnist-bf16", False)]:
    if t not in med:
        continue
    refs = [best(k, want) for k in keys]
    if None in refs:
        continue
    kind = "bf16" if want else "fp32"
    print(f"{label[t]} vs best {kind} reference")
    for k, ref in zip(keys, refs):
        print(f"  {k:20} {ratio(t, ref, k):>6.2f}  (best: {label[ref]})")
PY
