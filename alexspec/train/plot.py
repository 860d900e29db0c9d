"""`alexspec plot RUN_DIR`: loss, error and learning-rate curves from metrics.jsonl, as a PNG."""
from __future__ import annotations

import json
from pathlib import Path

from alexspec.errors import BadInput
from alexspec.plotting import pyplot

def plot_run(run_dir: Path) -> Path:
    """Write RUN_DIR/curves.png; ValueError when the run has no metrics or matplotlib is missing."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise BadInput(f"{run_dir} has no metrics.jsonl; is it a run folder of `alexspec train`?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    if not records:
        raise BadInput(f"{path} is empty: the run logged nothing yet")
    plt = pyplot()
    fig, (loss_ax, err_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4))
    loss_ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train (step)", alpha=0.6)
    loss_ax.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation")
    loss_ax.set(title="loss", xlabel="step")
    err_ax.plot([r["epoch"] for r in epochs], [100 * r["top1_error"] for r in epochs], "o-", label="top-1")
    err_ax.plot([r["epoch"] for r in epochs], [100 * r["top5_error"] for r in epochs], "o-", label="top-5")
    err_ax.set(title="validation error (%)", xlabel="epoch")
    lr_ax.plot([r["step"] for r in steps + epochs], [r["lr"] for r in steps + epochs], ".")
    lr_ax.set(title="learning rate", xlabel="step", yscale="log")
    for ax in (loss_ax, err_ax):
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
