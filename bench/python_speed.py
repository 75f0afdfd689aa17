"""Training speed from Python against the command line's, measured in one run on the same
machine: `fmnist bench` (the CLI's yardstick) and a timed `Model.fit` of one epoch of
the `simple` network, alternating, three rounds each; prints the medians and the ratio.

    python bench/python_speed.py [--rounds 3] [--bin target/release/fmnist]
"""

import argparse
import json
import statistics
import subprocess
import time

import fmnist

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--bin", default="target/release/fmnist")
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()

fmnist.set_threads(a.threads)
(x, y), _ = fmnist.load_data()
cli, py = [], []
for _ in range(a.rounds):
    out = subprocess.run([a.bin, "bench", "--json", "--threads", str(fmnist.threads())],
                         check=True, capture_output=True, text=True).stdout
    cli.append(json.loads(out)["train_images_per_s"])
    model = fmnist.Model("simple")
    start = time.perf_counter()
    h = model.fit(x, y, epochs=1, validation_split=5000 / 60000, verbose=0)
    py.append(h.history["images_per_s"][0])
    wall = time.perf_counter() - start
print(f"threads {fmnist.threads()}, {a.rounds} rounds (medians)")
print(f"fmnist bench (CLI)    train {statistics.median(cli):8,.0f} img/s")
print(f"Model.fit (Python)    train {statistics.median(py):8,.0f} img/s  (last fit {wall:.1f} s)")
print(f"Python / CLI          {statistics.median(py) / statistics.median(cli):.3f}")
