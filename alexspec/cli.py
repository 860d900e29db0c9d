"""The `alexspec` command line.

Exit codes: 0 success, 2 bad input (a spec problem, a bad argument, a missing file, an
unusable checkpoint: SpecError and BadInput), 3 training diverged, 1 an internal error (any
other exception: a bug, printed with its traceback and a request to report it).
"""
from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys
import textwrap
import traceback

from alexspec import __version__
from alexspec.errors import BadInput, Loc, Problem, SpecError, TrainingError
from alexspec.words import count

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3

EXAMPLES = {
    "validate": """
        examples:
          alexspec validate specs/alexnet.yaml
          alexspec validate specs/*.yaml          check several specs at once
          alexspec validate lenet5                 a bundled example spec, by name
    """,
    "report": """
        examples:
          alexspec report specs/alexnet.yaml                 the table, batch 1, fp32
          alexspec report alexnet --batch 128 --dtype bf16   memory for a training batch
          alexspec report specs/lenet5.yaml --format json    the machine interface
          alexspec report alexnet --format markdown > alexnet.md
    """,
    "schema": """
        examples:
          alexspec schema > alexspec.schema.json
            then, for the YAML language server, start a spec with:
            # yaml-language-server: $schema=./alexspec.schema.json
          alexspec schema --format markdown                  the spec language reference
    """,
    "train": """
        examples:
          alexspec train                       the bundled digits net on scikit-learn's digits (CPU, seconds)
          alexspec train lenet5 --data synthetic --epochs 2
          alexspec train alexnet --data /data/imagenet-shards --devices cuda:0,cuda:1 --precision bf16
          alexspec train alexnet --set training.lr=0.02 --set training.batch=256
          alexspec train digits -o runs/d --resume             continue the newest checkpoint in runs/d
          torchrun --nproc-per-node 4 -m alexspec train alexnet --data DIR      data parallel (DDP)
        exit codes: 0 done or stopped cleanly (SIGINT/SIGTERM save first), 2 bad input, 3 the loss diverged
    """,
    "eval": """
        examples:
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
    """,
    "bench": """
        examples:
          alexspec bench                                    the paper's AlexNet, batch 256 on a GPU
          alexspec bench alexnet --precision bf16 --compare eager-graphed,compile-reduce-overhead --max-autotune
          alexspec bench --ablate                           ... and each speed lever's effect
          alexspec bench --cold-start                       ... and the start-up time in fresh processes
          alexspec bench --cpu-figures                      compiler speed only (no GPU needed)
          alexspec bench --history                          tables and a plot of bench/results/
        On a machine without CUDA it times the torch backend on CPU (batch 8) and says so.
        ALEXSPEC_AUTOTUNE=quick skips the kernels' autotuning (a faster first step).
        ALEXSPEC_CONV=triton|cudnn runs every conv one way (default auto: per shape, the faster).
        ALEXSPEC_PRETUNED=0 times every choice here, where alexspec ships the choices made on this GPU model.
    """,
    "diff": """
        examples:
          alexspec diff alexnet torchvision-alexnet          the paper's net against torchvision's
          alexspec diff alexnet alexnet-1gpu                 towers against groups
          alexspec diff a.yaml b.yaml --format json
    """,
    "import": """
        examples:
          alexspec import torchvision:alexnet -o specs/tv.yaml           (needs torchvision; no download)
          alexspec import python:mypkg.models:LeNet --input 1,32,32 -o lenet.yaml --weights-out lenet.pt
          alexspec import caffe deploy.prototxt -o caffe.yaml
    """,
    "export": """
        examples:
          alexspec export digits --checkpoint runs/d/checkpoints/best.pt --format torch-export -o digits.pt2
          alexspec export alexnet --checkpoint CKPT --format onnx -o alexnet.onnx
    """,
    "compile": """
        examples:
          alexspec compile specs/alexnet.yaml -o build/
            writes build/alexnet.py (the PyTorch module), build/graph.json (the IR with
            inferred shapes), build/report.json and build/alexnet.dot (+ .svg/.png with Graphviz)
            then: python -c "from build.alexnet import Alexnet; print(Alexnet(devices=['cpu']))"
          alexspec compile alexnet --devices cuda:0 -o build/     both towers on one GPU (groups)
          alexspec compile alexnet --devices cuda:0,cuda:1        the paper's split over two GPUs
    """,
}


