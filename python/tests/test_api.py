"""The Python API end to end on the real data: the README's example, agreement with the
command line, files shared with it, and every bad input raising an fmnist.Error."""

import json
import os
import pathlib
import signal
import time
import subprocess
import struct
import threading
import zlib

import numpy as np
import pytest

import fmnist

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = pathlib.Path(os.environ.get("FMNIST_BIN", ROOT / "target" / "release" / "fmnist"))


def write_png(path, gray):
    """A grayscale PNG of `gray` (uint8, H×W), written with the standard library."""
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[r].tobytes() for r in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def photo_of(image, path):
    """`image` as a photo would show it: dark on a light background, larger, off-centre."""
    big = np.kron(255 - image, np.ones((5, 5), np.uint8))
    canvas = np.full((200, 260), 250, np.uint8)
    canvas[30:170, 70:210] = big
    write_png(path, canvas)
    return path


@pytest.fixture(scope="session")
def data():
    return fmnist.load_data()


@pytest.fixture(scope="session")
def trained(data):
    """The `simple` network after one epoch on 12,000 images (shared by several tests)."""
    (x, y), _ = data
    fmnist.set_threads(2)
    model = fmnist.Model("simple")
    model.compile(optimizer="adam", lr=1e-3)
    history = model.fit(x[:12000], y[:12000], epochs=1, batch_size=128, validation_split=0.1,
                        seed=3, verbose=0)
    return model, history


def test_load_data_matches_keras_shapes(data):
    (x, y), (xt, yt) = data
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert fmnist.CLASS_NAMES[0] == "T-shirt/top" and fmnist.CLASS_NAMES[9] == "Ankle boot"


def test_summary_lists_layers_shapes_and_parameters(capsys):
    model = fmnist.Model("simple")
    model.summary()
    out = capsys.readouterr().out
    assert "(26, 26, 32)" in out and "18,496" in out and "225,034" in out
    assert model.count_params() == 225_034


def test_the_readme_workflow_trains_and_predicts(data, trained):
    _, (xt, yt) = data
    model, history = trained
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_accuracy"]) == 1 and history.epoch == [0]
    loss, acc = model.evaluate(xt, yt)
    assert acc > 0.75 and 0 < loss < 1.0
    report = model.evaluate(xt, yt, return_dict=True)
    assert report["accuracy"] == acc and len(report["per_class"]) == 10
    assert sum(map(sum, report["confusion"])) == 10000
    probs = model.predict(xt[:10])
    assert probs.shape == (10, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == model.predict(xt[:10].reshape(10, 28, 28, 1)).argmax(1)).all()


def test_float_images_in_0_1_give_the_uint8_results(data, trained):
    _, (xt, _) = data
    model, _ = trained
    np.testing.assert_array_equal(model.predict(xt[:50] / 255.0), model.predict(xt[:50]))


def test_same_model_as_the_command_line_for_the_same_seed_and_threads(tmp_path, data):
    (x, y), (xt, yt) = data
    fmnist.set_threads(2)
    model = fmnist.Model("simple")
    model.fit(x, y, epochs=1, validation_split=5000 / 60000, seed=7, verbose=0)
    out = tmp_path / "cli.safetensors"
    subprocess.run([str(CLI), "train", "--epochs", "1", "--seed", "7", "--threads", "2",
                    "--out", str(out)], check=True, capture_output=True)
    cli = fmnist.load_model(out)
    np.testing.assert_array_equal(cli.predict(xt), model.predict(xt))
    assert cli.evaluate(xt, yt)[1] == model.evaluate(xt, yt)[1]
    assert cli.info["training"]["val_accuracy"] == model.info["training"]["val_accuracy"]


def test_files_travel_between_python_and_the_command_line(tmp_path, data, trained):
    _, (xt, yt) = data
    model, _ = trained
    path = tmp_path / "py.safetensors"
    model.save(path)
    result = subprocess.run([str(CLI), "eval", str(path), "--json"], check=True,
                            capture_output=True, text=True)
    cli = json.loads(result.stdout)
    assert abs(cli["accuracy"] - model.evaluate(xt, yt)[1]) < 1e-12
    again = fmnist.load_model(path)
    np.testing.assert_array_equal(again.predict(xt[:200]), model.predict(xt[:200]))


def test_an_ensemble_from_the_command_line_loads_as_one_model(tmp_path, data):
    _, (xt, yt) = data
    out = tmp_path / "ensemble.safetensors"
    subprocess.run([str(CLI), "train", "--epochs", "1", "--limit", "2000", "--members", "2",
                    "--out", str(out)], check=True, capture_output=True)
    result = subprocess.run([str(CLI), "eval", str(out), "--json"], check=True,
                            capture_output=True, text=True)
    model = fmnist.load_model(out)
    assert model.info["networks"] == 2
    assert model.count_params() == 2 * 225_034
    assert abs(json.loads(result.stdout)["accuracy"] - model.evaluate(xt, yt)[1]) < 1e-12
    lines = []
    model.summary(print_fn=lines.append)
    assert "ensemble of 2 simple" in "\n".join(lines)


