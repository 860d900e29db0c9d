"""What a run shows while it trains: a progress bar with ETA on a terminal, a line per epoch."""
from __future__ import annotations

import sys
from typing import Callable, Optional


class Progress:
    """A tqdm bar per epoch where `bar` (None: stderr is a terminal) and on the main rank; a plain
    line per epoch through `log` on the main rank either way."""

    def __init__(self, epochs: int, steps_per_epoch: int, main: bool, log: Callable[[str], None],
                 bar: Optional[bool] = None):
        self.epochs, self.steps, self.main, self.log = epochs, steps_per_epoch, main, log
        self.bar_wanted = (sys.stderr.isatty() if bar is None else bar) and main
        self.bar = None

    def __enter__(self):
        return self

    def update(self, epoch: int, index: int, loss: Optional[float], lr: float, rate: float) -> None:
        """After a step; `loss` is the last one read from the device (None before the first)."""
        if not self.bar_wanted:
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
                     f"val loss {metrics['val_loss']:.4f}, top-1 error {metrics['top1_error']:.2%}, "
                     f"top-5 error {metrics['top5_error']:.2%}, lr {metrics['lr']:.3g}, "
                     f"{metrics['images_per_s']:.0f} img/s")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