_ASCII_LINES = str.maketrans({"─": "-", "│": "|", **{corner: "+" for corner in "┌┐└┘├┤┬┴┼"}})


def write_out(text: str) -> None:
    """Write `text` to standard output in its encoding: where that cannot show the table's
    box-drawing characters (a cp1252 console, say), they become ASCII, and anything else it
    cannot show becomes '?'."""
    encoding = sys.stdout.encoding or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.translate(_ASCII_LINES).encode(encoding, "replace").decode(encoding)
    sys.stdout.write(text)


def resolve_spec(name: str) -> str:
    """A spec path as given, or the file of a bundled spec named `name` (e.g. `alexnet`)."""
    from alexspec.spec.bundled import resolve

    return resolve(name)


def _analyse(spec: str):
    from alexspec import analyse

    return analyse(resolve_spec(spec))


def cmd_validate(args) -> int:
    failed = False
    for spec in args.specs:
        try:
            info = _analyse(spec)
        except SpecError as error:
            _print_problems(error)
            failed = True
            continue
        net = info.network
        print(f"{net.file}: ok: {net.name}, {len(net.layers)} layers, {info.total_params:,} params, "
              f"output {'x'.join(map(str, info.output_shape))}")
    return EXIT_BAD_INPUT if failed else 0


def cmd_report(args) -> int:
    from alexspec.report import render

    info = _analyse(args.spec)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() and not args.output else None
    text = render(info, args.format, args.batch, args.dtype, width)
    if args.output:
        from alexspec.fsutil import write_atomic

        write_atomic(args.output, text)
        print(f"wrote {args.output}")  # every command says what it wrote on standard output
    else:
        write_out(text)
    return 0


def cmd_schema(args) -> int:
    if args.format == "markdown":
        from alexspec.spec.schema_doc import markdown

        sys.stdout.write(markdown())
    else:
        from alexspec.spec.schema import schema_json

        sys.stdout.write(schema_json())
    return 0


def cmd_compile(args) -> int:
    from alexspec.codegen import generate
    from alexspec.diagram import dot, render
    from alexspec.fsutil import write_atomic
    from alexspec.graph import graph_json
    from alexspec.report import render as render_report

    info = _analyse(args.spec)
    devices = tuple(d.strip() for d in args.devices.split(",")) if args.devices else None
    if devices and len(devices) not in (1, info.network.towers):
        raise SpecError([Problem(Loc("--devices", 1, 1), "", f"{count(len(devices), 'device')} for "
                                 f"{count(info.network.towers, 'tower')}", "give one device, or one per tower")])
    generated = generate(info, devices, args.backend, fuse=not args.no_fuse, fuse_lrn_pool=args.fuse_lrn_pool)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError([Problem(Loc(str(out), 1, 1), "", f"cannot create the output folder ({exc.strerror})",
                                 "choose another folder with -o")]) from None
    name = info.network.name
    written = {f"{name}.py": generated.source, "graph.json": graph_json(info),
               "report.json": render_report(info, "json"), f"{name}.dot": dot(info)}
    for file, text in written.items():
        write_atomic(out / file, text)
    pictures = render(out / f"{name}.dot")
    write_out(render_report(info, "table"))
    fusions = generated.fusion.describe()
    if fusions:
        print("fused: " + "; ".join(fusions) + " (--no-fuse: every layer on its own)")
    elif args.no_fuse:
        print("fused: nothing (--no-fuse)")
    else:
        print("fused: nothing: no conv ReLU that the next layer could apply"
              + ("" if args.fuse_lrn_pool else " (--fuse-lrn-pool also runs each LRN + max pool as one kernel)"))
    print(f"wrote {', '.join(str(out / f) for f in [*written, *(p.name for p in pictures)])}")
    if not pictures:
        print("(install Graphviz for an SVG/PNG picture of the network: apt-get install graphviz)")
    print(_use_it(out, name, generated.class_name, devices or info.network.placement))
    return 0


