"""`alexspec bench`: how fast a compiled spec trains and infers, against PyTorch, in one process.

The alexspec module (triton backend on CUDA) runs beside the same network in plain PyTorch
(the torch backend, same weights) as a user would run it (BASELINES: eager; eager with the
whole step captured as a CUDA graph and fused SGD; torch.compile default, reduce-overhead and
max-autotune, with fused SGD and their own CUDA graphs), on the same random inputs, each
with its settings recorded; the headline is the ratio to the strongest of them.
Reported: images/s for a training step (forward, backward, SGD) and for inference (the
median of --repeats timings, with their spread), the ratio to each baseline, warm-up/compile
time, peak memory, achieved FLOP/s (and the fraction of the device's peak where known), and
a per-op time breakdown of the alexspec step.
CPU figures (`--cpu-figures`): wall time of `alexspec report` in a fresh process, import time
of the compiler, validate+infer time of a generated 1,000-layer spec.
"""
from __future__ import annotations

import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alexspec import settings

# Dense peak TFLOP/s by (device name fragment, precision); the fp32 entry is TF32 tensor cores.
PEAK_TFLOPS = {("H100", "bf16"): 989.0, ("H100", "fp32"): 494.0, ("H200", "bf16"): 989.0,
               ("H200", "fp32"): 494.0, ("A100", "bf16"): 312.0, ("A100", "fp32"): 156.0}


def cpu_figures(repeats: int = 5) -> dict:
    """Compiler speed on this machine (no GPU involved)."""
    report = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "alexspec", "report", "alexnet"], capture_output=True, check=True)
        report.append(time.perf_counter() - start)
    code = ("import time; t = time.perf_counter(); import alexspec.spec, alexspec.infer, alexspec.report; "
            "import sys; print(time.perf_counter() - t, 'torch' in sys.modules)")
    imports = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        imports.append(float(out[0]))
        torch_imported = out[1] == "True"
    from alexspec.spec import analyse, load_text
    import yaml

    layers = [{"name": f"conv{i}", "type": "conv", "out": 8, "kernel": 3, "padding": 1, "activation": "relu"}
              for i in range(999)] + [{"name": "flatten", "type": "flatten"}]
    text = yaml.safe_dump({"alexspec": 1, "name": "deep", "input": {"channels": 8, "height": 8, "width": 8},
                           "layers": layers})
    deep = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyse(load_text(text, "deep.yaml"))
        deep.append(time.perf_counter() - start)
    return {"report_wall_s": round(statistics.median(report), 3),
            "compiler_import_s": round(statistics.median(imports), 3), "compiler_imports_torch": torch_imported,
            "validate_infer_1000_layers_s": round(statistics.median(deep), 3)}


def _timed(fn, steps: int, synchronize) -> float:
    """Seconds per call over `steps` calls (after the caller's warm-up)."""
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize()
    return (time.perf_counter() - start) / steps


# The baselines, each as a user who wants speed would run the network in PyTorch. compile: torch.compile's
# mode (None: eager); cuda_graphs: "step" (the whole training step, and the forward pass, captured as CUDA
# graphs, as alexspec's are), "inductor" (torch.compile's own CUDA graphs of what it compiles) or None;
# fused_sgd: torch.optim.SGD(fused=True), else its default (foreach) implementation.
BASELINES = {
    "eager": {"compile": None, "cuda_graphs": None, "fused_sgd": False},
    "eager-graphed": {"compile": None, "cuda_graphs": "step", "fused_sgd": True},
    "compile": {"compile": "default", "cuda_graphs": None, "fused_sgd": True},
    "compile-reduce-overhead": {"compile": "reduce-overhead", "cuda_graphs": "inductor", "fused_sgd": True},
    "compile-max-autotune": {"compile": "max-autotune", "cuda_graphs": "inductor", "fused_sgd": True},
}
SLOW_TO_COMPILE = ("compile-max-autotune",)  # minutes of autotuning: only with --max-autotune


def defaults(cuda: bool) -> dict:
    """Batch, timed steps and repeats when the command line names none: AlexNet's batch 256 on a GPU; on
    a CPU a small batch, timed three times (its timings move more)."""
    return {"batch": 256, "steps": 20, "repeats": 1} if cuda else {"batch": 8, "steps": 2, "repeats": 3}


