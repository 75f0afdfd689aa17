"""fmnist for Python: the Keras workflow on fmnist's Rust engine.

    import fmnist
    (x_train, y_train), (x_test, y_test) = fmnist.load_data()
    model = fmnist.Model("simple")
    model.compile(optimizer="adam", lr=1e-3)
    history = model.fit(x_train, y_train, epochs=5, batch_size=128, validation_split=0.1)
    model.evaluate(x_test, y_test)
    probs = model.predict(x_test[:10])

The work is done by the same Rust library as the ``fmnist`` command: a model trained here
is the model ``fmnist train`` makes for the same seed and thread count, and the files are
the same files.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _fmnist
from ._progress import ProgressBar

__all__ = [
    "CLASS_NAMES",
    "Error",
    "InvalidInput",
    "History",
    "Model",
    "load_data",
    "load_model",
    "set_threads",
    "threads",
    "__version__",
]

__version__: str = _fmnist.VERSION
#: The ten classes, in label order.
CLASS_NAMES: List[str] = list(_fmnist.CLASS_NAMES)


class Error(_fmnist.Error):
    """Every error fmnist raises derives from this one.

    Errors from the engine (a missing data file, an unusable model file, a recipe it
    cannot train) are raised as ``fmnist.Error`` itself.
    """


class InvalidInput(Error, ValueError):
    """An argument fmnist cannot use: an array of the wrong shape, type or range, an
    unknown option."""


PathLike = Union[str, "os.PathLike[str]"]


def set_threads(n: int) -> None:
    """Sets the worker threads for training and inference (0: one per core, the
    default). The same count as ``fmnist train --threads N`` gives the same model."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise InvalidInput(f"threads must be a non-negative integer, not {n!r}")
    _fmnist.set_threads(int(n))


def threads() -> int:
    """The worker threads calls run on."""
    return _fmnist.threads()