def _use_it(out: Path, module: str, class_name: str, devices) -> str:
    """A line that uses the compiled module on any machine: on the CPU where its default devices
    name GPUs (which this machine may not have), saying where the defaults put it."""
    on_gpus = any(str(d).startswith("cuda") for d in devices)
    make = f"{class_name}(devices=['cpu'])" if on_gpus else f"{class_name}()"
    where = f" ({class_name}() puts it on {', '.join(devices)})" if on_gpus else ""
    if out.name.isidentifier():
        return f"use it: cd {out.parent} && python -c \"from {out.name}.{module} import {class_name}; " \
               f"model = {make}; print(model)\"{where}"
    return f"use it: cd {out} && python -c \"from {module} import {class_name}; model = {make}; print(model)\"{where}"


def _bench_history(folder: Path, plot_file: str | None) -> int:
    from alexspec import bench_history

    if not folder.is_dir():
        raise SpecError([Problem(Loc(str(folder), 1, 1), "", "no such folder of benchmark results",
                                 "give the folder `alexspec bench` wrote to (default bench/results)")])
    runs, skipped = bench_history.load(folder)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not runs:
        print(f"{folder}: no benchmark results yet; run `alexspec bench` on a GPU (it writes them there)",
              file=sys.stderr)
        return 1
    latest = "\n".join(bench_history.headline(run) for run in bench_history.latest(runs))
    print("latest:\n\n" + latest + "\nall runs:\n\n" + bench_history.history(runs))
    out = bench_history.plot(runs, Path(plot_file) if plot_file else folder / "history.png")
    print(f"wrote {out}")
    return 0


def _spec_document(spec: str, overrides: list[str]):
    from alexspec.spec import load_file
    from alexspec.spec.overrides import apply_overrides

    doc = load_file(resolve_spec(spec))
    return apply_overrides(doc, overrides) if overrides else doc


def _train_config(args):
    from alexspec.train.loop import TrainConfig

    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    return TrainConfig(data=args.data, overrides=getattr(args, "set", []), epochs=getattr(args, "epochs", None),
                       batch=getattr(args, "batch", None),
                       out=getattr(args, "output", None), resume=getattr(args, "resume", None), devices=devices,
                       backend=args.backend, precision=args.precision, channels_last=args.channels_last,
                       cuda_graphs=getattr(args, "cuda_graphs", "off"),  # eval runs no training step
                       weight_copies=getattr(args, "weight_copies", "off"),
                       seed=getattr(args, "seed", None), checkpoint_every=getattr(args, "checkpoint_every", 0) or 0,
                       keep=getattr(args, "keep", 3), max_steps=getattr(args, "max_steps", None),
                       workers=getattr(args, "workers", 4), log_every=getattr(args, "log_every", 20))


def cmd_train(args) -> int:
    print(f"alexspec train {args.spec}: loading torch and building the network", flush=True)  # a word within a second
    from alexspec.train.loop import start

    result = start(resolve_spec(args.spec), _train_config(args))
    if result.stopped_by_signal or result.stopped_at_max_steps:
        print(f"run stopped cleanly after {count(result.steps, 'step')}; continue with: alexspec train {args.spec} "
              f"--resume {result.run_dir}")
    elif result.last:
        print(f"done: {count(result.epochs_done, 'epoch')}, top-1 error {result.last['top1_error']:.2%}, "
              f"top-5 error {result.last['top5_error']:.2%}; run folder {result.run_dir} "
              f"(metrics.jsonl, checkpoints/; `alexspec plot {result.run_dir}` draws the curves)")
    else:
        print(f"stopped after {count(result.steps, 'step')}; run folder {result.run_dir}")
    return 0