def default_baselines(cuda: bool, max_autotune: bool) -> list[str]:
    """The baselines `alexspec bench` compares with when --compare is not given: on a GPU all of them
    (max-autotune with --max-autotune); on CPU eager alone (see cpu_note)."""
    if not cuda:
        return ["eager"]
    return [name for name in BASELINES if name not in SLOW_TO_COMPILE or max_autotune]


def cpu_note() -> str:
    return ("on CPU alexspec runs the torch backend (the Triton kernels need a GPU), CUDA graphs need CUDA, and "
            "torch.compile spends minutes compiling: comparing with eager only (--compare eager,compile times "
            "torch.compile too)")


def parse_baselines(text: str) -> list[str]:
    """--compare's comma-separated baseline names; BadInput for one that is not a baseline."""
    from alexspec.errors import BadInput

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise BadInput(f"--compare takes baselines among {', '.join(BASELINES)}; {', '.join(unknown)} is not one")
    return names


def strongest(results: dict, what: str) -> str | None:
    """The baseline in `results` with the most images/s for `what` (train or infer)."""
    measured = [name for name in BASELINES if f"{what}_img_s" in results.get(name, {})]
    return max(measured, key=lambda name: results[name][f"{what}_img_s"], default=None)


def describe_settings(ran: dict) -> str:
    """A baseline's settings in words, e.g. `torch.compile reduce-overhead, its CUDA graphs, SGD(fused=True)`."""
    mode = f"torch.compile {ran['mode']}" if ran["mode"] != "eager" else "eager"
    graphs = {"step": "the whole step as a CUDA graph", "inductor": "its own CUDA graphs"}.get(ran["cuda_graphs"],
                                                                                              "no CUDA graphs")
    return f"{mode}, {graphs}, {ran['optimizer']}"


# The speed levers `--ablate` turns off one at a time (all are on in the headline alexspec figure).
OPT_IN = ("lrn_pool_fusion",)  # levers off by default, timed turned on by the ablation
LEVERS = {
    "fusion": "conv ReLUs moved into the max pool after them (alexspec.fusion)",
    "lrn_pool_fusion": "LRN + max pool as one kernel (opt-in: the ablation times it turned on)",
    "channels_last": "NHWC activations (bf16 only)",
    "fused_optimizer": "SGD updating every parameter in one fused kernel",
    "weight_copies": "bf16 only, with fused_optimizer: the conv and fc layers run on bf16 copies of the weights that "
                     "the SGD step writes (one kernel a weight), instead of autocast casting weights and gradients",
    "cuda_graphs": "the whole training step and the forward pass replayed as CUDA graphs (CUDA only)",
    "triton_conv": "each conv shape, forward and backward, by Triton or cuDNN, whichever was faster when timed "
                   "(off: cuDNN)",
}


