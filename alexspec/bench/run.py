"""`alexspec bench`: how fast a compiled spec trains and infers, against PyTorch, in one process.

The alexspec module (triton backend on CUDA) runs beside the same network in plain PyTorch
(alexspec.bench.baselines), on the same random inputs, each with its settings recorded. Each
candidate's training step is alexspec.train.step's, the one `alexspec train` runs (forward
under autocast, the spec's loss, backward, the optimizer's update; on bf16 weight copies and
as one CUDA graph where its levers say so).
Reported: images/s for a training step and for inference (the median of --repeats timings,
with their spread; each timing at least --steps steps and --min-time seconds), the ratio to
each baseline and the headline against the strongest, warm-up/compile time, peak memory,
achieved FLOP/s (and the fraction of the device's peak where known), and a per-op time
breakdown of the alexspec step (alexspec.bench.profile).
"""
from __future__ import annotations

import datetime
import gc
import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

from alexspec import settings
from alexspec.bench.baselines import (BASELINES, describe_settings, headline, optimizer_name, rate, ratio_text,
                                      speedups)
from alexspec.bench.profile import print_profile, profile_step
from alexspec.bench.results import versions


# Dense peak TFLOP/s by (device name fragment, precision); the fp32 entry is TF32 tensor cores.
PEAK_TFLOPS = {("H100", "bf16"): 989.0, ("H100", "fp32"): 494.0, ("H200", "bf16"): 989.0,
               ("H200", "fp32"): 494.0, ("A100", "bf16"): 312.0, ("A100", "fp32"): 156.0}


def _timed(fn, steps: int, synchronize) -> float:
    """Seconds per call over `steps` calls (after the caller's warm-up)."""
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize()
    return (time.perf_counter() - start) / steps


# The speed levers `--ablate` turns off one at a time (all are on in the headline alexspec figure).
OPT_IN = ("lrn_pool_fusion", "conv_lrn_fusion")  # levers off by default, timed turned on by the ablation


