"""`alexspec bench`: time a spec against its baselines, or summarise the results kept."""
from __future__ import annotations

import functools
import itertools
from pathlib import Path
import sys

from alexspec.cli.common import SPEC_HELP, check_output_kind, non_negative_int, positive_int, resolve_spec, seconds
from alexspec.errors import BadInput, Loc, Problem, SpecError

EXAMPLES = {
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
}


def _bench_history(folder: Path, plot_file: str | None) -> int:
    from alexspec.bench import history as bench_history
    from alexspec.plotting import picture_path

    plot_path = picture_path(plot_file, "history.png") if plot_file else folder / "history.png"
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
    out = bench_history.plot(runs, plot_path)
    print(f"wrote {out}")
    return 0


def _check_batch(spec: str, batch: int) -> None:
    """BadInput where the network cannot train on batches of `batch` images (checked before any timing)."""
    from alexspec import analyse

    problem = analyse(spec).batch_of_one_problem if batch == 1 else None
    if problem:
        raise BadInput(f"--batch 1 is too small: {problem}; give --batch 2 or more")


def cmd_bench(args) -> int:
    if args.history:
        return _bench_history(Path(args.history), args.plot)
    from alexspec.bench import cpu, results

    if args.output:  # checked before minutes of timing
        check_output_kind(args.output, (".json",), "the results are JSON")
    result = {}
    if args.cpu_figures:
        result["cpu_figures"] = figures = cpu.cpu_figures()
        print(f"report (fresh process) {figures['report_wall_s']:.3f} s; compiler import "
              f"{figures['compiler_import_s']:.3f} s (imports torch: {figures['compiler_imports_torch']}); "
              f"validate + infer of 1,000 layers {figures['validate_infer_1000_layers_s']:.3f} s")
    if not args.cpu_figures or args.spec:
        from alexspec.bench.profile import quiet_profiler_log

        quiet_profiler_log()  # before torch loads
        import torch

        from alexspec.bench import baselines, run, startup

        cuda = torch.cuda.is_available()
        plan = baselines.plan(cuda, args.batch, args.steps, args.repeats, args.compare, args.max_autotune,
                              args.precision)
        if plan["note"]:
            print(plan["note"])
        batch, compare, precision = plan["batch"], plan["compare"], plan["precision"]
        spec = resolve_spec(args.spec or "alexnet")
        _check_batch(spec, batch)
        if args.cold_start:
            print("spec to warm module in fresh processes (an empty Triton cache, then the one it left"
                  + (", then empty ones compiling layer by layer and, where alexspec ships choices for this GPU, "
                     "timing every choice)..." if cuda else ")..."))
            result["startup"] = startup.startup(spec, batch, precision, layer_by_layer=cuda, profiled=cuda)
            for name, figures in result["startup"].items():
                print(startup.describe_start(name, figures))
        out = _bench_out(args.output, cuda)

        def keep(partial: dict) -> None:  # an interrupted run keeps what it timed
            if out:
                results.write({**result, **partial}, out)

        result.update(run.run(spec, batch, precision, compare, "compile-max-autotune" in compare, plan["steps"],
                              args.warmup, args.ablate, progress=keep, repeats=plan["repeats"],
                              min_seconds=args.min_time))
    else:
        out = _bench_out(args.output, False)
    if out:
        results.write(result, out)
        print(f"wrote {out}")
    return 0


def _bench_out(out: str | None, cuda: bool) -> Path | None:
    """Where `alexspec bench` writes its JSON: -o/--output, else on CUDA a new file in bench/results:
    bench-<date>.json, or bench-<date>-2.json (-3, ...) where an earlier run that day wrote it."""
    import datetime

    if out:
        return Path(out)
    if not cuda:
        return None
    day = datetime.date.today().isoformat()
    names = (f"bench-{day}.json" if n == 1 else f"bench-{day}-{n}.json" for n in itertools.count(1))
    return next(path for path in (Path("bench/results") / name for name in names) if not path.exists())


def add_parsers(command) -> None:
    """Add bench to the command line (`command(name, help, handler)` adds one)."""
    command = functools.partial(command, examples=EXAMPLES)
    p = command("bench", "Time training and inference against the PyTorch baselines a user would pick.", cmd_bench)
    p.add_argument("spec", nargs="?", metavar="SPEC", help=SPEC_HELP + " (default: alexnet)")
    p.add_argument("--batch", type=positive_int, help="default: 256 on CUDA, 8 on CPU")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="default: bf16 (channels-last) on CUDA; fp32 on CPU, as `alexspec train` runs there")
    p.add_argument("--compare", metavar="LIST",
                   help="baselines, comma-separated: eager (SGD foreach), eager-fused (SGD(fused=True)), "
                        "eager-graphed (the whole step as a CUDA "
                        "graph, fused SGD), compile (torch.compile default, fused SGD), compile-reduce-overhead, "
                        "compile-max-autotune (both with torch.compile's CUDA graphs, fused SGD); '' for none "
                        "(default on CUDA: all but compile-max-autotune; on CPU: eager, eager-fused)")
    p.add_argument("--max-autotune", action="store_true",
                   help="also compare with torch.compile max-autotune, its CUDA graphs on (minutes to compile)")
    p.add_argument("--steps", type=positive_int, help="timed steps, at least (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--min-time", type=seconds, default=0.2, metavar="SECONDS",
                   help="each timing runs more than --steps steps where they take less than this (default 0.2 s: "
                        "a few milliseconds' timing measures mostly the machine's noise; 0: exactly --steps)")
    p.add_argument("--repeats", type=positive_int, help="time each figure this many times and report the median and "
                   "range (default: 1 on CUDA, 7 on CPU, where timings move more; on CPU in rounds, every candidate "
                   "timed in turn in each, and each ratio the median of the rounds')")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--output", "-o", "--out", dest="output", metavar="FILE",
                   help="JSON file (default on CUDA: bench/results/bench-<date>.json, -2, -3, ... added for "
                        "later runs that day)")
    p.add_argument("--cpu-figures", action="store_true", help="also (or, without SPEC, only) time the compiler")
    p.add_argument("--history", nargs="?", const="bench/results", metavar="DIR",
                   help="instead of timing: summarise the results in DIR (default bench/results) as markdown "
                        "tables and a plot")
    p.add_argument("--plot", metavar="FILE", help="with --history: the plot's file, .png, .svg or .pdf "
                   "(default DIR/history.png)")
    p.add_argument("--ablate", action="store_true", help="also time alexspec with each speed lever off in turn "
                   "(fusion, channels_last, fused_optimizer, weight_copies, cuda_graphs, triton_conv) and record each one's effect")
    p.add_argument("--cold-start", action="store_true", help="also time spec -> warm module (build and first "
                   "training step) in fresh processes: with an empty Triton cache, and with the cache that left; on a GPU "
                   "also with an empty cache and ALEXSPEC_COMPILE_AHEAD=0 (each kernel compiled at its first launch), "
                   "with ALEXSPEC_PRETUNED=0 where alexspec ships choices for the GPU (each one timed), and a warm "
                   "start under cProfile")