def captured(body, prepare=lambda: None, warmup: int = 3):
    """`body`, which must read and write only tensors that outlive it, recorded as one CUDA graph;
    `prepare` runs before each of `warmup` runs on a side stream (where Triton autotunes) and
    before the capture. Returns the replay."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            prepare()
            body()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    prepare()
    with torch.cuda.graph(graph):
        body()
    return graph.replay


def run(spec: str, batch: int, precision: str, compare: list[str], max_autotune: bool, steps: int,
        warmup: int, ablate: bool = False, log=print, progress=lambda partial: None, repeats: int = 1) -> dict:
    """Benchmark `spec` against the baselines named in `compare` (BASELINES); returns the JSON-ready
    result. Each images/s is the median of `repeats` timings of `steps` steps, with their spread.
    `progress` gets the result so far (with "complete": False) after each measurement, so an
    interrupted run keeps what it timed."""
    import torch

    from alexspec.builder import build
    from alexspec.kernels import conv_choice

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        log("no CUDA device: benchmarking the torch backend on CPU (the Triton kernels need a GPU)")
    all_levers = {name: name not in OPT_IN and (name not in ("cuda_graphs", "triton_conv") or cuda)
                  for name in LEVERS}
    if conv_choice.mode() == "cudnn":
        all_levers["triton_conv"] = False
    if precision != "bf16":
        all_levers["channels_last"] = all_levers["weight_copies"] = False
    torch.manual_seed(0)
    started = time.perf_counter()
    reference = build(spec, backend="triton" if cuda else "torch", devices=[device])
    build_seconds = time.perf_counter() - started
    info = reference.info
    x_nchw = torch.randn(batch, *info.network.input, device=device)
    labels = torch.randint(0, info.output_shape[0], (batch,), device=device)
    flops_per_image = 2 * info.total_macs

    def make(kind: str, levers: dict):
        if kind == "alexspec":
            module = build(spec, backend="triton" if cuda else "torch", devices=[device],
                           fuse=levers["fusion"], fuse_lrn_pool=levers["lrn_pool_fusion"]).module
        else:
            module = build(spec, backend="torch", devices=[device], fuse=False).module
        module.load_state_dict(reference.module.state_dict())
        if levers["channels_last"]:
            module = module.to(memory_format=torch.channels_last)
        runnable = module
        mode = BASELINES.get(kind, {}).get("compile")
        if mode:
            runnable = torch.compile(module, mode=None if mode == "default" else mode)
        return module, runnable

    def measure(kind: str, levers: dict, label: str, profile_into: dict | None = None) -> dict:
        with conv_choice.using(conv_choice.mode() if levers["triton_conv"] else "cudnn"):
            return timed_run(kind, levers, label, profile_into)

    def timed_run(kind: str, levers: dict, label: str, profile_into: dict | None) -> dict:
        gc.collect()  # the previous candidate's module, graphs and memory go first
        if cuda:
            torch.cuda.empty_cache()
        module, runnable = make(kind, levers)
        x = x_nchw.contiguous(memory_format=torch.channels_last) if levers["channels_last"] else x_nchw
        zero_grad, train_body, optimizer = _training_step(runnable, module, x, labels, precision,
                                                          levers["fused_optimizer"], levers["weight_copies"])
        autocast = _autocast(device, precision)

        # torch.compile's own CUDA graphs are told where a step begins (their outputs are then reused)
        inductor_graphs = BASELINES.get(kind, {}).get("cuda_graphs") == "inductor"
        step_begins = torch.compiler.cudagraph_mark_step_begin if inductor_graphs else (lambda: None)

        def train_step():
            step_begins()
            zero_grad()
            train_body()

        def infer_step():
            step_begins()
            with torch.no_grad(), autocast:
                runnable(x)

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        module.train()
        compiled_ahead = _compile_ahead(module, x, precision, optimizer) if kind == "alexspec" and cuda else None
        train_step()
        synchronize()
        first = time.perf_counter() - start
        if profile_into is not None:
            profile_into["ops"] = _profile(train_step, device)
        train = captured(train_body, zero_grad) if levers["cuda_graphs"] else train_step
        for _ in range(warmup):
            train()
        trains = [batch / _timed(train, steps, synchronize) for _ in range(repeats)]
        module.eval()
        infer = captured(infer_step) if levers["cuda_graphs"] else infer_step
        for _ in range(warmup):
            infer()
        infers = [batch / _timed(infer, steps, synchronize) for _ in range(repeats)]
        train_img_s = statistics.median(trains)
        result = {"train_img_s": round(train_img_s, 1), "infer_img_s": round(statistics.median(infers), 1),
                  "first_step_s": round(first, 2),
                  "train_tflops": round(3 * flops_per_image * train_img_s / 1e12, 3)}
        if repeats > 1:  # how much the timings of this machine moved: read a ratio with it
            result.update(repeats=repeats, train_img_s_range=[round(min(trains), 1), round(max(trains), 1)],
                          infer_img_s_range=[round(min(infers), 1), round(max(infers), 1)])
        if compiled_ahead is not None:
            result["compile_ahead_s"] = compiled_ahead  # part of first_step_s
        if cuda:
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        log(f"{label:24} train {_rate(result, 'train')}   infer {_rate(result, 'infer')}   "
            f"first step {result['first_step_s']:.2f} s")
        return result

    def baseline_levers(kind: str) -> dict:
        how = BASELINES[kind]
        return {**all_levers, "fusion": False, "lrn_pool_fusion": False, "weight_copies": False,
                "fused_optimizer": how["fused_sgd"], "cuda_graphs": how["cuda_graphs"] == "step"}

    name = torch.cuda.get_device_name() if cuda else (platform.processor() or "cpu")
    peak = next((v for (fragment, p), v in PEAK_TFLOPS.items() if fragment in name and p == precision), None)
    profiled, results, levers = {}, {}, {}

    def summary(complete: bool) -> dict:
        return {"spec": str(spec), "device": name, "cuda": cuda, "batch": batch, "precision": precision,
                "levers_on": [n for n, on in all_levers.items() if on], "max_autotune": max_autotune,
                "steps": steps, "warmup": warmup, "repeats": repeats,
                "autotune": settings.current().autotune, "headline": headline(results),
                "spec_to_module_s": round(build_seconds, 3), "results": results, "levers": levers,
                "profile": profiled.get("ops", []), "conv_choices": conv_choice.choices(), **_versions(),
                "date": datetime.date.today().isoformat(), "complete": complete}

    results["alexspec"] = measure("alexspec", all_levers, "alexspec", profiled)
    results["alexspec"]["spec_to_warm_module_s"] = round(build_seconds + results["alexspec"]["first_step_s"], 2)
    if peak:
        results["alexspec"]["fraction_of_peak"] = round(results["alexspec"]["train_tflops"] / peak, 4)
    print_profile(profiled["ops"], log)
    for entry in conv_choice.choices():
        timed = ", ".join(f"{key[:-3]} {ms:.3f} ms" if ms is not None else f"{key[:-3]} failed"
                          for key, ms in entry.items() if key.endswith("_ms"))
        log(f"  conv {entry['shape']}: {entry['implementation']} "
            f"({'taken from the shipped table' if entry.get('pretuned') else timed})")
    results["alexspec"]["settings"] = {"mode": "alexspec", "cuda_graphs": "step" if all_levers["cuda_graphs"] else None,
                                       "optimizer": _optimizer_name(all_levers["fused_optimizer"],
                                                                    all_levers["weight_copies"])}
    progress(summary(False))
    for kind in compare:
        how = BASELINES[kind]
        ran = {"mode": how["compile"] or "eager", "cuda_graphs": how["cuda_graphs"],
               "optimizer": _optimizer_name(how["fused_sgd"])}
        if how["cuda_graphs"] and not cuda:
            results[kind] = {"skipped": "needs CUDA (CUDA graphs)", "settings": ran}
            log(f"{kind:24} skipped: its CUDA graphs need CUDA")
            continue
        results[kind] = {**measure(kind, baseline_levers(kind), kind), "settings": ran}
        results[kind].update({f"alexspec_{key}": value for key, value in
                              _speedups(results["alexspec"], results[kind]).items()})
        log(f"alexspec vs {kind} ({describe_settings(ran)}): training {_ratio_text(results[kind], 'train')}, "
            f"inference {_ratio_text(results[kind], 'infer')}")
        progress(summary(False))
    for what, said in headline(results).items():
        log(f"headline, {what}: x{said['speedup']} the strongest baseline, {said['baseline']} "
            f"({describe_settings(results[said['baseline']]['settings'])})")
    for lever, on in all_levers.items() if ablate else ():
        if on:
            off = measure("alexspec", {**all_levers, lever: False}, f"alexspec without {lever}")
            levers[lever] = {"on": True, "without": off, **_speedups(results["alexspec"], off)}
        elif lever in OPT_IN:  # off by default: time what turning it on does
            with_it = measure("alexspec", {**all_levers, lever: True}, f"alexspec with {lever}")
            levers[lever] = {"on": False, "with": with_it, **_speedups(with_it, results["alexspec"])}
        else:
            levers[lever] = {"on": False, "why": _why_off(lever, cuda, precision)}
            continue
        log(f"  {lever}: training x{levers[lever]['train_speedup']}, inference x{levers[lever]['infer_speedup']}")
        progress(summary(False))
    return summary(True)


def _autocast(device: str, precision: str):
    """bf16 autocast for --precision bf16 (off for fp32)."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def _training_step(runnable, module, x, labels, precision: str, fused: bool, copies: bool = False):
    """(zero_grad, body, optimizer) of the benchmarked training step: forward under autocast,
    cross-entropy, backward and an SGD step with momentum and weight decay; with `copies` (bf16
    and `fused`), on bf16 weight copies that the SGD step writes, as the trainer runs bf16 SGD."""
    import torch
    import torch.nn.functional as F

    from alexspec.train.weight_copies import SGDWithCopies, WeightCopies

    recipe = dict(lr=1e-3, momentum=0.9, weight_decay=5e-4)
    if copies and fused and precision == "bf16":
        runnable = WeightCopies(module)
        opt = SGDWithCopies(module.parameters(), runnable, **recipe)
    else:
        opt = torch.optim.SGD(module.parameters(), fused=fused, **recipe)
    autocast = _autocast(x.device.type, precision)

    def zero_grad():
        opt.zero_grad(set_to_none=True)

    def body(mark=lambda phase: None):
        with autocast:
            out = runnable(x)
        mark("forward")
        F.cross_entropy(out.float(), labels).backward()
        mark("backward")
        opt.step()
        mark("optimizer step")

    return zero_grad, body, opt