def cmd_eval(args) -> int:
    import json as json_module

    from alexspec.builder import load_state
    from alexspec.train import checkpoint
    from alexspec.train.data import open_data
    from alexspec.train.loop import Trainer

    trainer = Trainer(_spec_document(args.spec, []), _train_config(args))
    path = checkpoint.in_run_folder(Path(args.checkpoint))
    state = checkpoint.load(path, trainer.network_hash)
    load_state(trainer.module, state["model"])
    data = open_data(args.data, trainer.net.input, trainer.info.output_shape[0],
                     trainer.training.augmentation.resize, trainer.seed)
    trainer.check_data(data)
    crops = args.crops or trainer.training.eval_crops
    _, height, width = trainer.net.input
    if crops == 10 and data.image_shape[1:] == (height, width):
        print(f"note: the images are {height}x{width}, the network's input, so there is nothing to crop: the 10 "
              "views are the image and its mirror image, 5 times each; where a mirrored image is another class "
              "(digits, text), expect a worse error than with --crops 1", file=sys.stderr)
    metrics = trainer.evaluate(data, crops=crops)
    print(f"{trainer.net.name} on {args.data} ({count(len(data.val), 'image')}, {count(crops, 'crop')}): top-1 error "
          f"{metrics['top1_error']:.2%}, top-5 error {metrics['top5_error']:.2%}, loss {metrics['val_loss']:.4f}")
    print(json_module.dumps({"checkpoint": str(path), "crops": crops, **metrics}))
    return 0


def cmd_prepare_data(args) -> int:
    from alexspec.train.data import image_folder, write_shards

    dataset = image_folder(Path(args.source), args.size, args.channels)
    write_shards(dataset, Path(args.destination))
    print(f"wrote {len(dataset.train)} training and {len(dataset.val)} validation images "
          f"({args.channels}x{args.size}x{args.size}, {len(dataset.classes)} classes) to {args.destination}"
          + (f"; skipped {dataset.skipped} unreadable" if dataset.skipped else ""))
    return 0


