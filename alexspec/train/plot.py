"""`alexspec plot RUN_DIR`: loss, error and learning-rate curves from metrics.jsonl, as a PNG;
`alexspec plot RUN_A RUN_B ...`: the runs' curves overlaid (the paper's Figure 1: ReLU vs tanh)."""
from __future__ import annotations

import sys
from pathlib import Path

from alexspec.errors import BadInput
from alexspec.plotting import pyplot, save
from alexspec.words import count


def _records(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of a run's metrics.jsonl; BadInput where it has none. Lines
    that are no record (the last, cut short by a stopped run) are left out, and said."""
    from alexspec.train.run_folder import is_run_folder, read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.exists() and is_run_folder(run_dir):
        raise BadInput(f"{run_dir}: the run has logged nothing yet; it writes a step's loss every --log-every steps "
                       "(20 by default) and the validation at each epoch's end")
    if not path.exists():
        raise BadInput(f"{run_dir} has no metrics.jsonl; is it a run folder of `alexspec train`?")
    records, unreadable = read_metrics(run_dir)
    if unreadable:
        print(f"{path}: left out {count(unreadable, 'line')} that {'is' if unreadable == 1 else 'are'} no record "
              "(a run stopped while writing it?)", file=sys.stderr)
    if not records:
        raise BadInput(f"{path} holds no records: the run logged nothing yet")
    return [r for r in records if r["kind"] == "step"], [r for r in records if r["kind"] == "epoch"]


def _train_losses(steps: list[dict], epochs: list[dict]) -> tuple[list, list, str]:
    """The training loss to draw (steps, losses, label): each logged step's, else (a run of fewer
    steps than --log-every) each epoch's mean, at the epoch's last step."""
    if steps:
        return [r["step"] for r in steps], [r["loss"] for r in steps], "train (step)"
    return [r["step"] for r in epochs], [r["train_loss"] for r in epochs], "train (epoch mean)"


def _whole_numbers(*axes) -> None:
    """Ticks at whole steps and epochs only (a run of 3 epochs had 1.25, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_run(run_dir: Path) -> Path:
    """Write RUN_DIR/curves.png; BadInput when the run has no metrics."""
    steps, epochs = _records(run_dir)
    plt = pyplot()
    fig, (loss_ax, err_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4))
    xs, losses, label = _train_losses(steps, epochs)
    loss_ax.plot(xs, losses, "-" if steps else "o-", label=label, alpha=0.6)
    loss_ax.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation")
    loss_ax.set(title="loss", xlabel="step")
    err_ax.plot([r["epoch"] for r in epochs], [100 * r["top1_error"] for r in epochs], "o-", label="top-1")
    with_top5 = [r for r in epochs if "top5_error" in r]  # none where the network has 5 outputs or fewer
    if with_top5:
        err_ax.plot([r["epoch"] for r in with_top5], [100 * r["top5_error"] for r in with_top5], "o-", label="top-5")
    err_ax.set(title="validation error (%)", xlabel="epoch")
    lr_ax.plot([r["step"] for r in steps + epochs], [r["lr"] for r in steps + epochs], ".")
    lr_ax.set(title="learning rate", xlabel="step", yscale="log")
    _whole_numbers(loss_ax, err_ax, lr_ax)
    for ax in (loss_ax, err_ax):
        ax.legend()
    fig.suptitle(run_dir.name)
    return save(fig, run_dir / "curves.png")


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Write `out`: the training loss by step and the validation top-1 error by epoch of each
    run, overlaid, a line a run named by its folder; BadInput when a run has no metrics."""
    runs = [(run_dir, *_records(run_dir)) for run_dir in run_dirs]
    plt = pyplot()
    fig, (loss_ax, err_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir, steps, epochs in runs:
        xs, losses, label = _train_losses(steps, epochs)
        loss_ax.plot(xs, losses, "-" if steps else "o-", label=run_dir.name + ("" if steps else " (epoch mean)"),
                     alpha=0.8)
        err_ax.plot([r["epoch"] for r in epochs], [100 * r["top1_error"] for r in epochs], "o-", label=run_dir.name)
    loss_ax.set(title="training loss", xlabel="step")
    err_ax.set(title="validation top-1 error (%)", xlabel="epoch")
    _whole_numbers(loss_ax, err_ax)
    for ax in (loss_ax, err_ax):
        ax.legend()
    return save(fig, out)
