"""What a cold start spends compiling, measured on a CPU with no GPU at all.

    python bench/compile_cost.py [SPEC] [--batch 16] [--precision bf16|fp32] [--arch 90]
                                 [--layer-by-layer] [--threads N] [--as-gpu MODEL [--multiprocessors SMS]]

Compiles every Triton kernel binary one training step of SPEC launches (triton backend,
as `alexspec bench --cold-start` runs it: bf16 channels-last for bf16, every conv by the
Triton kernels), each autotune config of each, for a CUDA GPU of compute capability --arch
(90: H100/H200), with the installed triton's ptxas, on CPU tensors (alexspec.kernels.tuning.ahead:
stand_in_gpu and compile_module_ahead, which launch nothing). Twice, in fresh processes: with an
empty Triton cache, then with the cache that run left, which is what a later start finds.
Prints the seconds and the number of binaries. --layer-by-layer compiles as a start without
compiling ahead does: each launch's configs together, one launch after the other. --as-gpu
takes the choices alexspec ships for that GPU model (alexspec.kernels.tuning.pretuned), as a start
there does: only the chosen configs compile, and convs chosen for cuDNN run it (on the CPU
here, which is slow at large batches; that time is left out of the compile time). With
--multiprocessors, a model with no table of its own takes a sibling's, as on that GPU (say
--as-gpu "NVIDIA H200" --multiprocessors 132 takes the H100's).

A GPU's cold start adds to this the timing of each config and of Triton against cuDNN, and
CUDA's own start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = Path(__file__).resolve().parent.parent / "specs" / "alexnet.yaml"


def one_start(spec: str, batch: int, precision: str, arch: int, threads: int | None, layer_by_layer: bool,
              as_gpu: str | None = None, multiprocessors: int | None = None) -> dict:
    """In this process: seconds to compile what one training step launches."""
    import torch

    from alexspec.kernels.tuning import ahead, autotune, pretuned

    if threads:
        autotune.COMPILE_THREADS = threads
    _fully_connected_in_fp32()
    with ahead.stand_in_gpu(arch, device_name=as_gpu, multiprocessors=multiprocessors):
        module, x = step_inputs(spec, batch, precision)
        optimizer = _optimizer(module, precision)
        if layer_by_layer:
            _one_launch_at_a_time(ahead)
        seconds = []
        for _ in range(2):  # the second finds every binary compiled: the CPU time of the step itself
            start = time.perf_counter()
            ahead.compile_module_ahead(module, x, torch.bfloat16 if precision == "bf16" else None, threads=threads,
                                       also=getattr(optimizer, "compile_ahead", None))
            seconds.append(time.perf_counter() - start)
            if len(seconds) == 1:  # layer by layer, each launch's compile_ahead() replaced the last's figures
                cold = {} if layer_by_layer else dict(ahead.last_run)
    return {"compile_s": round(seconds[0] - seconds[1], 2), "step_s": round(seconds[1], 2),
            "summed_s": cold.get("compile_s", 0.0), "threads": cold.get("threads", 0),
            "slowest_s": cold.get("slowest_s", 0.0), "slowest": cold.get("slowest", ""),
            **pretuned.what_served(as_gpu)}


def step_inputs(spec: str, batch: int, precision: str, fuse_conv_lrn: bool = False):
    """(module, batch) of SPEC's triton-backend module on CPU, as `alexspec bench` steps it: bf16
    runs channels-last; `fuse_conv_lrn`: with that opt-in fusion. Call within ahead.stand_in_gpu()."""
    import torch

    from alexspec.builder import build

    built = build(spec, backend="triton", devices=["cpu"], fuse_conv_lrn=fuse_conv_lrn)
    module, x = built.module, torch.randn(batch, *built.info.network.input)
    if precision == "bf16":
        module, x = module.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return module, x


def _optimizer(module, precision: str):
    """The step's optimizer where it launches Triton kernels: with bf16, SGD writing the weights'
    bf16 copies (as `alexspec bench` and the trainer run it); None otherwise (torch's fused SGD)."""
    from alexspec.train.weight_copies import SGDWithCopies, WeightCopies

    if precision != "bf16":
        return None
    return SGDWithCopies(module.parameters(), WeightCopies(module), lr=1e-3, momentum=0.9, weight_decay=5e-4)


def check_spec(parser: argparse.ArgumentParser, spec: str) -> None:
    """Exit 2 with the spec's problems, one a line (file:line:col), where it is not a valid spec."""
    from alexspec import analyse
    from alexspec.errors import SpecError

    try:
        analyse(spec)
    except SpecError as error:
        parser.exit(2, f"{error}\n")


def _fully_connected_in_fp32() -> None:
    """Run the fully connected layers' matmuls in fp32 here: they launch no Triton kernel, and
    a CPU's bf16 matmuls take seconds (which would blur the compile time)."""
    import torch

    def fp32_linear(x, weight, bias=None):
        with torch.autocast("cpu", enabled=False):
            return plain_linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)

    plain_linear = torch.nn.functional.linear
    torch.nn.functional.linear = fp32_linear