def _compile_ahead(module, x, precision: str, optimizer) -> float | None:
    """Every Triton kernel of the training step (the optimizer's too) compiled at once before it
    (alexspec.kernels.ahead); the seconds it took, None where nothing was compiled ahead."""
    import torch

    from alexspec.kernels import ahead

    start = time.perf_counter()
    if ahead.compile_module_ahead(module, x, torch.bfloat16 if precision == "bf16" else None,
                                  also=getattr(optimizer, "compile_ahead", None)):
        return round(time.perf_counter() - start, 2)
    return None


def first_step(spec: str, batch: int, precision: str, profile: bool = False) -> dict:
    """In this process: seconds to import torch and alexspec, to build `spec` (triton backend on
    CUDA) and to run its first training step (every kernel compiled and autotuned; of which the
    seconds compiling ahead, timing autotune configs and timing Triton against cuDNN, and how
    many choices it took from the table shipped for this GPU model), as the headline run does
    it (bf16: channels-last and weight copies; fused SGD); and the seconds of each phase of the
    first step (making the optimizer, compiling ahead, forward, backward, optimizer step, each
    waiting for the GPU's work). With `profile`, also the Python
    functions (and the C functions they call) the first step spent the most time in, backward
    included (cProfile, which slows it a little)."""
    start = time.perf_counter()
    import torch

    from alexspec.builder import build
    imported = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    built = build(spec, backend="triton" if cuda else "torch", devices=[device])
    module = built.module.to(memory_format=torch.channels_last) if precision == "bf16" else built.module
    x = torch.randn(batch, *built.info.network.input, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if precision == "bf16" else x
    labels = torch.randint(0, built.info.output_shape[0], (batch,), device=device)
    ready = time.perf_counter()
    phases, clock = {}, [ready]

    def mark(phase: str) -> None:  # the seconds since the last mark, the GPU's work included
        if cuda:
            torch.cuda.synchronize()
        phases[phase], clock[0] = round(time.perf_counter() - clock[0], 2), time.perf_counter()

    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    # profiled, the backward runs in this thread (on a GPU autograd runs it in a thread of its own,
    # which cProfile would not see)
    with torch.autograd.set_multithreading_enabled(not profile):
        zero_grad, body, optimizer = _training_step(module, module, x, labels, precision, fused=True, copies=True)
        mark("making the optimizer")
        compiled_ahead = _compile_ahead(module, x, precision, optimizer) if cuda else None
        mark("compiling ahead")
        zero_grad()
        body(mark)
    done = clock[0]
    if profiler:
        profiler.disable()
    from alexspec.kernels import _common, ahead, conv_choice, pretuned

    gpu = pretuned.device_name()
    return {"import_s": round(imported - start, 2), "build_s": round(ready - imported, 2),
            "first_step_s": round(done - ready, 2), "first_step_phases_s": phases,
            "spec_to_warm_module_s": round(done - imported, 2),
            "compile_ahead_s": compiled_ahead, "autotune_timing_s": round(_common.timing.seconds, 2),
            "conv_choice_timing_s": round(conv_choice.timing.seconds, 2),
            "device": gpu, **pretuned.what_served(gpu),
            "python_bytecode": {"written": not sys.dont_write_bytecode, "cache_prefix": sys.pycache_prefix},
            "compiled_ahead": dict(ahead.last_run), **({"profile": _top_functions(profiler)} if profiler else {})}


def _top_functions(profiler, top: int = 12) -> dict:
    """The functions a cProfile run spent the most time in: by their own time, and by their
    time with what they called, as {"own": [{function, s}], "total": [...]}."""
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, primitive, own, total, callers)}

    def rows(column: int) -> list[dict]:
        ranked = sorted(stats.items(), key=lambda item: item[1][column], reverse=True)[:top]
        return [{"function": pstats.func_std_string(where), "s": round(figures[column], 3)} for where, figures in ranked]

    return {"own": rows(2), "total": rows(3)}


