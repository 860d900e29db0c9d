"""Commands of the compiler side: validate, report, schema, compile, diff (none imports torch)."""
from __future__ import annotations

import functools
from pathlib import Path
import shlex
import shutil
import sys

from alexspec import analyse
from alexspec.cli.common import (EXIT_BAD_INPUT, SPEC_HELP, add_set_option, check_output_kind, device_list,
                                 positive_int, print_problems, resolve_spec, spec_document, write_out)
from alexspec.errors import BadInput, Loc, Problem, SpecError
from alexspec.words import count

EXAMPLES = {
    "validate": """
        examples:
          alexspec validate specs/alexnet.yaml
          alexspec validate specs/*.yaml          check several specs at once
          alexspec validate specs/                 every .yaml and .yml file in a folder
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
    "compile": """
        examples:
          alexspec compile specs/alexnet.yaml -o build/
            writes build/alexnet.py (the PyTorch module), build/graph.json (the IR with
            inferred shapes), build/report.json and build/alexnet.dot (+ .svg/.png with Graphviz)
            then: python -c "from build.alexnet import Alexnet; print(Alexnet(devices=['cpu']))"
          alexspec compile alexnet --devices cuda:0 -o build/     both towers on one GPU (groups)
          alexspec compile alexnet --devices cuda:0,cuda:1        the paper's split over two GPUs
    """,
    "diff": """
        examples:
          alexspec diff alexnet torchvision-alexnet          the paper's net against torchvision's
          alexspec diff alexnet alexnet-1gpu                 towers against groups
          alexspec diff a.yaml b.yaml --format json
    """,
}


def _specs_in(given: list[str]) -> list[str]:
    """The specs `validate` checks: each name as given, but a folder that is no run folder gives
    the .yaml and .yml files in it (a folder with none stays, to be refused by name)."""
    from alexspec.spec.bundled import run_folder_of

    specs = []
    for name in given:
        folder = Path(name)
        inside = sorted(str(p) for p in folder.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file()) \
            if folder.is_dir() and run_folder_of(name) is None else []
        specs.extend(inside or [name])
    return specs


def cmd_validate(args) -> int:
    failed = False
    for spec in _specs_in(args.specs):
        try:
            info = analyse(spec_document(spec, args.set))
        except SpecError as error:
            print_problems(error)
            failed = True
            continue
        net = info.network
        print(f"{net.file}: ok: {net.name}, {count(len(net.layers), 'layer')}, {info.total_params:,} params, "
              f"output {'x'.join(map(str, info.output_shape))}")
    return EXIT_BAD_INPUT if failed else 0


REPORT_SUFFIXES = {".json": "json", ".csv": "csv", ".md": "markdown", ".dot": "dot", ".gv": "dot"}


def report_format(given: str | None, output: str | None) -> str:
    """The report's format: --format, else what -o's file name says (.json, .csv, .md, .dot),
    else a table (.txt). BadInput where they disagree, or -o names a picture, a spec or a file of
    any other kind (the report writes none)."""
    suffix = Path(output).suffix.lower() if output else ""
    if suffix in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise BadInput(f"{output}: the report is text, not a picture: write `--format dot -o {Path(output).stem}.dot` "
                       f"and draw it with Graphviz (dot -T{suffix[1:]}), or `alexspec compile`, which draws it where "
                       "Graphviz is installed")
    if suffix in (".yaml", ".yml"):
        raise BadInput(f"{output}: a spec's name, and the report is not YAML (a spec there would be replaced); name "
                       "it .json, .csv, .md, .dot or .txt")
    if output and suffix not in (".txt", *REPORT_SUFFIXES) and not Path(output).is_dir():  # never a model's source
        check_output_kind(output, (".txt", ".md", ".json", ".csv", ".dot"),
                          "a report is a table (.txt), markdown, JSON, CSV or Graphviz")
    named = REPORT_SUFFIXES.get(suffix)
    if given and named and given != named:
        raise BadInput(f"{output}: a {suffix} file, but --format is {given}; name the file for its format, or drop "
                       "--format to take the file's")
    return given or named or "table"


def cmd_report(args) -> int:
    from alexspec.report import render

    fmt = report_format(args.format, args.output)
    info = analyse(spec_document(args.spec, args.set))
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() and not args.output else None
    text = render(info, fmt, args.batch, args.dtype, width)
    if args.output:
        from alexspec.fsutil import write_atomic

        if _same_file(args.output, resolve_spec(args.spec)):
            raise BadInput(f"{args.output}: is the spec being reported; write the report to another file")
        write_atomic(args.output, text)
        print(f"wrote {args.output}")  # every command says what it wrote on standard output
    else:
        write_out(text)
    return 0


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and Path(a).samefile(b)
    except OSError:
        return False


def cmd_schema(args) -> int:
    if args.format == "markdown":
        from alexspec.spec.schema_doc import markdown

        sys.stdout.write(markdown())
    else:
        from alexspec.spec.schema import schema_json

        sys.stdout.write(schema_json())
    return 0


def cmd_compile(args) -> int:
    from alexspec import build_folder
    from alexspec.codegen import generate
    from alexspec.diagram import dot, render
    from alexspec.fsutil import write_atomic
    from alexspec.graph import graph_json
    from alexspec.report import render as render_report

    info = analyse(spec_document(args.spec, args.set))
    devices = tuple(args.devices) if args.devices else None
    if devices and len(devices) not in (1, info.network.towers):
        raise SpecError([Problem(Loc("--devices", 1, 1), "", f"{count(len(devices), 'device')} for "
                                 f"{count(info.network.towers, 'tower')}", "give one device, or one per tower")])
    generated = generate(info, devices, args.backend, fuse=not args.no_fuse, fuse_lrn_pool=args.fuse_lrn_pool,
                         fuse_conv_lrn=args.fuse_conv_lrn)
    out = Path(args.output)
    name = info.network.name
    if out.suffix == ".py" and not out.is_dir():  # `-o net.py` would make a folder named net.py
        raise SpecError([Problem(Loc(str(out), 1, 1), "", f"-o names the output folder, where {name}.py, graph.json, "
                                 f"report.json and {name}.dot are written", "give a folder, e.g. -o build "
                                 f"(writes build/{name}.py)")])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is a file, not a folder" if out.is_file() else exc.strerror
        raise SpecError([Problem(Loc(str(out), 1, 1), "", f"cannot create the output folder ({why})",
                                 "choose another folder with -o")]) from None
    written = {f"{name}.py": generated.source, "graph.json": graph_json(info),
               "report.json": render_report(info, "json"), f"{name}.dot": dot(info)}
    build_folder.claim(out, [*written, f"{name}.svg", f"{name}.png"])  # Graphviz's pictures, where it is there
    for file, text in written.items():
        write_atomic(out / file, text)
    pictures = render(out / f"{name}.dot")
    build_folder.record(out, [*(out / file for file in written), *pictures])
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
    folder, dotted = (out.parent, f"{out.name}.{module}") if out.name.isidentifier() else (out, module)
    cd = "" if folder.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(folder))} && "
    return f"use it: {cd}python -c \"from {dotted} import {class_name}; model = {make}; print(model)\"{where}"


def cmd_diff(args) -> int:
    from alexspec.interop.diff import diff_data, render_data, run_values

    data = diff_data(analyse(args.a), analyse(args.b), (run_values(args.a), run_values(args.b)))
    write_out(render_data(data, args.format))
    return 0 if data["same"] or not args.exit_code else 1


def add_parsers(command) -> None:
    """Add validate, report, schema, compile and diff to the command line (`command(name, help, handler)` adds one)."""
    from alexspec.network_info import DTYPE_BYTES
    from alexspec.report import FORMATS

    command = functools.partial(command, examples=EXAMPLES)
    p = command("validate", "Check specs and list every problem with file:line:col and a fix.", cmd_validate)
    p.add_argument("specs", nargs="+", metavar="SPEC", help=SPEC_HELP + "; or a folder of spec files")
    add_set_option(p)

    p = command("report", "Show every layer's shape, params, MACs and memory, with totals.", cmd_report)
    p.add_argument("spec", nargs="?", default="alexnet", metavar="SPEC", help=SPEC_HELP + " (default: alexnet)")
    p.add_argument("--format", "-f", choices=FORMATS, help="output format (default: the -o file's: .json, .csv, "
                   ".md, .dot; else table)")
    p.add_argument("--batch", "-b", type=positive_int, default=1, help="images per batch for memory (default: 1)")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="fp32",
                   help="activation and parameter dtype for memory (default: fp32)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output: NAME.txt (a "
                   "table), .md, .json, .csv or .dot, which also sets the format")
    add_set_option(p)

    p = command("schema", "Print the spec language's JSON Schema (or its markdown reference).", cmd_schema)
    p.add_argument("--format", "-f", choices=("json", "markdown"), default="json", help="default: json")

    p = command("compile", "Compile a spec into a PyTorch module, with its IR, report and diagram.", cmd_compile)
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--output", "-o", default="build", metavar="DIR", help="output folder (default: build)")
    add_set_option(p)
    p.add_argument("--devices", "--device", dest="devices", type=device_list, metavar="LIST", help="default devices of the module, comma-separated: one per "
                   "tower (tower parallel) or one (towers become groups); default: the spec's placement")
    p.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                   help="default backend of the module (default: auto: triton on CUDA, else torch)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run every layer on its own (default: a conv's ReLU moved into the max pool or LRN after it; "
                        "see alexspec.fusion)")
    p.add_argument("--fuse-lrn-pool", action="store_true",
                   help="also run each LRN + max pool as one kernel (off by default: slower on an H100 than "
                        "the two kernels apart; see alexspec.fusion)")
    p.add_argument("--fuse-conv-lrn", action="store_true",
                   help="also run each conv + ReLU + LRN whose LRN groups fit one tile (AlexNet's conv1 + norm1, "
                        "conv2 + norm2) as one kernel, the LRN in the conv's epilogue (off until measured on a GPU; "
                        "see alexspec.fusion)")
    p = command("diff", "Show the layers, shapes, params, MACs and training settings that differ between two specs.",
                cmd_diff)
    p.add_argument("a", metavar="A", help=SPEC_HELP)
    p.add_argument("b", metavar="B", help=SPEC_HELP)
    p.add_argument("--format", "-f", choices=("text", "json"), default="text", help="default: text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the specs differ (like diff(1))")
