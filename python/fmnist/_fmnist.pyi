"""Types of the compiled module; use the `fmnist` package, which checks and shapes
arrays before they reach it."""

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

VERSION: str
CLASS_NAMES: List[str]

class Error(Exception): ...

def load_data(
    data_dir: Optional[str], offline: bool
) -> Tuple[
    Tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    Tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
]: ...
def set_threads(threads: int) -> None: ...
def threads() -> int: ...

class Engine:
    def __init__(self, arch: str) -> None: ...
    @staticmethod
    def load(path: str) -> "Engine": ...
    def save(self, path: str) -> None: ...
    def summary(self) -> str: ...
    def count_params(self) -> int: ...
    def architecture(self) -> str: ...
    def recipe(self) -> str: ...
    def info(self) -> str: ...
    def compile(
        self,
        optimizer: Optional[str] = None,
        lr: Optional[float] = None,
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
    ) -> None: ...
    def fit(
        self,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.uint8],
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        val_size: int = 0,
        seed: Optional[int] = None,
        callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> List[Dict[str, Any]]: ...
    def predict(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]: ...
    def evaluate(
        self, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]
    ) -> Tuple[float, float, str]: ...
    def predict_images(self, paths: List[str], top: int) -> str: ...
    def preprocess_images(self, paths: List[str]) -> npt.NDArray[np.uint8]: ...
