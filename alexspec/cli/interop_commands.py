"""Commands between alexspec and other tools: import, export."""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import traceback
from pathlib import Path

from alexspec import analyse
from alexspec.cli.common import SPEC_HELP, check_output_kind, device_list, resolve_spec
from alexspec.errors import BadInput
from alexspec.words import count

EXAMPLES = {
    "import": """
        examples:
          alexspec import torchvision:alexnet -o specs/tv.yaml           (needs torchvision; no download)
          alexspec import torchvision:resnet50 --weights resnet50.pth -o r50.yaml --weights-out r50.pt
          alexspec import python:mypkg.models:LeNet --input 1,32,32 -o lenet.yaml --weights-out lenet.pt
          alexspec import caffe deploy.prototxt -o caffe.yaml
    """,
    "export": """
        examples:
          alexspec export runs/d -o digits.onnx            a run folder: the spec it trained, its best.pt
          alexspec export digits --checkpoint runs/d/checkpoints/best.pt --format torch-export -o digits.pt2
          alexspec export alexnet --checkpoint CKPT --format onnx -o alexnet.onnx
    """,
}


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

    _check_import_outputs(args.output, args.weights_out)
    if args.source == "caffe":
        from alexspec.interop.caffe import spec_from_prototxt

        if not args.path:
            raise ImportProblem("`alexspec import caffe` needs the prototxt: alexspec import caffe deploy.prototxt")
        try:
            text = Path(args.path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImportProblem(f"{args.path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ImportProblem(f"{args.path}: not UTF-8 text; give the network's prototxt (a .caffemodel holds "
                                "weights, not the network)") from None
        if args.weights:
            raise ImportProblem("--weights loads a torch model's state dict; Caffe's .caffemodel is not read (convert "
                                "it with Caffe's tools to a PyTorch state dict keyed by the spec's layer names)")
        try:
            spec, imported = spec_from_prototxt(text, args.name, args.input), None
        except ImportProblem as exc:  # named by the file (and, where parsing failed, LINE:COL)
            said = str(exc)
            raise ImportProblem(f"{args.path}:{said}" if said[:1].isdigit() else f"{args.path}: {said}") from None
    else:
        from alexspec.interop.from_torch import spec_from_torch

        model, default_name = _torch_model(args.source)
        if args.weights:
            _load_weights(model, Path(args.weights))
        imported = spec_from_torch(model, args.input or (3, 224, 224), args.name or default_name,
                                   follows=args.source.split(":", 1)[0])
        spec = imported.spec
    out = Path(args.output)
    body = yaml_module.safe_dump(spec, sort_keys=False, width=110)
    write_atomic(out, f"{IMPORT_HEADER} " + " ".join(filter(None, [args.source, args.path])) + "`.\n"
                 + f"{DIGEST_NOTE} {_digest(body)}\n" + body)
    info = analyse(str(out))
    print(f"wrote {out}: {info.network.name}, {count(len(info.layers), 'layer')}, {info.total_params:,} params")
    if imported is not None and imported.log_softmax:
        print("note: its outputs are logits: the model's last op, log_softmax, is left out (alexspec's cross-entropy "
              "applies it; the class with the largest logit is the model's choice)")
    for sentence in imported.training_only if imported is not None else []:
        print(f"note: {sentence[0].lower()}{sentence[1:]}")
    if imported is not None and args.weights_out:
        from alexspec.train import checkpoint

        state = imported.convert_state_dict(model.state_dict())
        checkpoint.save_weights(Path(args.weights_out), state, checkpoint.network_hash(info))
        print(f"wrote {args.weights_out}: the model's weights as an alexspec checkpoint "
              f"(use with alexspec eval/export --checkpoint)")
    return 0


IMPORT_HEADER = "# Imported by `alexspec import"  # the first line of each spec import writes
DIGEST_NOTE = "# A later import replaces this file only while the lines below are as imported: sha256"  # + digest


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _edited_since_import(path: Path) -> bool:
    """Whether the lines below an imported spec's digest note differ from what the import wrote
    (False for a spec imported before the note was written)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n", 2)
    except (OSError, UnicodeDecodeError):
        return False
    return len(lines) == 3 and lines[1].startswith(DIGEST_NOTE) and lines[1] != f"{DIGEST_NOTE} {_digest(lines[2])}"


def _check_import_outputs(spec: str, weights: str | None) -> None:
    """BadInput where -o is no spec's name or --weights-out no checkpoint's (see check_output_kind),
    or names a file that an earlier import did not write (a spec of the user's, a trained
    checkpoint, the --weights read) or a spec edited since: only an import's own outputs, as it
    wrote them, are written again."""
    check_output_kind(spec, (".yaml", ".yml"), "the spec is YAML", f"-o {spec}")
    if Path(spec).is_file() and not _first_line(Path(spec)).startswith(IMPORT_HEADER):
        raise BadInput(f"-o {spec}: a spec that alexspec import did not write is there (it would be replaced); "
                       "give -o another name, or move that file away first")
    if Path(spec).is_file() and _edited_since_import(Path(spec)):
        raise BadInput(f"-o {spec}: the spec there was edited since alexspec import wrote it (the edits would be "
                       "lost); give -o another name, or move that file away first")
    if weights is not None:
        from alexspec.train import checkpoint

        check_output_kind(weights, (".pt", ".pth"), "the weights are a checkpoint", f"--weights-out {weights}")
        if Path(weights).exists() and not checkpoint.is_imported_weights(Path(weights)):
            raise BadInput(f"--weights-out {weights}: weights that alexspec import did not write are there (a "
                           "trained checkpoint, the weights read?); give --weights-out another name, or move that "
                           "file away first")


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline()
    except OSError:
        return ""


def _load_weights(model, path: Path) -> None:
    """Load a state dict file (torch.save of tensors, e.g. torchvision's resnet50-*.pth) into `model`."""
    from alexspec.interop.from_torch import ImportProblem
    from alexspec.train import checkpoint

    state = checkpoint.read_tensors(path)
    if not checkpoint.is_state_dict(state):
        raise ImportProblem(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(" ".join(str(exc).splitlines()[1:3]).split()).rstrip(".")  # the keys or shapes at fault
        raise ImportProblem(f"{path}: does not fit the model: {detail}; give the weights of this model") from None


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
        return factory(weights=None), rest  # never downloads: weights come from --weights
    if kind == "python":
        module_name, _, attr = rest.partition(":")
        if not module_name or not attr:
            raise ImportProblem(f"python:{rest} names no callable: write python:MODULE:CALLABLE, e.g. "
                                "python:mynets:LeNet (a function or class returning the model)")
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # a module in the current folder, as `python -m` finds it
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportProblem(f"cannot load {rest}: {exc} (modules are looked for in the current folder and "
                                "on PYTHONPATH)") from None
        except Exception as exc:  # the module's own code failed: its error, not ours
            raise ImportProblem(f"cannot load {rest}: importing {module_name} raised {_error(exc)}") from None
        factory = getattr(module, attr, None)
        if factory is None:
            raise ImportProblem(f"cannot load {rest}: {module_name} ({module.__file__}) has no {attr!r}")
        return _model_from(factory, rest), attr.lower()
    raise ImportProblem(f"unknown source {source!r}: use torchvision:NAME, python:MODULE:CALLABLE or caffe PATH")


def _model_from(factory, rest: str):
    """The torch.nn.Module that python:MODULE:CALLABLE names: a model made there, or what calling it returns."""
    import torch

    from alexspec.interop.from_torch import ImportProblem

    if isinstance(factory, torch.nn.Module):
        return factory  # a model the module made already
    if not callable(factory):
        raise ImportProblem(f"python:{rest} is an object of type {type(factory).__name__}, not a model or a "
                            "callable that makes one")
    try:
        model = factory()
    except Exception as exc:
        raise ImportProblem(f"{rest}() raised {_error(exc)}; the callable must make the model with no "
                            "arguments (wrap it: def make(): return Net(10))") from None
    if not isinstance(model, torch.nn.Module):
        raise ImportProblem(f"{rest}() returned an object of type {type(model).__name__}, not a torch.nn.Module; "
                            "name a function or class that returns the model")
    return model


def _error(exc: Exception) -> str:
    """An exception from the user's code in one line: its type, message and where it was raised."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__]
    return f"{type(exc).__name__}: {exc}" + (f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else "")


def cmd_export(args) -> int:
    from alexspec.interop.export import export, format_for
    from alexspec.spec.bundled import run_folder_holding, run_folder_of

    fmt = format_for(Path(args.output), args.format)
    weights = args.checkpoint or run_folder_of(args.spec) or (args.spec if run_folder_holding(args.spec) else None)
    out = export(resolve_spec(args.spec), Path(weights) if weights else None, fmt,
                 Path(args.output), args.backend, args.devices or ["cpu"], log=print)
    print(f"wrote {out} ({fmt})")
    return 0


def add_parsers(command) -> None:
    """Add import and export to the command line (`command(name, help, handler)` adds one)."""
    command = functools.partial(command, examples=EXAMPLES)
    p = command("import", "Write a spec for a torch.nn model or a Caffe prototxt.", cmd_import)
    p.add_argument("source", metavar="SOURCE", help="torchvision:NAME, python:MODULE:CALLABLE, or caffe")
    p.add_argument("path", nargs="?", metavar="PATH", help="the prototxt (caffe)")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the spec to write")
    p.add_argument("--input", type=_shape_arg, metavar="C,H,W", help="input shape (default 3,224,224 for "
                   "torch models; Caffe's from the prototxt)")
    p.add_argument("--name", help="network name (default: the model's)")
    p.add_argument("--weights", metavar="FILE", help="load this state dict into the model first (torch models: "
                   "e.g. torchvision's resnet50-*.pth, saved beforehand; nothing is downloaded)")
    p.add_argument("--weights-out", metavar="FILE", help="also write the model's weights as an alexspec checkpoint "
                   "(torch models; Caffe's .caffemodel is not read)")

    p = command("export", "Export a (trained) spec for inference: torch.export or ONNX.", cmd_export)
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--checkpoint", metavar="CKPT", help="weights to export: a checkpoint file, or a run folder (its "
                   "best.pt, else its newest checkpoint); default: the run folder given as SPEC, else the spec's "
                   "initialisation")
    p.add_argument("--format", "-f", choices=("torch-export", "onnx"),
                   help="default: from the file's name (.pt2: torch-export, .onnx: onnx)")
    p.add_argument("--output", "-o", required=True, metavar="FILE",
                   help="the file to write: NAME.pt2 (torch.export) or NAME.onnx (a file there is replaced)")
    p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                   help="torch-export: whose ops the program keeps (default auto)")
    p.add_argument("--devices", "--device", dest="devices", type=device_list, default="cpu", metavar="LIST",
                   help="device to trace on (default cpu)")