def startup(spec: str, batch: int, precision: str, layer_by_layer: bool = False, profiled: bool = False) -> dict:
    """Spec to warm module in fresh processes (`first_step`, plus the whole process's wall time):
    once with an empty Triton cache, where every kernel is compiled and autotuned, and once more
    with the cache that left, as any later run finds it; with `layer_by_layer` (on a GPU) also
    with another empty cache and ALEXSPEC_COMPILE_AHEAD=0, each kernel compiled at its first
    launch (what compiling ahead saves), and where alexspec ships choices for this GPU model
    (kernels.pretuned), once more with an empty cache and ALEXSPEC_PRETUNED=0, every config
    compiled and timed (what they save); with `profiled`, once more with the warm cache under
    cProfile (where a warm start's first step goes)."""
    import tempfile

    from alexspec.kernels import pretuned

    code = ("import json, sys; from alexspec.bench import first_step; "
            "print(json.dumps(first_step(sys.argv[1], int(sys.argv[2]), sys.argv[3], profile=len(sys.argv) > 4)))")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="alexspec-triton-cache-") as cache, \
            tempfile.TemporaryDirectory(prefix="alexspec-triton-cache-") as another, \
            tempfile.TemporaryDirectory(prefix="alexspec-triton-cache-") as untuned:
        starts = [("cold_cache", cache, {}), ("warm_cache", cache, {})]
        if profiled:
            starts.append(("warm_cache_profiled", cache, {}))
        if layer_by_layer:
            starts.append(("cold_cache_layer_by_layer", another, {"ALEXSPEC_COMPILE_AHEAD": "0"}))
        device = pretuned.device_name()
        if pretuned.enabled() and pretuned.serving(device):
            starts.append(("cold_cache_without_shipped_choices", untuned, {"ALEXSPEC_PRETUNED": "0"}))
        for name, cache_dir, switches in starts:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code, str(spec), str(batch), precision,
                                   *(["profile"] if name.endswith("profiled") else [])], capture_output=True,
                                  text=True, env={**os.environ, "TRITON_CACHE_DIR": cache_dir, **switches})
            if done.returncode != 0:
                raise RuntimeError(f"the {name.replace('_', ' ')} start-up run failed:\n{done.stderr[-3000:]}")
            runs[name] = {"process_s": round(time.perf_counter() - start, 2),
                          **json.loads(done.stdout.strip().splitlines()[-1])}
    return runs


