"""Keras reference for `fmnist bench`: the seed's CNN and recipe (as keras_cnn.py), timed the
way `fmnist bench --json` times fmnist, printing one JSON object. Training uses Keras' own
compiled train step (`fit`), inference `predict_on_batch`, latency a compiled call on one image.
Usage: keras_bench.py [BATCHES] [BATCH_SIZE] [POLICY]
POLICY is Keras' dtype policy: float32 (default) or mixed_bfloat16, the one line
`keras.mixed_precision.set_global_policy("mixed_bfloat16")` (bf16 compute, fp32 weights)."""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np, tensorflow as tf
from keras import layers
from fmnist_data import load

keras.utils.set_random_seed(42)
batches = int(sys.argv[1]) if len(sys.argv) > 1 else 100
bs = int(sys.argv[2]) if len(sys.argv) > 2 else 128
policy = sys.argv[3] if len(sys.argv) > 3 else "float32"
keras.mixed_precision.set_global_policy(policy)
xtr, ytr, xte, yte = load()
xtr = (xtr.astype("float32") / 255)[..., None]
xte = (xte.astype("float32") / 255)[..., None]
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5), layers.Dense(10)])
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.seconds = time.perf_counter() - self.start

n = batches * bs
model.fit(xtr[:5 * bs], ytr[:5 * bs], batch_size=bs, epochs=1, verbose=0)  # warm-up, compiles
timer = Timer()
model.fit(xtr[:n], ytr[:n], batch_size=bs, epochs=1, verbose=0, callbacks=[timer], shuffle=True)
train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

model.predict_on_batch(xte[:1000])
start = time.perf_counter()
for s in range(0, 10000, 1000): tf.nn.softmax(model.predict_on_batch(xte[s:s + 1000]))
eval_s = time.perf_counter() - start

@tf.function(jit_compile=False)
def one(x): return tf.nn.softmax(model(x, training=False))
lat = []
for i in range(2050):
    x = xte[i % 10000:i % 10000 + 1]
    start = time.perf_counter(); one(x).numpy()
    if i >= 50: lat.append((time.perf_counter() - start) * 1e3)
lat.sort()
bf16 = policy == "mixed_bfloat16"
print(json.dumps({"tool": "keras-bf16" if bf16 else "keras",
    "label": f"Keras {keras.__version__} {policy}",
    "precision": "bf16" if bf16 else "fp32", "threads": os.cpu_count(),
    "train_images_per_s": n / timer.seconds, "eval_images_per_s": 10000 / eval_s,
    "predict_p50_ms": lat[len(lat) // 2], "predict_p99_ms": lat[int(0.99 * (len(lat) - 1))],
    "train_peak_rss_mb": train_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