def cmd_plot(args) -> int:
    from alexspec.train.plot import plot_run

    out = plot_run(Path(args.run_dir))
    print(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    if args.history:
        return _bench_history(Path(args.history), args.plot)
    from alexspec import bench

    result = {}
    if args.cpu_figures:
        result["cpu_figures"] = figures = bench.cpu_figures()
        print(f"report (fresh process) {figures['report_wall_s']:.3f} s; compiler import "
              f"{figures['compiler_import_s']:.3f} s (imports torch: {figures['compiler_imports_torch']}); "
              f"validate + infer of 1,000 layers {figures['validate_infer_1000_layers_s']:.3f} s")
    if not args.cpu_figures or args.spec:
        import os

        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # before torch loads: the profiler's log stays quiet
        import torch

        cuda = torch.cuda.is_available()
        batch = args.batch or (256 if cuda else 8)
        steps = args.steps or (20 if cuda else 2)
        repeats = args.repeats or (1 if cuda else 3)
        if args.compare is None:
            compare = bench.default_baselines(cuda, args.max_autotune)
            if not cuda:
                print(bench.cpu_note())
        else:
            compare = bench.parse_baselines(args.compare)
        if args.max_autotune and "compile-max-autotune" not in compare:
            compare.append("compile-max-autotune")
        spec = resolve_spec(args.spec or "alexnet")
        if args.cold_start:
            cuda = torch.cuda.is_available()
            print("spec to warm module in fresh processes (an empty Triton cache, then the one it left"
                  + (", then empty ones compiling layer by layer and, where alexspec ships choices for this GPU, "
                     "timing every choice)..." if cuda else ")..."))
            result["startup"] = bench.startup(spec, batch, args.precision, layer_by_layer=cuda, profiled=cuda)
            for name, figures in result["startup"].items():
                print(bench.describe_start(name, figures))
        out = _bench_out(args.output, torch.cuda.is_available())

        def keep(partial: dict) -> None:  # an interrupted run keeps what it timed
            if out:
                bench.write({**result, **partial}, out)

        result.update(bench.run(spec, batch, args.precision, compare, "compile-max-autotune" in compare, steps,
                                args.warmup, args.ablate, progress=keep, repeats=repeats))
    else:
        out = _bench_out(args.output, False)
    if out:
        bench.write(result, out)
        print(f"wrote {out}")
    return 0


def _bench_out(out: str | None, cuda: bool) -> Path | None:
    """Where `alexspec bench` writes its JSON: -o/--output, else bench/results/bench-<date>.json on CUDA."""
    import datetime

    if out or cuda:
        return Path(out or f"bench/results/bench-{datetime.date.today().isoformat()}.json")
    return None


def cmd_diff(args) -> int:
    from alexspec.interop.diff import diff_data, render

    a, b = _analyse(args.a), _analyse(args.b)
    write_out(render(a, b, args.format))
    return 0 if diff_data(a, b)["same"] or not args.exit_code else 1


def _shape_arg(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,224,224, got '{text}'")
    return shape


def cmd_import(args) -> int:
    import yaml as yaml_module

    from alexspec.fsutil import write_atomic
    from alexspec.interop.from_torch import ImportProblem

    if args.source == "caffe":
        from alexspec.interop.caffe import spec_from_prototxt

        if not args.path:
            raise ImportProblem("`alexspec import caffe` needs the prototxt: alexspec import caffe deploy.prototxt")
        try:
            text = Path(args.path).read_text()
        except OSError as exc:
            raise ImportProblem(f"{args.path}: {exc.strerror}") from None
        spec, imported = spec_from_prototxt(text, args.name, args.input), None
    else:
        from alexspec.interop.from_torch import spec_from_torch

        model, default_name = _torch_model(args.source)
        imported = spec_from_torch(model, args.input or (3, 224, 224), args.name or default_name,
                                   follows=args.source.split(":", 1)[0])
        spec = imported.spec
    out = Path(args.output)
    write_atomic(out, "# Imported by `alexspec import " + " ".join(filter(None, [args.source, args.path])) + "`.\n"
                 + yaml_module.safe_dump(spec, sort_keys=False, width=110))
    info = _analyse(str(out))
    print(f"wrote {out}: {info.network.name}, {len(info.layers)} layers, {info.total_params:,} params")
    if imported is not None and args.weights_out:
        from alexspec.train import checkpoint

        state = imported.convert_state_dict(model.state_dict())
        checkpoint.save_weights(Path(args.weights_out), state, checkpoint.network_hash(info))
        print(f"wrote {args.weights_out}: the model's weights as an alexspec checkpoint "
              f"(use with alexspec eval/export --checkpoint)")
    return 0


def _torch_model(source: str):
    """A model instance from torchvision:NAME or python:MODULE:CALLABLE."""
    import importlib

    from alexspec.interop.from_torch import ImportProblem

    kind, _, rest = source.partition(":")
    if kind == "torchvision":
        try:
            models = importlib.import_module("torchvision.models")
        except ImportError:
            raise ImportProblem("torchvision is not installed: pip install torchvision") from None
        factory = getattr(models, rest, None)
        if factory is None:
            raise ImportProblem(f"torchvision.models has no {rest!r}")
        return factory(weights=None), rest  # never downloads: weights come from --weights-file
    if kind == "python":
        module_name, _, attr = rest.partition(":")
        if not module_name or not attr:
            raise ImportProblem(f"python:{rest} names no callable: write python:MODULE:CALLABLE, e.g. "
                                "python:mynets:LeNet (a function or class returning the model)")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportProblem(f"cannot load {rest}: {exc}") from None
        return factory(), attr.lower()
    raise ImportProblem(f"unknown source {source!r}: use torchvision:NAME, python:MODULE:CALLABLE or caffe PATH")


def cmd_export(args) -> int:
    from alexspec.interop.export import export, format_for

    fmt = args.format or format_for(Path(args.output))
    out = export(resolve_spec(args.spec), Path(args.checkpoint) if args.checkpoint else None, fmt,
                 Path(args.output), args.backend, [d.strip() for d in args.devices.split(",")])
    print(f"wrote {out} ({fmt})")
    return 0


def _print_problems(error: SpecError) -> None:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    files = sorted({p.loc.file for p in error.problems})
    count = len(error.problems)
    print(f"{count} problem{'s' if count != 1 else ''} in {', '.join(files)}", file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not 1 <= value <= 1 << 24:
        raise argparse.ArgumentTypeError(f"must be from 1 to {1 << 24}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from alexspec.infer import DTYPE_BYTES
    from alexspec.report import FORMATS

    parser = argparse.ArgumentParser(
        prog="alexspec", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Define a network (AlexNet and its cousins) in one YAML file; alexspec checks it, "
                    "infers every shape, parameter count, MAC and byte, compiles it to a PyTorch module with "
                    "Triton kernels, and trains it.",
        epilog=textwrap.dedent("""
            start here:
              alexspec train                     train the bundled digits net on real images (CPU, seconds)
              alexspec report alexnet            the paper's AlexNet, layer by layer
              alexspec validate my-net.yaml      find every problem in a spec at once
              alexspec compile alexnet -o build/ a readable PyTorch module, its IR and a diagram
              alexspec schema > alexspec.schema.json    for editor completion

            Run `alexspec COMMAND --help` for each command's options and examples.
            Specs are described in docs/spec-language.md.
        """))
    parser.add_argument("--version", action="version", version=f"alexspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=textwrap.dedent(EXAMPLES[name]), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    spec_help = "a spec file, or the name of a bundled spec (alexnet, alexnet-1gpu, lenet5, ...)"
    p = command("validate", "Check specs and list every problem with file:line:col and a fix.", cmd_validate)
    p.add_argument("specs", nargs="+", metavar="SPEC", help=spec_help)

    p = command("report", "Show every layer's shape, params, MACs and memory, with totals.", cmd_report)
    p.add_argument("spec", nargs="?", default="alexnet", metavar="SPEC", help=spec_help + " (default: alexnet)")
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--batch", "-b", type=_positive_int, default=1, help="images per batch for memory (default: 1)")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="fp32",
                   help="activation and parameter dtype for memory (default: fp32)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")

    p = command("schema", "Print the spec language's JSON Schema (or its markdown reference).", cmd_schema)
    p.add_argument("--format", "-f", choices=("json", "markdown"), default="json", help="default: json")

    p = command("compile", "Compile a spec into a PyTorch module, with its IR, report and diagram.", cmd_compile)
    p.add_argument("spec", metavar="SPEC", help=spec_help)
    p.add_argument("--output", "-o", default="build", metavar="DIR", help="output folder (default: build)")
    p.add_argument("--devices", "--device", dest="devices", metavar="LIST", help="default devices of the module, comma-separated: one per "
                   "tower (tower parallel) or one (towers become groups); default: the spec's placement")
    p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                   help="default backend of the module (default: auto: triton on CUDA, else torch)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run every layer on its own (default: a conv's ReLU moved into the max pool or LRN after it; "
                        "see alexspec.fusion)")
    p.add_argument("--fuse-lrn-pool", action="store_true",
                   help="also run each LRN + max pool as one kernel (off by default: slower on an H100 than "
                        "the two kernels apart; see alexspec.fusion)")

    def train_options(p, data_default: str | None = "digits") -> None:
        p.add_argument("--data", default=data_default, metavar="SOURCE",
                       help="digits (scikit-learn's bundled images), synthetic, an image folder, or a folder "
                            "from prepare-data (default: digits" + ("" if data_default else
                                                                     "; a resumed run: the run's data") + ")")
        p.add_argument("--devices", "--device", dest="devices", metavar="LIST", help="cpu, cuda, cuda:0, or one device per tower "
                       "(cuda:0,cuda:1); default: the spec's placement")
        p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto", help="default: auto")
        p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast (default fp32)")
        p.add_argument("--channels-last", action="store_true", help="NHWC memory format")

    p = command("train", "Train a spec on a data source with the spec's recipe; resumable.", cmd_train)
    p.add_argument("spec", nargs="?", default="digits", metavar="SPEC", help=spec_help + " (default: digits)")
    train_options(p, data_default=None)
    p.add_argument("--epochs", type=_positive_int, help="default: the spec's training.epochs")
    p.add_argument("--batch", type=_positive_int, help="global batch (default: the spec's training.batch)")
    p.add_argument("--output", "-o", "--out", dest="output", metavar="RUN_DIR",
                   help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                   help="continue from a checkpoint file or a run folder's newest (alone: the -o folder's), "
                        "with the run's data, epochs, batch, seed and --set values unless given again; it "
                        "writes in the checkpoint's run folder, or in -o/--output")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. training.lr=0.02 (repeatable)")
    p.add_argument("--seed", type=int, help="default: the spec's training.seed")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                   help="also checkpoint every STEPS steps (default: at the end of each epoch)")
    p.add_argument("--keep", type=_positive_int, default=3, help="numbered checkpoints kept (default 3; best.pt too)")
    p.add_argument("--log-every", type=_positive_int, default=20, metavar="STEPS",
                   help="write a step's loss to metrics.jsonl every STEPS steps (default 20); the losses are "
                        "read from the GPU once per window, so 1 makes every step wait for the GPU")
    p.add_argument("--max-steps", type=_positive_int, help="stop (with a checkpoint) after this many steps")
    p.add_argument("--workers", type=int, default=4, help="threads reading shard batches ahead (default 4)")
    p.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                   help="replay the training step as one CUDA graph (no per-kernel launch cost); auto: on one "
                        "CUDA device in one process (default: auto)")
    p.add_argument("--weight-copies", choices=("auto", "on", "off"), default="auto",
                   help="bf16 training: run the conv and fully connected layers on bf16 copies of the weights "
                        "that the SGD step writes, instead of casting every weight and gradient each step (the "
                        "same arithmetic, less memory traffic); auto: with --precision bf16, SGD and one process "
                        "(default: auto)")

    p = command("eval", "Evaluate a checkpoint on the validation split (top-1/top-5 error).", cmd_eval)
    p.add_argument("spec", metavar="SPEC", help=spec_help)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a checkpoint file, or a run folder (its best.pt, else its newest checkpoint)")
    p.add_argument("--crops", type=int, choices=(1, 10), help="1: centre; 10: corners, centre and flips "
                   "(default: the spec's training.eval.crops)")
    train_options(p)

    p = command("prepare-data", "Convert an image folder (train/ val/, a folder per class) to uint8 shards.",
                cmd_prepare_data)
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")
    p.add_argument("--size", type=_positive_int, default=256, help="square size after resizing (default 256)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="default 3 (RGB)")

    p = command("bench", "Time training and inference against PyTorch eager and torch.compile.", cmd_bench)
    p.add_argument("spec", nargs="?", metavar="SPEC", help=spec_help + " (default: alexnet)")
    p.add_argument("--batch", type=_positive_int, help="default: 256 on CUDA, 8 on CPU")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16", help="default: bf16 (channels-last)")
    p.add_argument("--compare", metavar="LIST",
                   help="baselines, comma-separated: eager (SGD foreach), eager-graphed (the whole step as a CUDA "
                        "graph, fused SGD), compile (torch.compile default, fused SGD), compile-reduce-overhead, "
                        "compile-max-autotune (both with torch.compile's CUDA graphs, fused SGD); '' for none "
                        "(default on CUDA: all but compile-max-autotune; on CPU: eager)")
    p.add_argument("--max-autotune", action="store_true",
                   help="also compare with torch.compile max-autotune, its CUDA graphs on (minutes to compile)")
    p.add_argument("--steps", type=_positive_int, help="timed steps (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--repeats", type=_positive_int, help="time each figure this many times and report the median and "
                   "range (default: 1 on CUDA, 3 on CPU, where timings move more)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--output", "-o", "--out", dest="output", metavar="FILE",
                   help="JSON file (default on CUDA: bench/results/bench-<date>.json)")
    p.add_argument("--cpu-figures", action="store_true", help="also (or, without SPEC, only) time the compiler")
    p.add_argument("--history", nargs="?", const="bench/results", metavar="DIR",
                   help="instead of timing: summarise the results in DIR (default bench/results) as markdown "
                        "tables and a plot")
    p.add_argument("--plot", metavar="FILE", help="with --history: the plot's file (default DIR/history.png)")
    p.add_argument("--ablate", action="store_true", help="also time alexspec with each speed lever off in turn "
                   "(fusion, channels_last, fused_optimizer, weight_copies, cuda_graphs, triton_conv) and record each one's effect")
    p.add_argument("--cold-start", action="store_true", help="also time spec -> warm module (build and first "
                   "training step) in fresh processes: with an empty Triton cache, and with the cache that left; on a GPU "
                   "also with an empty cache and ALEXSPEC_COMPILE_AHEAD=0 (each kernel compiled at its first launch), "
                   "with ALEXSPEC_PRETUNED=0 where alexspec ships choices for the GPU (each one timed), and a warm "
                   "start under cProfile")

    p = command("diff", "Show the layers, shapes, params and MACs that differ between two specs.", cmd_diff)
    p.add_argument("a", metavar="A", help=spec_help)
    p.add_argument("b", metavar="B", help=spec_help)
    p.add_argument("--format", "-f", choices=("text", "json"), default="text", help="default: text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the specs differ (like diff(1))")

    p = command("import", "Write a spec for a torch.nn model or a Caffe prototxt.", cmd_import)
    p.add_argument("source", metavar="SOURCE", help="torchvision:NAME, python:MODULE:CALLABLE, or caffe")
    p.add_argument("path", nargs="?", metavar="PATH", help="the prototxt (caffe)")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the spec to write")
    p.add_argument("--input", type=_shape_arg, metavar="C,H,W", help="input shape (default 3,224,224 for "
                   "torch models; Caffe's from the prototxt)")
    p.add_argument("--name", help="network name (default: the model's)")
    p.add_argument("--weights-out", metavar="FILE", help="also write the model's weights as an alexspec checkpoint "
                   "(torch models; Caffe's .caffemodel is not read)")

    p = command("export", "Export a (trained) spec for inference: torch.export or ONNX.", cmd_export)
    p.add_argument("spec", metavar="SPEC", help=spec_help)
    p.add_argument("--checkpoint", metavar="CKPT", help="weights to export (default: the spec's initialisation)")
    p.add_argument("--format", "-f", choices=("torch-export", "onnx"),
                   help="default: from the file's name (.pt2: torch-export, .onnx: onnx)")
    p.add_argument("--output", "-o", required=True, metavar="FILE")
    p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                   help="torch-export: whose ops the program keeps (default auto)")
    p.add_argument("--devices", "--device", dest="devices", default="cpu", metavar="LIST",
                   help="device to trace on (default cpu)")

    p = command("plot", "Draw a run's loss, error and learning-rate curves (PNG).", cmd_plot)
    p.add_argument("run_dir", metavar="RUN_DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except SpecError as error:
        _print_problems(error)
        return EXIT_BAD_INPUT
    except BadInput as error:  # arguments, checkpoints, data, devices: each carries its own message
        print(f"alexspec {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingError as error:
        print(f"alexspec {args.command}: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except BrokenPipeError:
        return 0
    except OSError as exc:  # an output path that cannot be written
        print(f"alexspec: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug in alexspec, not in the input: show where
        traceback.print_exc()
        print(f"alexspec {args.command}: internal error (a bug in alexspec {__version__}, not in your input); "
              "please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL

if __name__ == "__main__":
    sys.exit(main())