def _one_launch_at_a_time(ahead) -> None:
    """Make compile_module_ahead compile as a start without it does: each launch's configs
    together (a compile_ahead of its own), one launch after the other."""
    compile_ahead = ahead.compile_ahead
    for tuner in _tuners():
        tuner.run = (lambda submit: lambda *args, **kwargs: compile_ahead(lambda: submit(*args, **kwargs)))(tuner.run)
    ahead.compile_ahead = lambda step, threads=None: step() or True  # no pool around the whole step


def _tuners() -> list:
    """The autotuned kernels of alexspec.kernels."""
    from triton.runtime.autotuner import Autotuner

    from alexspec.kernels.ops import conv_lrn, conv_triton, lrn, lrn_pool, maxpool

    modules = [conv_triton, conv_lrn, lrn, lrn_pool, maxpool]
    return [value for module in modules for value in vars(module).values() if isinstance(value, Autotuner)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(SPEC))
    parser.add_argument("--batch", type=int, default=16,
                        help="batch size (default 16: any multiple of 16 compiles the same binaries)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability to compile for (default 90)")
    parser.add_argument("--threads", type=int, help="compile threads (default: one a core, at most 32)")
    parser.add_argument("--layer-by-layer", action="store_true", help="compile one launch's configs at a time")
    parser.add_argument("--as-gpu", metavar="MODEL", help="take the choices shipped for this GPU model, say "
                        "'NVIDIA H100 80GB HBM3' (kernels/tuning/gpu-choices; they are for batch 256 and its neighbours "
                        "within 4x): only the chosen configs compile (default: none, every config compiles)")
    parser.add_argument("--multiprocessors", type=int, metavar="SMS", help="with --as-gpu: that GPU's SM count, "
                        "so that a model with no table of its own takes a sibling's (the same compute capability "
                        "--arch and SM count)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single start, in this process
    args = parser.parse_args(argv)
    check_spec(parser, args.spec)
    if args.one:
        print(json.dumps(one_start(args.spec, args.batch, args.precision, args.arch, args.threads,
                                   args.layer_by_layer, args.as_gpu, args.multiprocessors)))
        return 0
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    how = "layer by layer" if args.layer_by_layer else "ahead, all at once"
    with tempfile.TemporaryDirectory(prefix="alexspec-compile-cost-") as cache:
        for name in ("empty cache", "warm cache"):
            command = [sys.executable, __file__, *sys.argv[1:], "--one"] if argv is None else \
                [sys.executable, __file__, *argv, "--one"]
            done = subprocess.run(command, capture_output=True, text=True, env={**env, "TRITON_CACHE_DIR": cache})
            if done.returncode != 0:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            binaries = len(list(Path(cache).rglob("*.cubin")))
            shipped = ""
            if args.as_gpu and result["shipped_table"]:
                shipped = f", {result['shipped_choices_taken']} choices shipped for {result['shipped_table']}"
            elif args.as_gpu:
                shipped = f", no choices shipped for {args.as_gpu}"
            print(f"{name}: {result['compile_s']:.1f} s compiling {how} for sm_{args.arch}{shipped} "
                  f"({binaries} kernel binaries in the cache, {os.cpu_count()} cores; the step's own CPU time "
                  f"{result['step_s']:.1f} s left out)"
                  + (f"; {result['summed_s']:.1f} s compiling summed over {result['threads']} threads, "
                     f"the slowest binary ({result['slowest']}) {result['slowest_s']:.1f} s" if result["summed_s"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