def describe_start(name: str, figures: dict) -> str:
    """Lines saying what one start-up run of startup() spent its time on."""
    parts = [f"{what} {figures[key]:.1f} s" for what, key in
             (("compiling ahead", "compile_ahead_s"), ("timing autotune configs", "autotune_timing_s"),
              ("timing Triton against cuDNN", "conv_choice_timing_s")) if figures.get(key)]
    lines = [f"  {name.replace('_', ' ')}: {figures['spec_to_warm_module_s']:.1f} s (build {figures['build_s']:.1f} s, "
             f"first step {figures['first_step_s']:.1f} s" + (f" of which {', '.join(parts)}" if parts else "")
             + f"; importing torch and alexspec {figures['import_s']:.1f} s before that)"]
    ahead_run = figures.get("compiled_ahead") or {}
    if ahead_run.get("binaries"):
        lines.append(f"    compiling ahead: {ahead_run['binaries']} binaries in {ahead_run['compile_s']:.1f} s summed "
                     f"over {ahead_run['threads']} threads"
                     + (f" (the slowest, {ahead_run['slowest']}, {ahead_run['slowest_s']:.1f} s)"
                        if ahead_run.get("slowest") else "") + f", {ahead_run['launchers']} launchers in "
                     f"{ahead_run['launcher_s']:.1f} s; the dry step {ahead_run['step_s']:.1f} s, then "
                     f"{ahead_run['waiting_s']:.1f} s waiting for the compilations")
    if figures.get("first_step_phases_s"):
        lines.append("    first step: " + ", ".join(f"{phase} {seconds:.2f} s"
                                                 for phase, seconds in figures["first_step_phases_s"].items()))
    if figures.get("shipped_choices_taken"):
        made_on = figures.get("shipped_table")
        lines.append(f"    {figures['shipped_choices_taken']} choices taken from the table shipped for "
                     + (f"{made_on} (a sibling of this GPU: the same compute capability and SMs)"
                        if made_on and made_on != figures.get("device") else "this GPU model"))
    bytecode = figures.get("python_bytecode") or {}
    if bytecode.get("cache_prefix") or bytecode.get("written") is False:
        lines.append("    Python bytecode: " + ("read from " + bytecode["cache_prefix"] if bytecode.get("cache_prefix")
                                                 else "read beside the sources")
                     + ("" if bytecode.get("written") else ", none written (PYTHONDONTWRITEBYTECODE)"))
    if figures.get("profile"):
        lines.append("    where its first step went (cProfile, own time):")
        lines += [f"      {row['s']:7.3f} s  {row['function']}" for row in figures["profile"]["own"][:8]]
    return "\n".join(lines)