def test_predict_image_takes_the_command_lines_photo_path(tmp_path, data, trained):
    _, (xt, _) = data
    model, _ = trained
    photos = [photo_of(xt[i], tmp_path / f"photo{i}.png") for i in range(2)]
    one = model.predict_image(photos[0], top=3)
    assert one["class"] in fmnist.CLASS_NAMES and len(one["top"]) == 3
    assert one["probability"] == one["top"][0]["probability"]
    many = model.predict_image([str(p) for p in photos])
    assert [m["file"] for m in many] == [str(p) for p in photos]
    seen = model.preprocess_image(photos)
    assert seen.shape == (2, 28, 28) and seen.dtype == np.uint8 and seen.max() > 0
    # The photo path found the garment: light on black, centred, like the test image.
    assert seen[0, 0, 0] == 0 and seen[0, 10:18, 10:18].mean() > 40
    path = tmp_path / "m.safetensors"
    model.save(path)
    cli = subprocess.run([str(CLI), "predict", str(path), *map(str, photos), "--json"],
                         check=True, capture_output=True, text=True)
    want = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [w["class"] for w in want] == [m["class"] for m in many]
    assert [w["probability"] for w in want] == pytest.approx([m["probability"] for m in many], abs=1e-6)


def test_bf16_mixed_precision_is_one_compile_option(data, tmp_path):
    (x, y), (xt, yt) = data
    model = fmnist.Model("simple")
    try:
        model.compile(precision="bf16")
    except fmnist.Error as e:  # a CPU without bf16 instructions: one clear error
        assert "AVX512-BF16 or AMX-BF16" in str(e)
        assert model.recipe["precision"] == "fp32"
        return
    assert model.recipe["precision"].startswith("bf16-")
    model.fit(x[:6000], y[:6000], epochs=1, batch_size=128, seed=3, verbose=0)
    bf16 = model.predict(xt[:2000])
    bf16_accuracy = model.evaluate(xt[:2000], yt[:2000])[1]
    model.compile(precision="fp32")
    fp32 = model.predict(xt[:2000])
    # The same weights, operands rounded to 8 significant bits: close, not equal.
    assert 0 < np.abs(bf16 - fp32).max() < 0.1
    assert abs(bf16_accuracy - model.evaluate(xt[:2000], yt[:2000])[1]) <= 0.005
    assert (bf16.argmax(1) == yt[:2000]).mean() == pytest.approx(bf16_accuracy)
    # The file holds fp32 weights; a loaded model infers in fp32 until told otherwise.
    model.save(tmp_path / "m.safetensors")
    again = fmnist.load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(again.predict(xt[:2000]), fp32)


def test_presets_bring_their_recipe_and_compile_changes_it():
    model = fmnist.Model("fast")
    recipe = model.recipe
    assert recipe["epochs"] == 5 and recipe["flip_tta"] is True
    model.compile(lr=2e-3, schedule="cosine", label_smoothing=0.1, tta=False)
    assert model.recipe["lr"] == pytest.approx(2e-3) and model.recipe["flip_tta"] is False
    arch = fmnist.Model("simple").architecture
    assert fmnist.Model(arch).count_params() == 225_034
    assert fmnist.Model(json.dumps(arch)).count_params() == 225_034


def test_ctrl_c_or_a_raising_callback_stops_training_cleanly(data, trained):
    (x, y), (xt, _) = data
    model, _ = trained
    before = model.predict(xt[:20])
    steps = []

    def stop_after_three(event):
        if event["event"] == "step":
            steps.append(event["step"])
            if len(steps) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x[:6000], y[:6000], epochs=3, verbose=0, callback=stop_after_three)
    assert steps == [1, 2, 3]
    np.testing.assert_array_equal(model.predict(xt[:20]), before)


def test_a_real_ctrl_c_stops_training_within_a_step(data):
    (x, y), _ = data
    model = fmnist.Model("simple")
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, epochs=50, verbose=0)
    finally:
        timer.cancel()
    # Fifty epochs take minutes; the interrupt ends it at the next step.
    assert time.monotonic() - start < 20


def test_training_releases_the_gil(data):
    (x, y), _ = data
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.01)

    t = threading.Thread(target=tick)
    t.start()
    try:
        fmnist.Model("simple").fit(x[:3000], y[:3000], epochs=1, verbose=0)
    finally:
        done.set()
        t.join()
    assert len(ticks) > 5


