"""Layer-by-layer reference numbers from PyTorch, for crates/nn/tests/torch_reference.rs.

Run only to regenerate the committed file (it needs torch and safetensors, as in the
references' environment from bench/setup_anchors.sh):

    ~/.cache/fmnist-anchors/bin/python bench/torch_reference.py

For fixed small inputs it records, per case, the inputs and weights (float32), and what
PyTorch computes from them in float64 (stored as float32): every output, the gradient of
the input and of every weight for a fixed upstream gradient `dy`, batch norm's running
statistics after a training step, a label-smoothed cross-entropy and its gradient, a few
steps of Adam, AdamW and SGD (Nesterov, weight decay), and the one-cycle schedule.
Layouts are PyTorch's (NCHW activations, OIHW convolution weights); the test converts.
"""

import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.manual_seed(20261202)
out = {}


def f32(t):
    return t.detach().to(torch.float32).clone().contiguous()


def put(case, name, t):
    out[f"{case}/{name}"] = f32(t)


def rand(*shape, scale=1.0):
    # float32 inputs, so the test feeds exactly the same values
    return (torch.randn(*shape) * scale).to(torch.float32)


def run(case, module, x, train):
    """Records x, the module's parameters and buffers, y, dy, dx and every gradient."""
    module = module.double()
    module.train(train)
    put(case, "x", x)
    for name, t in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        # initial values as float32; the computation starts from exactly these
        t.copy_(t.to(torch.float32).double())
        put(case, f"param.{name}", t)
    xd = x.double().requires_grad_(True)
    y = module(xd)
    dy = rand(*y.shape)
    y.backward(dy.double())
    put(case, "y", y)
    put(case, "dy", dy)
    put(case, "dx", xd.grad)
    for name, p in module.named_parameters():
        put(case, f"grad.{name}", p.grad)
    if train:
        for name, t in module.state_dict().items():
            if "running" in name:
                put(case, f"after.{name}", t)
        module.eval()
        with torch.no_grad():
            put(case, "y_eval", module(x.double()))


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def with_random_norms(module):
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.2 * torch.randn_like(m.running_mean))
                m.running_var.copy_(0.5 + torch.rand_like(m.running_var))
    return module


# Convolutions: strided and padded; plain.
run("conv_s2_p1", nn.Conv2d(3, 4, 3, stride=2, padding=1), rand(2, 3, 9, 9), True)
run("conv_plain", nn.Conv2d(2, 5, 3), rand(2, 2, 6, 6), True)
# The block training spends its time in: conv, batch norm (training), ReLU, max pool.
block = with_random_norms(nn.Sequential(
    nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)))
run("conv_bn_relu_pool", block, rand(4, 2, 8, 8), True)
# Batch norm on its own, training and, from given statistics, inference.
run("batch_norm_train", with_random_norms(nn.BatchNorm2d(3)), rand(5, 3, 4, 4), True)
run("batch_norm_eval", with_random_norms(nn.BatchNorm2d(3)), rand(5, 3, 4, 4), False)
run("batch_norm_dense", with_random_norms(nn.BatchNorm1d(6)), rand(7, 6), True)
# Max pooling with ties (small integers): the gradient goes to the first maximum.
ties = torch.randint(-2, 3, (2, 3, 6, 6)).to(torch.float32)
run("max_pool_ties", nn.MaxPool2d(2), ties, True)
run("relu_max_pool_ties", nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), ties, True)
run("max_pool_3_stride_2", nn.MaxPool2d(3, stride=2), rand(2, 2, 7, 7), True)
run("avg_pool_2", nn.AvgPool2d(2), rand(2, 3, 6, 6), True)
run("avg_pool_3_stride_2", nn.AvgPool2d(3, stride=2), rand(2, 2, 7, 7), True)
run("gelu", nn.GELU(approximate="tanh"), rand(3, 2, 4, 4, scale=2.0), True)
run("linear", nn.Linear(6, 4), rand(3, 6), True)
run("residual", with_random_norms(Residual(nn.Sequential(
    nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()))),
    rand(2, 4, 5, 5), True)
