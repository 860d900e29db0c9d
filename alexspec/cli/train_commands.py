"""Commands of the trainer: train, eval, prepare-data, plot."""
from __future__ import annotations

import functools
from pathlib import Path
import shlex
import sys

from alexspec import settings
from alexspec.cli.common import SPEC_HELP, add_set_option, device_list, non_negative_int, positive_int, spec_document
from alexspec.words import count

EXAMPLES = {
    "train": """
        examples:
          alexspec train                       the bundled digits net on scikit-learn's digits (CPU, seconds)
          alexspec train lenet5 --data synthetic --epochs 2
          alexspec train alexnet --data /data/imagenet-shards --devices cuda:0,cuda:1 --precision bf16
          alexspec train alexnet --set training.lr=0.02 --set training.batch=256
          alexspec train digits -o runs/d --resume             continue the newest checkpoint in runs/d
          alexspec train runs/d --resume --epochs 40           the same, with the spec runs/d ran, to epoch 40
          alexspec train runs/d --resume -o runs/d2            continue runs/d in a new folder (a branch)
          alexspec train r50.yaml --weights r50.pt --set layers.fc.out=10 --data DIR
                                                       fine-tune imported weights on 10 classes
          torchrun --nproc-per-node 4 -m alexspec train alexnet --data DIR      data parallel (DDP)
        exit codes: 0 done or stopped cleanly (SIGINT/SIGTERM save first), 2 bad input, 3 the loss diverged
    """,
    "eval": """
        examples:
          alexspec eval runs/d                 a run folder: the spec it trained, its best.pt, its data
          alexspec eval digits --checkpoint runs/d/checkpoints/best.pt
          alexspec eval alexnet --checkpoint CKPT --data DIR --crops 10     the paper's 10-crop test
    """,
    "prepare-data": """
        examples:
          alexspec prepare-data ~/images/ data/shards --size 256
            SRC holds train/<class>/*.jpg and val/<class>/*.jpg; DST gets uint8 shards that
            `alexspec train --data DST` memory-maps
    """,
    "plot": """
        examples:
          alexspec plot runs/digits-20261125-101500       writes curves.png in the run folder
          alexspec plot runs/figure1-relu runs/figure1-tanh -o figure1.png
                                                          the two runs' curves overlaid (the paper's Figure 1)
    """,
}


def _train_config(args):
    from alexspec.train.loop import TrainConfig

    return TrainConfig(data=args.data, overrides=getattr(args, "set", []), epochs=getattr(args, "epochs", None),
                       batch=getattr(args, "batch", None),
                       out=getattr(args, "output", None), resume=getattr(args, "resume", None),
                       weights=getattr(args, "weights", None), devices=args.devices,
                       backend=args.backend, precision=args.precision, channels_last=args.channels_last,
                       cuda_graphs=getattr(args, "cuda_graphs", "off"),  # eval runs no training step
                       weight_copies=getattr(args, "weight_copies", "off"),
                       seed=getattr(args, "seed", None), checkpoint_every=getattr(args, "checkpoint_every", 0) or 0,
                       keep=getattr(args, "keep", 3), max_steps=getattr(args, "max_steps", None),
                       workers=getattr(args, "workers", 4), log_every=getattr(args, "log_every", 20))


def _continue_command(run_dir: Path) -> str:
    """The command that continues a stopped run; under torchrun, the same launch."""
    here = settings.current()
    command = f"alexspec train {shlex.quote(str(run_dir))} --resume"
    if here.world_size == 1:
        return command
    nodes = here.world_size // max(1, here.local_world_size)
    launch = f"torchrun --nproc-per-node {here.local_world_size}" + (f" --nnodes {nodes}" if nodes > 1 else "")
    return f"{launch} -m {command}" + (" (on each node, with its --node-rank and --rdzv-endpoint)" if nodes > 1 else "")


def _quiet(*_args, **_kwargs) -> None:
    """What a process other than rank 0 of a torchrun says: nothing (rank 0 speaks for the run)."""


