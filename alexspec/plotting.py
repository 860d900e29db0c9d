"""matplotlib for the PNGs alexspec draws (run curves, benchmark history), without a display."""
from __future__ import annotations

from alexspec.errors import BadInput


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only); BadInput where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput("plotting needs matplotlib: pip install matplotlib") from None
    return plt


def save(fig, out):
    """Lay `fig` out, write it to `out` (its folder made) as a PNG and close it; returns `out`."""
    plt = pyplot()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
