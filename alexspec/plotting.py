"""matplotlib for the pictures alexspec draws (run curves, benchmark history), without a display."""
from __future__ import annotations

import io
import os
from pathlib import Path

from alexspec.errors import BadInput

PICTURE_FORMATS = ("png", "svg", "pdf")


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only); BadInput where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput("plotting needs matplotlib: pip install matplotlib") from None
    return plt


def picture_path(given: str, default_name: str) -> Path:
    """The file a picture named `given` on the command line goes to: `default_name` inside it where
    it is a folder (or ends with a slash), .png added where it has no suffix; BadInput where its
    suffix is no picture format alexspec draws."""
    out = Path(given)
    if given.endswith(("/", os.sep)) or out.is_dir():
        out = out / default_name
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    if out.suffix.lower().lstrip(".") not in PICTURE_FORMATS:
        raise BadInput(f"{given}: alexspec draws {', '.join(PICTURE_FORMATS[:-1])} or {PICTURE_FORMATS[-1]}, "
                       f"not {out.suffix}; name the file {out.with_suffix('.png').name}")
    return out


def save(fig, out: Path) -> Path:
    """Lay `fig` out, write it to `out` (its folder made; the format its suffix says) whole or not
    at all, and close it; returns `out`."""
    from alexspec.fsutil import write_atomic

    plt = pyplot()
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, dpi=100, format=out.suffix.lower().lstrip("."))
    plt.close(fig)
    write_atomic(out, picture.getvalue())
    return out