LEVERS = {
    "fusion": "conv ReLUs moved into the max pool after them (alexspec.fusion)",
    "lrn_pool_fusion": "LRN + max pool as one kernel (opt-in: the ablation times it turned on)",
    "conv_lrn_fusion": "conv + ReLU + LRN as one kernel, the LRN in the conv's epilogue, where a tower's channels "
                       "fit a tile (opt-in: the ablation times it turned on)",
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


def why_off(lever: str, cuda: bool, precision: str) -> str:
    """Why a lever could not be used in this run."""
    if lever in ("cuda_graphs", "triton_conv") and not cuda:
        return "needs CUDA"
    if lever == "triton_conv":
        return "ALEXSPEC_CONV=cudnn"
    return f"bf16 only, the run is {precision}"


def training_step(built, module, runnable, precision: str, fused: bool, copies: bool, graph: bool):
    """The training step `alexspec train` runs, of `module` (built by `built`) run through
    `runnable` (the module, or a torch.compile of it): the spec's loss and optimizer (SGD
    `fused`, or foreach), on bf16 weight copies with `copies` (bf16, fused SGD), replayed as
    one CUDA graph with `graph`."""
    from alexspec import ir
    from alexspec.train.recipe import optimizer
    from alexspec.train.step import TrainingStep, loss_function
    from alexspec.train.weight_copies import WeightCopies

    network = built.info.network
    training = network.training or ir.Training()
    weight_copies = None
    if copies and fused and precision == "bf16" and training.optimizer == "sgd":
        weight_copies = WeightCopies(module)
        runnable = weight_copies
    return TrainingStep(runnable, module, optimizer(module, built.generated.attributes, training, weight_copies,
                                                    fused=fused),
                        loss_function(network, training), precision, graph=graph)


@dataclass
class _Ready:
    """A candidate built and warm: its label and levers, its module, a training step and an inference to
    time, and what its first step took (with the Triton kernels compiled ahead, where they were)."""
    label: str
    levers: dict
    module: object
    train: Callable[[], None]
    infer: Callable[[], None]
    first: float
    compiled_ahead: float | None


def _conv_mode(levers: dict):
    """Convs as alexspec chooses them per shape (triton_conv on), or all by cuDNN."""
    from alexspec.kernels.tuning import conv_choice

    return conv_choice.using(conv_choice.mode() if levers["triton_conv"] else "cudnn")


class _Bench:
    """What every candidate of one `run` shares: the device, the inputs, the reference weights,
    the timing; `measure` times one candidate."""

    def __init__(self, spec, batch: int, precision: str, steps: int, warmup: int, repeats: int, min_seconds: float,
                 log):
        import torch

        from alexspec.builder import build

        self.spec, self.batch, self.precision, self.log = spec, batch, precision, log
        self.steps, self.warmup, self.repeats, self.min_seconds = steps, warmup, repeats, min_seconds
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.synchronize = torch.cuda.synchronize if self.cuda else (lambda: None)
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        else:
            log("no CUDA device: benchmarking the torch backend on CPU (the Triton kernels need a GPU)")
        torch.manual_seed(0)
        started = time.perf_counter()
        self.reference = build(spec, backend="triton" if self.cuda else "torch", devices=[self.device])
        self.build_seconds = time.perf_counter() - started
        info = self.reference.info
        self.x = torch.randn(batch, *info.network.input, device=self.device)
        self.labels = torch.randint(0, info.output_shape[0], (batch,), device=self.device)
        self.flops_per_image = 2 * info.total_macs

    def candidate(self, kind: str, levers: dict):
        """(build, module, runnable) of `kind` (alexspec or a baseline) with the reference weights."""
        import torch

        from alexspec.builder import build

        if kind == "alexspec":
            built = build(self.spec, backend="triton" if self.cuda else "torch", devices=[self.device],
                          fuse=levers["fusion"], fuse_lrn_pool=levers["lrn_pool_fusion"],
                          fuse_conv_lrn=levers["conv_lrn_fusion"])
        else:
            built = build(self.spec, backend="torch", devices=[self.device], fuse=False)
        module = built.module
        module.load_state_dict(self.reference.module.state_dict())
        if levers["channels_last"]:
            module = module.to(memory_format=torch.channels_last)
        mode = BASELINES.get(kind, {}).get("compile")
        runnable = torch.compile(module, mode=None if mode == "default" else mode) if mode else module
        return built, module, runnable

    def measure(self, kind: str, levers: dict, label: str, profile_into: dict | None = None) -> dict:
        """Images/s of `kind`'s training step and inference with `levers`, and what its first step took."""
        return next(self.measure_all([(kind, levers, label, profile_into)]))[1]

    def measure_all(self, candidates: list[tuple]):
        """Yields (label, figures) for each (kind, levers, label, profile_into) in `candidates`.

        On a GPU one after another: each candidate's CUDA graphs and memory are gone before the
        next is built, and its peak memory is its own. On a CPU interleaved: every candidate is
        built and warmed first, then each of the --repeats rounds times them all in turn, so the
        machine's drift over the run (other work, clocks, caches) falls on every candidate alike
        and does not become a ratio between them."""
        if self.cuda:
            for candidate in candidates:
                ready = self._ready(*candidate)
                with _conv_mode(ready.levers):
                    train_steps, trains = self._rates(ready.train)
                    ready.module.eval()
                    infer = captured(ready.infer) if ready.levers["cuda_graphs"] else ready.infer
                    infer_steps, infers = self._rates(infer)
                yield ready.label, self._figures(ready, trains, infers, train_steps, infer_steps)
                del ready, infer
            return
        ready = [self._ready(*candidate) for candidate in candidates]
        sizes = [self._sized(run) for run in ready]
        timings = [([], []) for _ in ready]
        for _ in range(self.repeats):
            for run, (train_steps, infer_steps), (trains, infers) in zip(ready, sizes, timings):
                with _conv_mode(run.levers):
                    run.module.train()
                    trains.append(self.batch / _timed(run.train, train_steps, self.synchronize))
                    run.module.eval()
                    infers.append(self.batch / _timed(run.infer, infer_steps, self.synchronize))
        for run, (train_steps, infer_steps), (trains, infers) in zip(ready, sizes, timings):
            figures = self._figures(run, trains, infers, train_steps, infer_steps)
            yield run.label, {**figures, "train_img_s_rounds": [round(r, 1) for r in trains],
                          "infer_img_s_rounds": [round(r, 1) for r in infers]}

    def _ready(self, kind: str, levers: dict, label: str, profile_into: dict | None) -> _Ready:
        """`kind` with `levers` built, its first step taken (and profiled into `profile_into`), its
        CUDA graph recorded where it has one: a training step and an inference to time."""
        import torch

        from alexspec.train.step import autocast

        gc.collect()  # the previous candidate's module, graphs and memory go first
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with _conv_mode(levers):
            built, module, runnable = self.candidate(kind, levers)
            x = self.x.contiguous(memory_format=torch.channels_last) if levers["channels_last"] else self.x
            step = training_step(built, module, runnable, self.precision, levers["fused_optimizer"],
                                 levers["weight_copies"], levers["cuda_graphs"])
            # torch.compile's own CUDA graphs are told where a step begins (their outputs are then reused)
            inductor_graphs = BASELINES.get(kind, {}).get("cuda_graphs") == "inductor"
            step_begins = torch.compiler.cudagraph_mark_step_begin if inductor_graphs else (lambda: None)

            def train():
                step_begins()
                step(x, self.labels)

            def infer():
                step_begins()
                with torch.no_grad(), autocast(self.device, self.precision):
                    runnable(x)

            start = time.perf_counter()
            module.train()
            compiled_ahead = step.compile_ahead(x) if kind == "alexspec" and self.cuda else None
            train()
            self.synchronize()
            first = time.perf_counter() - start
            if profile_into is not None:
                profile_into["ops"] = profile_step(train, self.device)
            while step.graph is not None and not step.recorded:  # the warm-up steps and the recording
                train()
        return _Ready(label, levers, module, train, infer, first, compiled_ahead)

    def _sized(self, run: _Ready) -> tuple[int, int]:
        """(train, infer) calls a timing of `run`, each after its warm-up (see _steps)."""
        with _conv_mode(run.levers):
            run.module.train()
            train_steps = self._steps(run.train)
            run.module.eval()
            return train_steps, self._steps(run.infer)

    def _figures(self, ready: _Ready, trains: list[float], infers: list[float], train_steps: int,
                 infer_steps: int) -> dict:
        """One candidate's figures from its timings, printed."""
        import torch

        result = {**self._result(trains, infers, ready.first), "train_steps": train_steps, "infer_steps": infer_steps}
        if ready.compiled_ahead is not None:
            result["compile_ahead_s"] = ready.compiled_ahead  # part of first_step_s
        if self.cuda:
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        self.log(f"{ready.label:24} train {rate(result, 'train')}   infer {rate(result, 'infer')}   "
                 f"first step {result['first_step_s']:.2f} s")
        return result

    def _rates(self, run) -> tuple[int, list[float]]:
        """(calls a timing, images/s of `run` timed --repeats times), after its warm-up (see _steps)."""
        steps = self._steps(run)
        return steps, [self.batch / _timed(run, steps, self.synchronize) for _ in range(self.repeats)]

    def _steps(self, run) -> int:
        """Calls a timing of `run`, after --warmup calls: --steps, or as many more as one call (timed
        once) says will last --min-time seconds: a few milliseconds' timing is mostly the machine's noise."""
        for _ in range(self.warmup):
            run()
        if self.min_seconds <= 0:
            return self.steps
        return max(self.steps, math.ceil(self.min_seconds / max(_timed(run, 1, self.synchronize), 1e-9)))

    def _result(self, trains: list[float], infers: list[float], first: float) -> dict:
        train_img_s = statistics.median(trains)
        result = {"train_img_s": round(train_img_s, 1), "infer_img_s": round(statistics.median(infers), 1),
                  "first_step_s": round(first, 2),
                  "train_tflops": round(3 * self.flops_per_image * train_img_s / 1e12, 3)}
        if self.repeats > 1:  # how much the timings of this machine moved: read a ratio with it
            result.update(repeats=self.repeats, train_img_s_range=[round(min(trains), 1), round(max(trains), 1)],
                          infer_img_s_range=[round(min(infers), 1), round(max(infers), 1)])
        return result


def available_levers(cuda: bool, precision: str) -> dict:
    """Each lever of LEVERS: on for the headline alexspec figure, or off where it cannot be used
    here (or is opt-in)."""
    from alexspec.kernels.tuning import conv_choice

    levers = {name: name not in OPT_IN and (name not in ("cuda_graphs", "triton_conv") or cuda) for name in LEVERS}
    if conv_choice.mode() == "cudnn":
        levers["triton_conv"] = False
    if precision != "bf16":
        levers["channels_last"] = levers["weight_copies"] = False
    return levers


def baseline_levers(all_levers: dict, kind: str) -> dict:
    """The levers a baseline runs with: its own optimizer and CUDA graphs, none of alexspec's."""
    how = BASELINES[kind]
    return {**all_levers, "fusion": False, "lrn_pool_fusion": False, "conv_lrn_fusion": False, "weight_copies": False,
            "fused_optimizer": how["fused_sgd"], "cuda_graphs": how["cuda_graphs"] == "step"}


def run(spec: str, batch: int, precision: str, compare: list[str], max_autotune: bool, steps: int,
        warmup: int, ablate: bool = False, log=print, progress=lambda partial: None, repeats: int = 1,
        min_seconds: float = 0.0) -> dict:
    """Benchmark `spec` against the baselines named in `compare` (BASELINES); returns the JSON-ready
    result. Each images/s is the median of `repeats` timings, with their spread, each timing of
    `steps` steps or as many more as last `min_seconds`.
    `progress` gets the result so far (with "complete": False) after each measurement, so an
    interrupted run keeps what it timed."""
    import torch

    from alexspec.kernels.tuning import conv_choice

    bench = _Bench(spec, batch, precision, steps, warmup, repeats, min_seconds, log)
    cuda = bench.cuda
    all_levers = available_levers(cuda, precision)
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or "cpu")
    peak = next((v for (fragment, p), v in PEAK_TFLOPS.items() if fragment in name and p == precision), None)
    profiled, results, levers = {}, {}, {}

    def summary(complete: bool) -> dict:
        return {"spec": str(spec), "device": name, "cuda": cuda, "batch": batch, "precision": precision,
                "levers_on": [n for n, on in all_levers.items() if on], "max_autotune": max_autotune,
                "steps": steps, "min_time_s": min_seconds, "warmup": warmup, "repeats": repeats,
                "autotune": settings.current().autotune, "headline": headline(results),
                "spec_to_module_s": round(bench.build_seconds, 3), "results": results, "levers": levers,
                "profile": profiled.get("ops", []), "conv_choices": conv_choice.choices(), **versions(),
                "date": datetime.date.today().isoformat(), "complete": complete}

    for kind in compare:
        if BASELINES[kind]["cuda_graphs"] and not cuda:
            log(f"{kind:24} skipped: its CUDA graphs need CUDA")
            results[kind] = {"skipped": "needs CUDA (CUDA graphs)", "settings": _settings(kind)}
    candidates = [("alexspec", all_levers, "alexspec", profiled)] + [
        (kind, baseline_levers(all_levers, kind), kind, None) for kind in compare if kind not in results]
    for label, figures in bench.measure_all(candidates):
        if label == "alexspec":
            results["alexspec"] = _alexspec_figures(bench, figures, all_levers, profiled, peak)
        else:
            results[label] = _baseline_figures(bench, label, figures, results["alexspec"])
        progress(summary(False))
    for what, said in headline(results).items():
        log(f"headline, {what}: x{said['speedup']} the strongest baseline, {said['baseline']} "
            f"({describe_settings(results[said['baseline']]['settings'], what)})")
    for lever in all_levers if ablate else ():
        levers[lever] = _ablate(bench, all_levers, lever, results["alexspec"])
        progress(summary(False))
    return summary(True)