def _why_off(lever: str, cuda: bool, precision: str) -> str:
    """Why a lever could not be used in this run."""
    if lever in ("cuda_graphs", "triton_conv") and not cuda:
        return "needs CUDA"
    if lever == "triton_conv":
        return "ALEXSPEC_CONV=cudnn"
    return f"bf16 only, the run is {precision}"


def headline(results: dict) -> dict:
    """For training and inference: the strongest baseline measured and alexspec's ratio to it."""
    said = {}
    for what in ("train", "infer"):
        best = strongest(results, what)
        if best is not None and "alexspec" in results:
            said[what] = {"baseline": best, "speedup": results[best][f"alexspec_{what}_speedup"]}
    return said


def _optimizer_name(fused: bool, weight_copies: bool = False) -> str:
    if fused and weight_copies:
        return "SGD on bf16 weight copies (one kernel a weight)"
    return "SGD(fused=True)" if fused else "SGD (torch's default, foreach)"


def _rate(result: dict, what: str) -> str:
    """`12,345.6 img/s`, with the range of the repeated timings when there were several."""
    text = f"{result[f'{what}_img_s']:>10,.1f} img/s"
    if f"{what}_img_s_range" in result:
        low, high = result[f"{what}_img_s_range"]
        text += f" (median of {result['repeats']}: {low:,.0f}-{high:,.0f})"
    return text


def _speedups(ours: dict, other: dict) -> dict:
    """train_speedup and infer_speedup: our images/s over another run's (medians); where both were
    timed repeatedly, also the range the ratio can take within their timings' ranges."""
    found = {}
    for what in ("train", "infer"):
        found[f"{what}_speedup"] = round(ours[f"{what}_img_s"] / other[f"{what}_img_s"], 3)
        if f"{what}_img_s_range" in ours and f"{what}_img_s_range" in other:
            (low, high), (other_low, other_high) = ours[f"{what}_img_s_range"], other[f"{what}_img_s_range"]
            found[f"{what}_speedup_range"] = [round(low / other_high, 3), round(high / other_low, 3)]
    return found


def _ratio_text(result: dict, what: str) -> str:
    """x1.23, with the range it can take (x1.10-x1.30) where the timings were repeated."""
    text = f"x{result[f'alexspec_{what}_speedup']}"
    if f"alexspec_{what}_speedup_range" in result:
        low, high = result[f"alexspec_{what}_speedup_range"]
        text += f" (x{low}-x{high} within the timings' ranges)"
    return text


def _profile(step, device: str, top: int = 12) -> list[dict]:
    """The most expensive ops of two calls of a training step (torch profiler): on CUDA each op
    with the device time of the kernels it launched itself, as a share of all kernel time; on
    CPU each op's own CPU time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    import torch

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's own log lines off the console
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key, 0) for e in events if e.device_type == (
        DeviceType.CUDA if device == "cuda" else DeviceType.CPU)) or 1
    ops = sorted((e for e in events if e.device_type == DeviceType.CPU and getattr(e, key, 0) > 0),
                 key=lambda e: getattr(e, key), reverse=True)
    return [{"op": e.key, "ms_per_step": round(getattr(e, key) / 2 / 1e3, 3),
             "percent": round(100 * getattr(e, key) / total, 1)} for e in ops[:top]]


def print_profile(rows: list[dict], log=print, top: int = 8) -> None:
    """The per-op breakdown of a step, one line per op."""
    log("where the alexspec training step spends its time (torch profiler, per step):")
    for row in rows[:top]:
        log(f"  {row['percent']:5.1f} %  {row['ms_per_step']:7.3f} ms  {row['op'][:90]}")


def _versions() -> dict:
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from alexspec import __version__

    return {"alexspec": __version__, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version()}


def write(result: dict, out: Path) -> None:
    from alexspec.fsutil import write_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
