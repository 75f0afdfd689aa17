"""Import fixture from Keras, for crates/fmnist/tests/interop.rs (run only to regenerate;
needs the references' environment from bench/setup_anchors.sh plus tf2onnx):

    ~/.cache/fmnist-anchors/bin/python bench/keras_reference.py

A small channels-last Keras CNN with batch norm (random statistics, so they matter),
converted by tf2onnx as Keras users do (`tf2onnx.convert.from_function`; `from_keras`
does not yet work with Keras 3), and Keras' probabilities on the first 32 test images.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmnist_data import load  # noqa: E402

keras.utils.set_random_seed(20261202)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Flatten(),
    keras.layers.Dense(16, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
rng = np.random.default_rng(1)
bn = model.layers[1]
bn.set_weights([1 + 0.3 * rng.standard_normal(4), 0.3 * rng.standard_normal(4),
                0.2 * rng.standard_normal(4), 0.5 + rng.random(4)])
_, _, xte, _ = load()
x = (xte[:32, :, :, None] / 255.0).astype(np.float32)
probs = model.predict(x, verbose=0)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "fmnist", "tests",
                   "data")
spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="x"),)
fn = tf.function(lambda t: model(t, training=False))
tf2onnx.convert.from_function(fn, input_signature=spec, opset=13,
                              output_path=f"{out}/keras_tiny.onnx")
save_file({"probabilities": probs.astype(np.float32)}, f"{out}/keras_tiny_probabilities.safetensors")
print(f"wrote keras_tiny.onnx and its probabilities in {os.path.normpath(out)} (Keras "
      f"{keras.__version__}, tf2onnx {tf2onnx.__version__})")
