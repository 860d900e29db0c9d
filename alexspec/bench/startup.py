"""Spec to warm module: how long a build and its first training step take, in this process
(first_step) and in fresh processes with an empty and a warm Triton cache (startup), and what
that time went to (describe_start)."""
from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import sys
import time


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

    from alexspec.bench.run import training_step
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
        step = training_step(built, module, module, precision, fused=True, copies=True, graph=False)
        mark("making the optimizer")
        compiled_ahead = step.compile_ahead(x) if cuda else None
        mark("compiling ahead")
        step.optimizer.zero_grad(set_to_none=True)
        step.forward_backward_update(x, labels, mark)
    done = clock[0]
    if profiler:
        profiler.disable()
    from alexspec.kernels.tuning import ahead, autotune, conv_choice, pretuned

    gpu = pretuned.device_name()
    return {"import_s": round(imported - start, 2), "build_s": round(ready - imported, 2),
            "first_step_s": round(done - ready, 2), "first_step_phases_s": phases,
            "spec_to_warm_module_s": round(done - imported, 2),
            "compile_ahead_s": compiled_ahead, "autotune_timing_s": round(autotune.timing.seconds, 2),
            "conv_choice_timing_s": round(conv_choice.timing.seconds, 2),
            "device": gpu, **pretuned.what_served(gpu),
            "python_bytecode": {"written": not sys.dont_write_bytecode, "cache_prefix": sys.pycache_prefix},
            "compiled_ahead": dict(ahead.last_run), **({"profile": top_functions(profiler)} if profiler else {})}


def top_functions(profiler, top: int = 12) -> dict:
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
    (kernels.tuning.pretuned), once more with an empty cache and ALEXSPEC_PRETUNED=0, every config
    compiled and timed (what they save); with `profiled`, once more with the warm cache under
    cProfile (where a warm start's first step goes)."""
    import tempfile

    from alexspec.kernels.tuning import pretuned

    code = ("import json, sys; from alexspec.bench.startup import first_step; "
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