def cmd_train(args) -> int:
    say = print if settings.current().rank == 0 else _quiet
    say(f"alexspec train {args.spec}: loading torch and building the network", flush=True)  # a word within a second
    from alexspec.spec.bundled import run_folder_holding, run_folder_of
    from alexspec.train.progress import errors_text
    from alexspec.train.session import start

    if args.resume == "" and (run_folder_of(args.spec) or run_folder_holding(args.spec)):
        args.resume = args.spec  # `alexspec train RUN_DIR|CKPT --resume [-o NEW_DIR]`: continue that run (there)
    result = start(args.spec, _train_config(args), log=say)
    if result.stopped_by_signal or result.stopped_at_max_steps:
        say(f"run stopped cleanly after {count(result.steps, 'step')}; continue with: "
            f"{_continue_command(result.run_dir)}")
    elif result.last:
        say(f"done: {count(result.epochs_done, 'epoch')}, {errors_text(result.last)}; run folder {result.run_dir} "
            f"(metrics.jsonl, checkpoints/; `alexspec plot {result.run_dir}` draws the curves, "
            f"`alexspec eval {result.run_dir}` evaluates its best checkpoint)")
    else:
        say(f"stopped after {count(result.steps, 'step')}; run folder {result.run_dir}")
    return 0


def cmd_eval(args) -> int:
    import json as json_module

    from alexspec.errors import BadInput
    from alexspec.spec.bundled import run_folder_holding, run_folder_of
    from alexspec.train.data import check_recorded
    from alexspec.train.evaluate import evaluate_checkpoint
    from alexspec.train.progress import errors_text
    from alexspec.train.run_folder import recorded

    run_dir = run_folder_of(args.spec)
    holding = run_folder_holding(args.spec) if run_dir is None and args.checkpoint is None else None
    if holding is not None:  # a run's checkpoint as SPEC: that run's spec, recipe and this checkpoint
        args.checkpoint, run_dir = args.spec, holding
    if args.checkpoint is None and run_dir is None:
        raise BadInput("which weights? give --checkpoint CKPT (a checkpoint file or a run folder), or a run folder "
                       "as SPEC (alexspec eval runs/NAME) for the spec it trained and its best checkpoint")
    run = recorded(run_dir) if run_dir is not None else {}
    data = args.data or run.get("data") or "digits"
    if args.data is None and run.get("data"):
        check_recorded(run["data"], str(run_dir))
    channels_last = args.channels_last if args.channels_last is not None else run.get("channels_last", False)
    found = evaluate_checkpoint(spec_document(args.spec, []), Path(args.checkpoint or run_dir), data, args.crops,
                                args.backend, args.devices or run.get("devices"),
                                args.precision or run.get("precision", "fp32"), channels_last,
                                log=lambda line: print(line, file=sys.stderr))
    if settings.current().rank:  # a process of a torchrun launch other than rank 0: that one says it
        return 0
    print(f"{found['network']} on {data} ({count(found['images'], 'image')}, {count(found['crops'], 'crop')}): "
          f"{errors_text(found)}, loss {found['val_loss']:.4f}")
    print(json_module.dumps({key: found[key] for key in ("checkpoint", "crops", "val_loss", "top1_error", "top5_error")
                             if key in found}))
    return 0


def cmd_prepare_data(args) -> int:
    from alexspec.train.image_folder import left_out, prepare_shards

    dataset = prepare_shards(Path(args.source), Path(args.destination), args.size, args.channels, args.workers,
                             progress=sys.stderr.isatty())
    print(f"wrote {len(dataset.train):,} training and {len(dataset.val):,} validation images "
          f"({args.channels}x{args.size}x{args.size}, {len(dataset.classes)} classes) to {args.destination}"
          + (f"; {left_out(dataset.unreadable)}" if dataset.unreadable else ""))
    return 0


def cmd_plot(args) -> int:
    from alexspec.plotting import picture_path
    from alexspec.train.plot import plot_run, plot_runs

    runs = [Path(run_dir) for run_dir in args.run_dir]
    if len(runs) == 1 and not args.output:
        out = plot_run(runs[0])
    else:
        out = plot_runs(runs, picture_path(args.output or "compare.png", "compare.png"))
    print(f"wrote {out}")
    return 0