def load_data(
    data_dir: Optional[PathLike] = None, offline: bool = False
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``keras.datasets.fashion_mnist.load_data()`` gives it:
    ``(x_train, y_train), (x_test, y_test)``, uint8 arrays of shapes ``(60000, 28, 28)``,
    ``(60000,)``, ``(10000, 28, 28)``, ``(10000,)``.

    The files are found (``data_dir``, ``$FMNIST_DATA``, the cache, Debian's
    ``dataset-fashion-mnist``) or downloaded and verified, as ``fmnist data`` does;
    ``offline=True`` never downloads.
    """
    return _wrap(lambda: _fmnist.load_data(None if data_dir is None else os.fspath(data_dir), bool(offline)))


def _images(x: Any, name: str = "x") -> np.ndarray:
    """`x` as a C-contiguous uint8 array of shape (N, 28, 28): uint8 0–255 as it is
    (no copy when already so), floats 0–1 scaled and rounded."""
    if isinstance(x, (str, bytes, os.PathLike)):
        raise InvalidInput(f"{name} must be an array of images; for image files use predict_image")
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and other objects numpy cannot take
        raise InvalidInput(f"{name} is not an array of images ({e})") from None
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2 and a.shape == (28, 28):
        raise InvalidInput(f"{name} is one 28×28 image: give a batch, x[None] or x[i:i+1]")
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise InvalidInput(
            f"{name} has shape {a.shape}: expected (N, 28, 28) or (N, 28, 28, 1) images"
        )
    if a.shape[0] == 0:
        raise InvalidInput(f"{name} holds no images")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_ or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise InvalidInput(f"{name} has dtype {a.dtype}: expected uint8 0–255 or float 0–1")
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise InvalidInput(f"{name} has values {lo}…{hi}: integer pixels must be 0–255")
        return np.ascontiguousarray(a, dtype=np.uint8)
    if not np.all(np.isfinite(a)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidInput(
            f"{name} has values {lo:g}…{hi:g}: float pixels must be 0–1 "
            "(divide 0–255 images by 255, or pass them as uint8)"
        )
    return np.ascontiguousarray(np.rint(a * 255.0), dtype=np.uint8)


def _labels(y: Any, n: int, classes: int, name: str = "y") -> np.ndarray:
    try:
        a = np.asarray(y)
    except Exception as e:
        raise InvalidInput(f"{name} is not an array of labels ({e})") from None
    if a.ndim == 2 and a.shape[1] == classes and n > 0:
        raise InvalidInput(
            f"{name} looks one-hot {a.shape}: give class numbers 0–{classes - 1} "
            f"(np.argmax({name}, axis=1))"
        )
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InvalidInput(f"{name} has shape {a.shape}: expected ({n},) class numbers")
    if a.shape[0] != n:
        raise InvalidInput(f"{n} images but {a.shape[0]} labels")
    if not np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.rint(a)):
            a = a.astype(np.int64)
        else:
            raise InvalidInput(f"{name} has dtype {a.dtype}: expected integer class numbers")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= classes):
        raise InvalidInput(
            f"{name} has labels {int(a.min())}…{int(a.max())}: classes are 0–{classes - 1}"
        )
    return np.ascontiguousarray(a, dtype=np.uint8)


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidInput(f"{name} must be a positive integer, not {v!r}")
    return int(v)


class History:
    """What ``Model.fit`` returns, as in Keras: ``history.history["val_accuracy"]`` is a
    list with one value per epoch (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
    ``lr``, ``seconds``, ``images_per_s``); ``history.epoch`` the epoch numbers from 0."""

    def __init__(self, records: Sequence[Mapping[str, Any]]):
        keys = ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"]
        self.epoch: List[int] = [int(r["epoch"]) - 1 for r in records]
        self.history: Dict[str, List[float]] = {k: [float(r[k]) for r in records] for k in keys}

    def __repr__(self) -> str:
        return f"<fmnist.History {len(self.epoch)} epochs: {', '.join(self.history)}>"


_COMPILE_KEYS = (
    "optimizer", "lr", "schedule", "weight_decay", "label_smoothing", "shift", "flip",
    "erase", "ema", "patience", "tta",
)


class Model:
    """A convolutional network for 28×28 grayscale images, trained by fmnist's engine.

    ``arch`` is a built-in model (``"simple"``, the assignment's network; ``"simple-bn"``,
    ``"cnn-bn"``, ``"resnet-small"``, ``"resnet9"``), a preset (``"fast"``, ``"standard"``,
    ``"best"``, ``"photo"``: a model with its whole recipe), an architecture as a dict or JSON text (the
    format of ``fmnist train --arch``), or the path of such a ``.json`` file.
    """

    def __init__(self, arch: Union[str, Mapping[str, Any]] = "simple"):
        if isinstance(arch, Mapping):
            try:
                arch = json.dumps(arch)
            except (TypeError, ValueError) as e:
                raise InvalidInput(f"the architecture is not JSON data ({e})") from None
        elif isinstance(arch, os.PathLike):
            arch = os.fspath(arch)
        if not isinstance(arch, str):
            raise InvalidInput(f"arch must be a name, a dict or JSON text, not {type(arch).__name__}")
        self._engine = _wrap(lambda: _fmnist.Engine(arch))

    @classmethod
    def _from_engine(cls, engine: Any) -> "Model":
        m = cls.__new__(cls)
        m._engine = engine
        return m

    # -- define ---------------------------------------------------------------------

    def summary(self, print_fn: Any = print) -> None:
        """Prints the layers with their output shapes and parameters, as Keras does."""
        print_fn(self._engine.summary().rstrip("\n"))

    def count_params(self) -> int:
        """Trained parameters."""
        return self._engine.count_params()

    @property
    def architecture(self) -> Dict[str, Any]:
        """The architecture, as ``fmnist train --arch`` takes it."""
        return json.loads(self._engine.architecture())

    @property
    def recipe(self) -> Dict[str, Any]:
        """The training recipe ``fit`` uses (set by the preset and ``compile``)."""
        return json.loads(self._engine.recipe())

    @property
    def info(self) -> Dict[str, Any]:
        """Class names, input normalisation and how the model was trained."""
        return json.loads(self._engine.info())

    @property
    def classes(self) -> List[str]:
        """Class names in label order."""
        return list(self.info["classes"])

    def compile(
        self,
        optimizer: Optional[str] = None,
        loss: Optional[str] = None,
        metrics: Optional[Sequence[str]] = None,
        lr: Optional[float] = None,
        learning_rate: Optional[float] = None,
        schedule: Optional[str] = None,
        weight_decay: Optional[float] = None,
        label_smoothing: Optional[float] = None,
        shift: Optional[int] = None,
        flip: Optional[bool] = None,
        erase: Optional[float] = None,
        ema: Optional[float] = None,
        patience: Optional[int] = None,
        tta: Optional[bool] = None,
        precision: Optional[str] = None,
    ) -> None:
        """Sets the recipe, with the options of ``fmnist train``: ``optimizer`` ("adam",
        "adamw", "sgd"), ``lr`` (or Keras' ``learning_rate``), ``schedule`` ("constant",
        "cosine", "one-cycle"), ``weight_decay``, ``label_smoothing``, ``shift`` (pixels),
        ``flip``, ``erase`` (probability), ``ema`` (decay), ``patience`` (epochs), ``tta``
        and ``precision`` ("fp32", or "bf16" mixed precision on CPUs with bf16
        instructions, like Keras' ``mixed_bfloat16`` policy: for ``fit``, ``predict`` and
        ``evaluate``; the saved model stays fp32). Settings not given keep their value.
        ``loss`` and ``metrics`` are accepted for Keras code: fmnist always trains with
        cross-entropy and reports accuracy.
        """
        if loss is not None and loss not in (
            "sparse_categorical_crossentropy", "categorical_crossentropy", "crossentropy",
            "cross_entropy",
        ):
            raise InvalidInput(f"loss {loss!r}: fmnist trains with cross-entropy only")
        if metrics is not None:
            if isinstance(metrics, str):
                metrics = [metrics]
            unknown = [m for m in metrics if m not in ("accuracy", "acc", "sparse_categorical_accuracy")]
            if unknown:
                raise InvalidInput(f"metrics {unknown}: fmnist reports loss and accuracy")
        if lr is not None and learning_rate is not None and lr != learning_rate:
            raise InvalidInput("give lr or learning_rate, not both")
        if learning_rate is not None:
            lr = learning_rate
        if optimizer is not None and not isinstance(optimizer, str):
            raise InvalidInput(
                f"optimizer must be a name (\"adam\", \"adamw\", \"sgd\"), not {type(optimizer).__name__}"
            )
        for name, v in (("lr", lr), ("weight_decay", weight_decay), ("label_smoothing", label_smoothing),
                        ("erase", erase), ("ema", ema)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
                raise InvalidInput(f"{name} must be a number, not {v!r}")
        for name, v in (("shift", shift), ("patience", patience)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise InvalidInput(f"{name} must be a non-negative integer, not {v!r}")
        if precision is not None and not isinstance(precision, str):
            raise InvalidInput(f"precision must be a name (\"fp32\", \"bf16\"), not {precision!r}")
        for name, v in (("flip", flip), ("tta", tta)):
            if v is not None and not isinstance(v, (bool, np.bool_)):
                raise InvalidInput(f"{name} must be True or False, not {v!r}")
        _wrap(lambda: self._engine.compile(
            optimizer=optimizer, lr=lr, schedule=schedule, weight_decay=weight_decay,
            label_smoothing=label_smoothing, shift=shift, flip=flip, erase=erase, ema=ema,
            patience=patience, tta=tta, precision=precision,
        ))

    # -- fit ------------------------------------------------------------------------

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        validation_split: float = 0.0,
        seed: Optional[int] = None,
        verbose: Union[int, bool] = 1,
        callback: Any = None,
    ) -> History:
        """Trains on images ``x`` and labels ``y`` and returns the ``History``.

        As ``fmnist train`` does: training starts from the initialisation drawn from
        ``seed`` (the recipe's, 42 unless changed), a seeded random ``validation_split``
        of the images is held out, and the epoch with the best validation accuracy is
        kept (the last one without a split). ``epochs`` and ``batch_size`` default to the
        recipe's. The GIL is released while training; Ctrl-C (or an exception from
        ``callback``, called with a dict after every step and epoch) stops it cleanly
        before the next step, raising ``KeyboardInterrupt`` and leaving the model as it was.
        ``verbose``: 0 silent, 1 a progress bar and a line per epoch, 2 a line per epoch.
        """
        images = _images(x, "x")
        labels = _labels(y, images.shape[0], len(CLASS_NAMES))
        if epochs is not None:
            epochs = _positive_int(epochs, "epochs")
        if batch_size is not None:
            batch_size = _positive_int(batch_size, "batch_size")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InvalidInput(f"seed must be a non-negative integer, not {seed!r}")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.number)) \
                or not 0.0 <= float(validation_split) < 1.0:
            raise InvalidInput(f"validation_split must be a fraction in [0, 1), not {validation_split!r}")
        val_size = int(round(float(validation_split) * images.shape[0]))
        if validation_split > 0 and val_size == 0:
            raise InvalidInput(f"validation_split {validation_split} of {images.shape[0]} images holds out none")
        if val_size >= images.shape[0]:
            raise InvalidInput("validation_split leaves no training images")
        if callback is not None and not callable(callback):
            raise InvalidInput("callback must be callable")
        bar = ProgressBar(verbose) if verbose else None

        def report(event: Dict[str, Any]) -> None:
            if bar is not None:
                bar(event)
            if callback is not None:
                callback(event)

        try:
            records = _wrap(lambda: self._engine.fit(
                images, labels, epochs=epochs, batch_size=batch_size, val_size=val_size,
                seed=None if seed is None else int(seed), callback=report,
            ), arguments=False)
        finally:
            if bar is not None:
                bar.close()
        return History(records)

    # -- evaluate and predict -----------------------------------------------------------

    def evaluate(self, x: Any, y: Any, return_dict: bool = False, verbose: int = 0) -> Any:
        """Loss and accuracy on images ``x`` and labels ``y``: ``[loss, accuracy]`` as in
        Keras, or with ``return_dict=True`` a dict with ``loss``, ``accuracy`` and the
        report of ``fmnist eval``: ``per_class`` (precision, recall, F1, support) and
        ``confusion`` (``confusion[true][predicted]``). ``verbose=1`` prints the figures."""
        images = _images(x, "x")
        labels = _labels(y, images.shape[0], len(self.classes))
        loss, accuracy, report = _wrap(lambda: self._engine.evaluate(images, labels))
        if verbose:
            print(f"loss {loss:.4f}  accuracy {100 * accuracy:.2f} % ({images.shape[0]:,} images)")
        if return_dict:
            return json.loads(report)
        return [loss, accuracy]

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: int = 0) -> np.ndarray:
        """Class probabilities of images ``x``: a float32 array ``(N, 10)``, rows summing to
        1 (``batch_size`` and ``verbose`` are accepted for Keras code and change nothing)."""
        images = _images(x, "x")
        return _wrap(lambda: self._engine.predict(images))

    def predict_image(
        self, path: Union[PathLike, Sequence[PathLike]], top: int = 3
    ) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Classifies photos (PNG, JPEG, GIF, BMP, WebP) through ``fmnist predict``'s path:
        the garment found, cropped, centred and inverted to light-on-black 28×28. Returns
        ``{"file", "class", "label", "probability", "top": [{"class", "label",
        "probability"}, ...]}``, or a list of them for a list of paths."""
        many = not isinstance(path, (str, bytes, os.PathLike))
        paths = [os.fspath(p) for p in (path if many else [path])]
        if not paths:
            raise InvalidInput("no image files given")
        top = _positive_int(top, "top")
        out = json.loads(_wrap(lambda: self._engine.predict_images(paths, top)))
        return out if many else out[0]

    def preprocess_image(self, path: Union[PathLike, Sequence[PathLike]]) -> np.ndarray:
        """What the model sees of photos: their 28×28 inputs, uint8 ``(N, 28, 28)``.

        A photo's object wider than the dataset's tops is also seen narrower, and those
        views answer together with it where they read as a top (``predict_image`` says
        ``"narrow": true``); this returns the object as it is.
        """
        many = not isinstance(path, (str, bytes, os.PathLike))
        paths = [os.fspath(p) for p in (path if many else [path])]
        if not paths:
            raise InvalidInput("no image files given")
        return _wrap(lambda: self._engine.preprocess_images(paths))

    # -- files --------------------------------------------------------------------------

    def save(self, path: PathLike) -> None:
        """Writes the model file (safetensors with the architecture, classes and training
        summary), atomically: ``fmnist eval``, ``predict`` and ``serve`` take it."""
        _wrap(lambda: self._engine.save(os.fspath(path)))

    def __repr__(self) -> str:
        return f"<fmnist.Model {self.count_params():,} parameters>"


def load_model(path: PathLike) -> Model:
    """A model file written by ``Model.save`` or ``fmnist train``."""
    return Model._from_engine(_wrap(lambda: _fmnist.Engine.load(os.fspath(path))))


def _wrap(call: Any, arguments: bool = True) -> Any:
    """Runs `call`, raising the engine's errors as the package's: a bad argument as
    `InvalidInput` (unless `arguments` is false: then errors from the user's own
    callback pass through as raised), anything else as `Error`. Both are `fmnist.Error`."""
    try:
        return call()
    except Error:
        raise
    except _fmnist.Error as e:
        raise Error(str(e)) from None
    except (TypeError, OverflowError) as e:
        if not arguments:
            raise
        raise InvalidInput(str(e)) from None