def _alexspec_figures(bench: _Bench, result: dict, all_levers: dict, profiled: dict, peak: float | None) -> dict:
    """The headline alexspec figures (every lever on) with its settings; its profile and conv choices printed."""
    from alexspec.kernels.tuning import conv_choice

    result["spec_to_warm_module_s"] = round(bench.build_seconds + result["first_step_s"], 2)
    if peak:
        result["fraction_of_peak"] = round(result["train_tflops"] / peak, 4)
    print_profile(profiled["ops"], bench.log)
    for entry in conv_choice.choices():
        timed = ", ".join(f"{key[:-3]} {ms:.3f} ms" if ms is not None else f"{key[:-3]} failed"
                          for key, ms in entry.items() if key.endswith("_ms"))
        bench.log(f"  conv {entry['shape']}: {entry['implementation']} "
                  f"({'taken from the shipped table' if entry.get('pretuned') else timed})")
    result["settings"] = {"mode": "alexspec", "cuda_graphs": "step" if all_levers["cuda_graphs"] else None,
                          "optimizer": optimizer_name(all_levers["fused_optimizer"], all_levers["weight_copies"])}
    return result


def _settings(kind: str) -> dict:
    """How baseline `kind` runs, as the JSON records it."""
    how = BASELINES[kind]
    return {"mode": how["compile"] or "eager", "cuda_graphs": how["cuda_graphs"],
            "optimizer": optimizer_name(how["fused_sgd"])}


