"""The classic Fashion-MNIST course assignment, written against fmnist's Python API.

Run it with `python python/examples/assignment.py` after `pip install ./python`; add
`--epochs N` for a shorter run. It loads the data, looks at it, defines and trains the
seed's CNN, plots the training curves, evaluates on the test set and predicts new images.
Plots need matplotlib (`pip install matplotlib`); without it they are skipped.
"""

import argparse

import numpy as np

import fmnist

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=12)
parser.add_argument("--plot", default="assignment-history.png")
args = parser.parse_args()

# 1. Load the data: uint8 arrays, as keras.datasets.fashion_mnist.load_data() gives.
(x_train, y_train), (x_test, y_test) = fmnist.load_data()
print(f"train {x_train.shape}, test {x_test.shape}; classes: {', '.join(fmnist.CLASS_NAMES)}")

# 2. Scale to 0–1, as the assignment does (fmnist takes uint8 0–255 as well).
x_train, x_test = x_train / 255.0, x_test / 255.0

# 3. The assignment's network: Conv 32 3×3, pool, Conv 64 3×3, pool, Dense 128, Dropout, 10.
model = fmnist.Model("simple")
model.summary()

# 4. Compile: Adam, cross-entropy, accuracy (the assignment's constant learning rate).
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
              metrics=["accuracy"], learning_rate=1e-3, schedule="constant")

# 5. Fit, holding out 10 % for validation.
history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, validation_split=0.1)

# 6. Plot the curves.
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [e + 1 for e in history.epoch]
    left.plot(epochs, history.history["loss"], label="train")
    left.plot(epochs, history.history["val_loss"], label="validation")
    left.set_title("loss")
    right.plot(epochs, history.history["accuracy"], label="train")
    right.plot(epochs, history.history["val_accuracy"], label="validation")
    right.set_title("accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.savefig(args.plot, dpi=100, bbox_inches="tight")
    print(f"curves drawn in {args.plot}")
except ImportError:
    print("matplotlib is not installed: no plot")

# 7. Evaluate on the test set.
loss, accuracy = model.evaluate(x_test, y_test)
print(f"test loss {loss:.4f}, test accuracy {100 * accuracy:.2f} %")
report = model.evaluate(x_test, y_test, return_dict=True)
for row in report["per_class"]:
    print(f"  {row['class']:<12} recall {100 * row['recall']:5.1f} %")

# 8. Predict new images.
probs = model.predict(x_test[:10])
for p, label in zip(probs, y_test[:10]):
    guess = int(np.argmax(p))
    print(f"  predicted {fmnist.CLASS_NAMES[guess]:<12} ({100 * p[guess]:5.1f} %), "
          f"true {fmnist.CLASS_NAMES[label]}")

model.save("assignment-model.safetensors")
print("saved assignment-model.safetensors (fmnist eval / predict / serve take it)")