run("global_avg_pool", nn.AdaptiveAvgPool2d(1), rand(2, 3, 4, 4), True)

# Label-smoothed cross-entropy (mean over the batch).
logits = rand(5, 10, scale=3.0)
labels = torch.tensor([3, 0, 9, 3, 7])
ld = logits.double().requires_grad_(True)
loss = nn.CrossEntropyLoss(label_smoothing=0.1)(ld, labels)
loss.backward()
put("cross_entropy", "logits", logits)
put("cross_entropy", "labels", labels.to(torch.float32))
put("cross_entropy", "loss", loss.reshape(1))
put("cross_entropy", "dlogits", ld.grad)

# Optimizers: three steps from w0 with the gradients g0, g1, g2.
w0 = rand(6)
grads = [rand(6) for _ in range(3)]
optimizers = {
    "adam": lambda p: torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
}
for name, make in optimizers.items():
    p = torch.nn.Parameter(w0.double().clone())
    opt = make(p)
    put(f"optim_{name}", "w0", w0)
    for i, g in enumerate(grads):
        put(f"optim_{name}", f"g{i}", g)
        p.grad = g.double().clone()
        opt.step()
        put(f"optim_{name}", f"w{i + 1}", p)

# One-cycle schedule: the learning rate at each of 20 steps.
p = torch.nn.Parameter(torch.zeros(1))
opt = torch.optim.SGD([p], lr=1.0)
sched = torch.optim.lr_scheduler.OneCycleLR(
    opt, max_lr=3e-3, total_steps=20, pct_start=0.25, div_factor=25.0, final_div_factor=1e4,
    anneal_strategy="cos", cycle_momentum=False)
lrs = []
for _ in range(20):
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
put("one_cycle", "lr", torch.tensor(lrs, dtype=torch.float64))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests",
                    "data", "torch_reference.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path, metadata={"torch": torch.__version__, "script": "bench/torch_reference.py"})
print(f"wrote {os.path.normpath(path)}: {len(out)} tensors, torch {torch.__version__}")

# Import fixtures for crates/fmnist/tests/interop.rs: a small CNN as PyTorch users save
# it (state_dict as safetensors and torch.save, torch.onnx.export with and without the
# dynamo exporter), named so that sorting by name alone would misplace its layers
# (bn1 < conv1 < conv2 < fc1), with its probabilities on the first 32 test images.
import sys  # noqa: E402
from collections import OrderedDict  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist_data import load  # noqa: E402

tiny = with_random_norms(nn.Sequential(OrderedDict([
    ("conv1", nn.Conv2d(1, 4, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(4)),
    ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
    ("conv2", nn.Conv2d(4, 8, 3)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
    ("flatten", nn.Flatten()), ("fc1", nn.Linear(288, 16)), ("relu3", nn.ReLU()),
    ("drop", nn.Dropout(0.5)), ("fc2", nn.Linear(16, 10))]))).eval()
_, _, xte, _ = load()
x = torch.tensor(xte[:32], dtype=torch.float32).unsqueeze(1) / 255
# a model trained on Normalize((0.2860,), (0.3530,)) inputs
xn = (x - 0.2860) / 0.3530
fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "fmnist",
                        "tests", "data")
os.makedirs(fixtures, exist_ok=True)
state = tiny.state_dict()
save_file({k: v.contiguous() for k, v in state.items()}, f"{fixtures}/torch_tiny.safetensors")
torch.save(state, f"{fixtures}/torch_tiny.pt")
torch.onnx.export(tiny, (xn[:2],), f"{fixtures}/torch_tiny.onnx", input_names=["x"],
                  output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},))
torch.onnx.export(tiny, (xn[:2],), f"{fixtures}/torch_tiny_legacy.onnx", input_names=["x"],
                  output_names=["logits"], dynamic_axes={"x": {0: "N"}}, dynamo=False)
with torch.no_grad():
    probs = torch.softmax(tiny(xn), 1)
save_file({"probabilities": probs.contiguous()}, f"{fixtures}/torch_tiny_probabilities.safetensors")
print(f"wrote the import fixtures in {os.path.normpath(fixtures)}")
