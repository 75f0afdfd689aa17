"""Models that travel, checked on all 10,000 test images (run through bench/interop.sh).

1. A trained `standard` model (trained here unless --standard names one) is exported with
   `fmnist export --onnx` and run by onnxruntime: its accuracy against `fmnist eval`'s,
   the images whose class differs, and the largest probability difference.
2. Exported then imported again (`fmnist import`), it must give the same probabilities.
3. The seed's CNN is trained by PyTorch (bench/torch_cnn.py, --epochs, default 2) and
   saved as a safetensors state_dict, a torch.save file and an ONNX graph
   (torch.onnx.export); each is imported, and `fmnist eval` must give PyTorch's accuracy
   to the image.
4. The same CNN trained by Keras (bench/keras_cnn.py, same epochs) and converted by
   tf2onnx is imported, and must give Keras' accuracy to the image.

Exits non-zero when an accuracy differs.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

import fmnist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist_data import load  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", default="target/release/fmnist")
p.add_argument("--out", default="target/interop")
p.add_argument("--standard", help="a trained model to export (default: train --preset standard)")
p.add_argument("--epochs", type=int, default=2, help="PyTorch training epochs")
a = p.parse_args()
a.out = os.path.abspath(a.out)
os.makedirs(a.out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))


def cli(*args):
    return subprocess.run([a.bin, *args], check=True, capture_output=True, text=True).stdout


def fmnist_eval(model):
    return json.loads(cli("eval", model, "--json", "--offline"))["accuracy"]


_, _, xte, yte = load()
pixels = xte[:, None].astype(np.float32) / 255
rows = []
failed = False


def row(what, want, got, p_want, p_got):
    global failed
    differ = int((p_want.argmax(1) != p_got.argmax(1)).sum())
    gap = float(np.abs(p_want - p_got).max())
    same = round(want * 10000) == round(got * 10000)
    failed |= not same
    rows.append((what, want, got, differ, gap, same))


# 1. fmnist -> ONNX -> onnxruntime
standard = a.standard
if not standard:
    standard = f"{a.out}/standard.safetensors"
    print("training the standard preset ...", flush=True)
    cli("train", "--preset", "standard", "--out", standard, "--offline")
exported = f"{a.out}/standard.onnx"
cli("export", standard, "--onnx", exported)
onnx.checker.check_model(onnx.load(exported), full_check=True)
session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
p_ort = session.run(None, {"pixels": pixels})[0]
p_fmnist = fmnist.load_model(standard).predict(xte)
acc = fmnist_eval(standard)
row("fmnist `standard` → ONNX → onnxruntime " + ort.__version__, acc,
    float((p_ort.argmax(1) == yte).mean()), p_fmnist, p_ort)

# 2. round trip
back = f"{a.out}/standard-back.safetensors"
cli("import", exported, "--out", back)
row("fmnist `standard` → ONNX → fmnist import", acc, fmnist_eval(back), p_fmnist,
    fmnist.load_model(back).predict(xte))

# 3. PyTorch -> fmnist
torch_dir = f"{a.out}/torch"
print(f"training the seed's CNN in PyTorch for {a.epochs} epochs ...", flush=True)
subprocess.run([sys.executable, f"{here}/torch_cnn.py", str(a.epochs), "--save", torch_dir],
               check=True, cwd=here, stdout=subprocess.DEVNULL)
result = json.load(open(f"{torch_dir}/result.json"))
p_torch = np.load(f"{torch_dir}/probabilities.npy")
for name, extra in [("model.safetensors", ["--model", "simple"]),
                    ("model.pt", ["--model", "simple"]),
                    ("model.onnx", [])]:
    dst = f"{a.out}/torch-{name.replace('.', '-')}.safetensors"
    cli("import", f"{torch_dir}/{name}", "--out", dst, *extra)
    row(f"PyTorch {result['torch']} {name} → fmnist import", result["accuracy"],
        fmnist_eval(dst), p_torch, fmnist.load_model(dst).predict(xte))

# 4. Keras -> tf2onnx -> fmnist
keras_dir = f"{a.out}/keras"
print(f"training the seed's CNN in Keras for {a.epochs} epochs ...", flush=True)
subprocess.run([sys.executable, f"{here}/keras_cnn.py", str(a.epochs), "--save", keras_dir],
               check=True, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
result = json.load(open(f"{keras_dir}/result.json"))
dst = f"{a.out}/keras-model-onnx.safetensors"
cli("import", f"{keras_dir}/model.onnx", "--out", dst)
row(f"Keras {result['keras']} → tf2onnx {result['tf2onnx']} → fmnist import", result["accuracy"],
    fmnist_eval(dst), np.load(f"{keras_dir}/probabilities.npy"),
    fmnist.load_model(dst).predict(xte))

print()
print("| path | source accuracy | fmnist / runtime accuracy | images classed differently | largest probability difference |")
print("|---|---:|---:|---:|---:|")
for what, want, got, differ, gap, same in rows:
    mark = "" if same else " **differs**"
    print(f"| {what} | {want * 100:.2f} % | {got * 100:.2f} %{mark} | {differ} | {gap:.1e} |")
sys.exit(1 if failed else 0)