def _run_options(p, run_data: str) -> None:
    """The options train and eval share: data, devices, backend, precision, memory format.
    `run_data` says when --data defaults to a run's (the command reads it when --data is None)."""
    p.add_argument("--data", metavar="SOURCE",
                   help="digits (scikit-learn's bundled images), synthetic, an image folder, or a folder "
                        f"from prepare-data (default: digits; {run_data}: the run's data)")
    p.add_argument("--devices", "--device", dest="devices", type=device_list, metavar="LIST",
                   help=f"cpu, cuda, cuda:0, or one device per tower (cuda:0,cuda:1); default: the spec's placement "
                        f"({run_data}: the run's)")
    p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto", help="default: auto")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help=f"bf16: autocast (default fp32; {run_data}: the run's)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help=f"NHWC memory format ({run_data}: as the run)")


def add_parsers(command) -> None:
    """Add train, eval, prepare-data and plot to the command line (`command(name, help, handler)` adds one)."""
    command = functools.partial(command, examples=EXAMPLES)

    p = command("train", "Train a spec on a data source with the spec's recipe; resumable.", cmd_train)
    p.add_argument("spec", nargs="?", default="digits", metavar="SPEC", help=SPEC_HELP + " (default: digits)")
    _run_options(p, "a resumed run")
    p.add_argument("--epochs", type=positive_int, help="default: the spec's training.epochs")
    p.add_argument("--batch", type=positive_int, help="global batch (default: the spec's training.batch)")
    p.add_argument("--output", "-o", "--out", dest="output", metavar="RUN_DIR",
                   help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                   help="continue from a checkpoint file or a run folder's newest (alone: the run folder given "
                        "as SPEC, else the -o folder's), "
                        "with the run's data, epochs, batch, seed, --set values, devices, precision and memory "
                        "format unless given again; it writes in the checkpoint's run folder, or in -o/--output")
    p.add_argument("--weights", metavar="CKPT",
                   help="start a new run from these weights (fine-tuning): a checkpoint file, a run folder (its "
                        "best.pt), or weights from `alexspec import --weights-out`; a layer they hold none of "
                        "the same name and shape for (a last layer for other classes) keeps the spec's "
                        "initialisation, named in a note")
    add_set_option(p)
    p.add_argument("--seed", type=int, help="default: the spec's training.seed")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="STEPS",
                   help="also checkpoint every STEPS steps (default: at the end of each epoch)")
    p.add_argument("--keep", type=positive_int, default=3, help="numbered checkpoints kept (default 3; best.pt too)")
    p.add_argument("--log-every", type=positive_int, default=20, metavar="STEPS",
                   help="write a step's loss to metrics.jsonl every STEPS steps (default 20); the losses are "
                        "read from the GPU once per window, so 1 makes every step wait for the GPU")
    p.add_argument("--max-steps", type=positive_int, help="stop (with a checkpoint) after this many steps")
    p.add_argument("--workers", type=non_negative_int, default=4,
                   help="threads reading shard batches ahead (default 4; 0: read in the training thread)")
    p.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                   help="replay the training step as one CUDA graph (no per-kernel launch cost); auto: on one "
                        "CUDA device in one process (default: auto)")
    p.add_argument("--weight-copies", choices=("auto", "on", "off"), default="auto",
                   help="bf16 training: run the conv and fully connected layers on bf16 copies of the weights "
                        "that the SGD step writes, instead of casting every weight and gradient each step (the "
                        "same arithmetic, less memory traffic); auto: with --precision bf16, SGD and one process "
                        "(default: auto)")

    p = command("eval", "Evaluate a checkpoint on the validation split (top-1/top-5 error).", cmd_eval)
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="a checkpoint file, or a run folder (its best.pt, else its newest checkpoint); default: "
                        "the run folder given as SPEC")
    p.add_argument("--crops", type=int, choices=(1, 10), help="1: centre; 10: corners, centre and flips "
                   "(default: the spec's training.eval.crops)")
    _run_options(p, "a run folder as SPEC")

    p = command("prepare-data", "Convert an image folder (train/ val/, a folder per class) to uint8 shards.",
                cmd_prepare_data)
    p.add_argument("source", metavar="SRC", help="an image folder: SRC/train/<class>/*.jpg and SRC/val/<class>/*.jpg")
    p.add_argument("destination", metavar="DST", help="a new or empty folder, or shards to replace (the old ones "
                   "stay until the new ones are whole)")
    p.add_argument("--size", type=positive_int, default=256, help="square size after resizing (default 256)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="default 3 (RGB)")
    p.add_argument("--workers", type=positive_int,
                   help="threads decoding images (default: this machine's cores, at most 8)")

    p = command("plot", "Draw a run's loss, error and learning-rate curves (PNG), or several runs' overlaid.",
                cmd_plot)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="a run folder; with several, their curves overlaid")
    p.add_argument("--output", "-o", metavar="FILE", help="the picture: .png, .svg or .pdf; a folder: "
                   "compare.png in it (default: RUN_DIR/curves.png for one run, compare.png for several)")