BAD_IMAGES = [
    (np.zeros((3, 27, 28), np.uint8), "shape"),
    (np.zeros((28, 28), np.uint8), "one 28×28 image"),
    (np.zeros((0, 28, 28), np.uint8), "no images"),
    (np.full((2, 28, 28), 2.0), "0–1"),
    (np.full((2, 28, 28), np.nan), "NaN"),
    (np.full((2, 28, 28), 300, np.int32), "0–255"),
    (np.zeros((2, 28, 28), bool), "dtype"),
    (np.array(["a"] * 784 * 2).reshape(2, 28, 28), "dtype"),
    ("shirt.png", "predict_image"),
]


@pytest.mark.parametrize("x,says", BAD_IMAGES)
def test_bad_images_raise_one_clear_error(x, says):
    with pytest.raises(fmnist.InvalidInput, match=says):
        fmnist.Model("simple").predict(x)


@pytest.mark.parametrize("kwargs,says", [
    (dict(y=np.zeros(5, np.uint8)), "labels"),
    (dict(y=np.full(10, 10)), "0–9"),
    (dict(y=np.full(10, -1)), "0–9"),
    (dict(y=np.eye(10)), "one-hot"),
    (dict(y=np.full(10, 0.5)), "dtype"),
    (dict(epochs=0), "epochs"),
    (dict(epochs=2.5), "epochs"),
    (dict(batch_size=-1), "batch_size"),
    (dict(validation_split=1.0), "validation_split"),
    (dict(validation_split=0.01), "holds out none"),
    (dict(seed=-3), "seed"),
    (dict(callback=3), "callable"),
    (dict(batch_size=10**9), "batch"),
])
def test_bad_fit_arguments_raise_one_clear_error(kwargs, says):
    args = dict(x=np.zeros((10, 28, 28), np.uint8), y=np.zeros(10, np.uint8), verbose=0)
    args.update(kwargs)
    with pytest.raises(fmnist.Error, match=says):
        fmnist.Model("simple").fit(**args)


@pytest.mark.parametrize("arch,says", [
    ("no-such-model", "unknown model"),
    ("{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"warp\"}]}", "warp"),
    ({"input": [28, 28, 1], "layers": []}, "at least one layer"),
    ({"input": [28, 28, 1], "layers": [{"type": "linear", "units": 10**9}]}, "too many"),
    ("/no/such/arch.json", "arch.json"),
    (42, "name, a dict or JSON"),
])
def test_bad_architectures_raise_one_clear_error(arch, says):
    with pytest.raises(fmnist.Error, match=says):
        fmnist.Model(arch)


@pytest.mark.parametrize("kwargs,says", [
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(optimizer=object()), "optimizer"),
    (dict(schedule="step"), "schedule"),
    (dict(lr=-1.0), "learning rate|lr"),
    (dict(lr="fast"), "lr"),
    (dict(loss="mse"), "cross-entropy"),
    (dict(metrics=["auc"]), "accuracy"),
    (dict(label_smoothing=2.0), "smoothing"),
    (dict(flip="yes"), "True or False"),
    (dict(precision="bf8"), "precision"),
    (dict(precision=16), "precision"),
])
def test_bad_compile_options_raise_one_clear_error(kwargs, says):
    with pytest.raises(fmnist.Error, match=says):
        fmnist.Model("simple").compile(**kwargs)


def test_bad_files_raise_one_clear_error(tmp_path):
    with pytest.raises(fmnist.Error, match="no-such"):
        fmnist.load_model(tmp_path / "no-such.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 100)
    with pytest.raises(fmnist.Error, match="not a usable fmnist model"):
        fmnist.load_model(junk)
    with pytest.raises(fmnist.Error):
        fmnist.Model("simple").save(tmp_path / "missing-dir" / "m.safetensors")
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(fmnist.Error, match="fifo"):
        fmnist.load_model(fifo)
    with pytest.raises(fmnist.Error, match="fifo"):
        fmnist.Model("simple").predict_image(fifo)
    arch_fifo = tmp_path / "arch.json"
    os.mkfifo(arch_fifo)
    with pytest.raises(fmnist.Error, match="arch.json"):
        fmnist.Model(str(arch_fifo))
    bad_photo = tmp_path / "photo.jpg"
    bad_photo.write_bytes(b"not an image")
    with pytest.raises(fmnist.Error, match="photo.jpg"):
        fmnist.Model("simple").predict_image(bad_photo)
    with pytest.raises(fmnist.Error):
        fmnist.load_data(data_dir=tmp_path, offline=True)


def test_set_threads_refuses_nonsense():
    with pytest.raises(fmnist.InvalidInput):
        fmnist.set_threads(-1)
    fmnist.set_threads(1)
    assert fmnist.threads() == 1
    fmnist.set_threads(2)
