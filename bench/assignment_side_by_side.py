"""The seed assignment in Keras and in fmnist's Python API, side by side in one run:
the same network (Conv 32 3×3, pool, Conv 64 3×3, pool, Dense 128, Dropout 0.5, Dense 10),
Adam 1e-3 at a constant rate, batch 128, 10 % held out for validation, the same epochs;
prints the wall time of load + fit + evaluate and the test accuracy of each.

    python bench/assignment_side_by_side.py [--epochs 12] [--keras-python PY] [--fmnist-python PY]

Each framework runs in its own process: Keras in the references' environment
(bench/setup_anchors.sh makes it; default ~/.cache/fmnist-anchors/bin/python), fmnist in
one where `pip install ./python` was run (default: this interpreter).
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

KERAS = textwrap.dedent("""
    import os, sys, time, json
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    import keras
    from keras import layers
    keras.utils.set_random_seed(42)
    # keras.datasets downloads; this machine has the Debian package's files instead.
    sys.path.insert(0, os.path.join(os.environ["FMNIST_ROOT"], "bench"))
    from fmnist_data import load
    x_train, y_train, x_test, y_test = load()
    x_train, x_test = x_train[..., None] / 255.0, x_test[..., None] / 255.0
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=int(sys.argv[1]), batch_size=128,
              validation_split=0.1, verbose=0)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"name": f"Keras {keras.__version__} ({keras.backend.backend()})",
                      "seconds": time.perf_counter() - start, "accuracy": acc}))
""")

FMNIST = textwrap.dedent("""
    import sys, time, json
    start = time.perf_counter()
    import fmnist
    (x_train, y_train), (x_test, y_test) = fmnist.load_data()
    x_train, x_test = x_train / 255.0, x_test / 255.0
    model = fmnist.Model("simple")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], learning_rate=1e-3, schedule="constant")
    model.fit(x_train, y_train, epochs=int(sys.argv[1]), batch_size=128,
              validation_split=0.1, verbose=0)
    _, acc = model.evaluate(x_test, y_test)
    print(json.dumps({"name": f"fmnist {fmnist.__version__} (Python)",
                      "seconds": time.perf_counter() - start, "accuracy": acc}))
""")


def run(python, code, epochs):
    env = dict(os.environ, FMNIST_ROOT=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([python, "-c", code, str(epochs)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--keras-python",
                   default=os.path.expanduser("~/.cache/fmnist-anchors/bin/python"))
    p.add_argument("--fmnist-python", default=sys.executable)
    a = p.parse_args()
    rows = [run(a.keras_python, KERAS, a.epochs), run(a.fmnist_python, FMNIST, a.epochs)]
    print(f"the seed assignment, {a.epochs} epochs (load, fit, evaluate)")
    for r in rows:
        print(f"{r['name']:<32} {r['seconds']:8.1f} s   test accuracy {100 * r['accuracy']:.2f} %")
    print(f"fmnist / Keras wall time: {rows[1]['seconds'] / rows[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
