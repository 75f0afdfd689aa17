"""The progress display of ``Model.fit``: a bar redrawn in place in a terminal, a
display that updates itself in Jupyter, one line per epoch in both (as Keras prints)."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(total, 1)
    return "━" * filled + ("╸" if filled < width else "") + " " * max(width - filled - 1, 0)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    return f"{m}m {s:02d}s" if m else f"{s}s"


class ProgressBar:
    """Called with each event dict of the engine; ``verbose`` 1 draws the bar, 2 prints
    only the epoch lines."""

    def __init__(self, verbose: int = 1, stream: Any = None, min_interval: float = 0.1):
        self.verbose = int(verbose)
        self.stream = stream if stream is not None else sys.stdout
        self.notebook = _in_notebook()
        self.min_interval = min_interval
        self.last_draw = 0.0
        self.started = time.monotonic()
        self.handle: Optional[Any] = None
        self.drawn = False

    def __call__(self, e: Dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "epoch_start":
            self.started = time.monotonic()
            self.handle = None
        elif kind == "step" and self.verbose == 1:
            now = time.monotonic()
            if e["step"] == e["steps"] or now - self.last_draw >= self.min_interval:
                self.last_draw = now
                elapsed = now - self.started
                eta = elapsed / e["step"] * (e["steps"] - e["step"])
                width = len(str(e["steps"]))
                self._draw(
                    f"epoch {e['epoch']}/{e['epochs']} {_bar(e['step'], e['steps'])} "
                    f"{e['step']:>{width}}/{e['steps']}  loss {e['loss']:.4f}  "
                    f"acc {100 * e['accuracy']:6.2f} %  {e['images_per_s']:,.0f} img/s  "
                    f"ETA {_duration(eta)}"
                )
        elif kind == "epoch_end":
            val = ""
            if e["val_accuracy"] == e["val_accuracy"]:  # not NaN
                val = f"  val loss {e['val_loss']:.4f} acc {100 * e['val_accuracy']:6.2f} %"
            self._draw(
                f"epoch {e['epoch']}/{e['epochs']}  loss {e['loss']:.4f} acc "
                f"{100 * e['accuracy']:6.2f} %{val}  {e['seconds']:.1f} s  "
                f"{e['images_per_s']:,.0f} img/s",
                final=True,
            )

    def _draw(self, line: str, final: bool = False) -> None:
        if self.notebook:
            from IPython.display import display  # type: ignore

            if self.handle is None:
                self.handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": line}, raw=True)
            if final:
                self.handle = None
            return
        if self.verbose == 1 and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.drawn = not final
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends a bar left mid-line (an interrupted epoch)."""
        if self.drawn and not self.notebook:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