def _baseline_figures(bench: _Bench, kind: str, result: dict, ours: dict) -> dict:
    """One baseline's figures with its settings and alexspec's ratios to them, printed."""
    ran = _settings(kind)
    result = {**result, "settings": ran}
    result.update({f"alexspec_{key}": value for key, value in speedups(ours, result).items()})
    bench.log(f"alexspec vs {kind} ({describe_settings(ran)}): training {ratio_text(result, 'train')}, "
              f"inference {ratio_text(result, 'infer')}")
    return result


def _ablate(bench: _Bench, all_levers: dict, lever: str, ours: dict) -> dict:
    """What `lever` is worth: alexspec timed with it off (or, opt-in, on), or why it could not be.
    On a GPU against the headline figure; on a CPU against alexspec timed again, interleaved with it
    (see _Bench.measure_all)."""
    if not all_levers[lever] and lever not in OPT_IN:
        return {"on": False, "why": why_off(lever, bench.cuda, bench.precision)}
    changed = {**all_levers, lever: not all_levers[lever]}  # off, or (opt-in) on
    label = f"alexspec {'without' if all_levers[lever] else 'with'} {lever}"
    if bench.cuda:
        figures = bench.measure("alexspec", changed, label)
    else:
        (_, ours), (_, figures) = bench.measure_all([("alexspec", all_levers, "alexspec (all levers)", None),
                                                     ("alexspec", changed, label, None)])
    if all_levers[lever]:
        found = {"on": True, "without": figures, **speedups(ours, figures)}
    else:
        found = {"on": False, "with": figures, **speedups(figures, ours)}
    if not bench.cuda:
        found["alexspec_again"] = ours
    bench.log(f"  {lever}: training x{found['train_speedup']}, inference x{found['infer_speedup']}")
    return found
