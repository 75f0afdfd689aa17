"""PyTorch CPU reference for `fmnist bench`: the seed's Keras CNN and recipe (as torch_cnn.py),
timed the way `fmnist bench --json` times fmnist, printing one JSON object.
Usage: torch_bench.py [BATCHES] [BATCH_SIZE] [VARIANT]
VARIANT is what a PyTorch user reaches for to go faster on a CPU:
  default        fp32, NCHW
  channels_last  fp32, `model.to(memory_format=torch.channels_last)` and inputs likewise
  bf16           channels_last and `torch.autocast("cpu", dtype=torch.bfloat16)` around
                 the forward pass and loss (mixed precision: fp32 weights and optimizer)
  compile        `torch.compile(model)` (Inductor, which compiles C++ with the system's gcc)"""
import contextlib, json, resource, sys, time
import torch, torch.nn as nn
from fmnist_data import load

torch.manual_seed(42)
batches = int(sys.argv[1]) if len(sys.argv) > 1 else 100
bs = int(sys.argv[2]) if len(sys.argv) > 2 else 128
variant = sys.argv[3] if len(sys.argv) > 3 else "default"
assert variant in ("default", "channels_last", "bf16", "compile"), variant
xtr, ytr, xte, yte = load()
xtr = torch.tensor(xtr, dtype=torch.float32).unsqueeze(1) / 255
ytr = torch.tensor(ytr, dtype=torch.long)
xte = torch.tensor(xte, dtype=torch.float32).unsqueeze(1) / 255
model = nn.Sequential(
    nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
fmt = torch.channels_last if variant in ("channels_last", "bf16") else torch.contiguous_format
model = model.to(memory_format=fmt)
xtr, xte = xtr.contiguous(memory_format=fmt), xte.contiguous(memory_format=fmt)
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" \
    else contextlib.nullcontext
opt = torch.optim.Adam(model.parameters(), 1e-3)
run = torch.compile(model) if variant == "compile" else model
loss_fn = nn.CrossEntropyLoss()
perm = torch.randperm(60000)

def step(i):
    s = (i * bs) % (60000 - bs + 1)
    idx = perm[s:s + bs]
    opt.zero_grad()
    with autocast():
        loss = loss_fn(run(xtr[idx]), ytr[idx])
    loss.backward(); opt.step()

model.train()
for i in range(5): step(i)
start = time.perf_counter()
for i in range(batches): step(5 + i)
train_s = time.perf_counter() - start
train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

model.eval()
with torch.no_grad(), autocast():
    run(xte[:1000])
    start = time.perf_counter()
    for s in range(0, 10000, 1000): run(xte[s:s + 1000]).float().softmax(1)
    eval_s = time.perf_counter() - start
    lat = []
    for i in range(2050):
        start = time.perf_counter(); run(xte[i % 10000:i % 10000 + 1]).float().softmax(1)
        if i >= 50: lat.append((time.perf_counter() - start) * 1e3)
lat.sort()
print(json.dumps({"tool": "torch" if variant == "default" else f"torch-{variant}",
    "label": f"PyTorch {torch.__version__.split('+')[0]} {variant}",
    "precision": "bf16" if variant == "bf16" else "fp32", "threads": torch.get_num_threads(),
    "train_images_per_s": batches * bs / train_s, "eval_images_per_s": 10000 / eval_s,
    "predict_p50_ms": lat[len(lat) // 2], "predict_p99_ms": lat[int(0.99 * (len(lat) - 1))],
    "train_peak_rss_mb": train_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
