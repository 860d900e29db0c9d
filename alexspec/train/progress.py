"""What long work shows: a progress bar with ETA on a terminal; in a log (stderr no terminal), a
line a minute (LogLines); a run, a line per epoch either way."""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
import sys
import time
from typing import Callable, Iterator, Optional

from alexspec.words import duration

LINE_EVERY_S = 60.0  # in a log, a progress line at most this often


class LogLines:
    """Progress for a log: as `done` of `total` units count up, a line through `say` each time
    LINE_EVERY_S has passed since the last: 'WHAT: 1,200/5,005 UNITs (24%), DETAIL, about 5 min
    left', DETAIL by default the units a second."""

    def __init__(self, what: str, total: int, unit: str, say: Callable[[str], None], done: int = 0):
        self.what, self.total, self.unit, self.say = what, total, unit, say
        self.start_done = done
        self.start = self.last = time.monotonic()

    def update(self, done: int, detail: Optional[str] = None) -> None:
        now = time.monotonic()
        if now - self.last < LINE_EVERY_S or done >= self.total:
            return
        self.last = now
        rate = (done - self.start_done) / max(now - self.start, 1e-9)
        detail = f"{rate:,.0f} {self.unit}s/s" if detail is None else detail
        left = f", about {duration((self.total - done) / rate)} left" if rate > 0 else ""
        self.say(f"{self.what}: {done:,}/{self.total:,} {self.unit}s ({done / self.total:.0%}), {detail}{left}")


@contextmanager
def counting(what: str, total: int, unit: str, bar: Optional[bool]) -> Iterator[Callable[[int], None]]:
    """Yields update(done) for `done` of `total` units counting up, shown as a tqdm bar where `bar`
    (stderr a terminal), as LogLines on stderr where False, not at all where None."""
    if bar is None:
        yield lambda done: None
        return
    if not bar:
        yield LogLines(what, total, unit, partial(print, file=sys.stderr, flush=True)).update
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True) as display:
        yield lambda done: display.update(done - display.n)


class Progress:
    """A tqdm bar per epoch where `bar` (None: stderr is a terminal), else a line a minute (LogLines),
    and a line per epoch, through `log`; on the main rank only."""

    def __init__(self, epochs: int, steps_per_epoch: int, main: bool, log: Callable[[str], None],
                 bar: Optional[bool] = None):
        self.epochs, self.steps, self.main, self.log = epochs, steps_per_epoch, main, log
        self.bar_wanted = (sys.stderr.isatty() if bar is None else bar) and main
        self.bar = None
        self.lines: Optional[LogLines] = None

    def __enter__(self):
        return self

    def update(self, epoch: int, index: int, loss: Optional[float], lr: float, rate: float) -> None:
        """After a step; `loss` is the last one read from the device (None before the first)."""
        if not self.main:
            return
        if not self.bar_wanted:
            if self.lines is None or self.lines.what != f"epoch {epoch + 1}/{self.epochs}":
                self.lines = LogLines(f"epoch {epoch + 1}/{self.epochs}", self.steps, "step", self.log, index - 1)
            self.lines.update(index, ("" if loss is None else f"loss {loss:.3f}, ") + f"lr {lr:.3g}, {rate:,.0f} img/s")
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                            file=sys.stderr, dynamic_ncols=True)
            self.bar.update(index - 1)
        self.bar.update(1)
        self.bar.set_postfix(loss="..." if loss is None else f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")

    def epoch_done(self, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.main:
            self.log(f"epoch {metrics['epoch']}/{self.epochs}: train loss {metrics['train_loss']:.4f}, "
                     f"val loss {metrics['val_loss']:.4f}, {errors_text(metrics)}, lr {metrics['lr']:.3g}, "
                     f"{metrics['images_per_s']:.0f} img/s")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def errors_text(metrics: dict) -> str:
    """`top-1 error 1.39%, top-5 error 0.28%` (top-1 alone where `metrics` hold no top-5 error)."""
    text = f"top-1 error {metrics['top1_error']:.2%}"
    return f"{text}, top-5 error {metrics['top5_error']:.2%}" if "top5_error" in metrics else text
