"""Compile every Triton kernel a step launches before the step runs, all at once.

Left to itself, a cold start compiles layer by layer: the first launch of each kernel shape
compiles that kernel's autotune configs (5 or 6, in parallel), times them, runs the best, and
only then does the next layer's launch start its own compilations, so a machine's cores sit
mostly idle. compile_module_ahead() runs one forward and backward of a module first with no
kernel launched: each launch only starts compiling its configs, all of the step's go to one
pool of threads, and it returns once they are all compiled. The real first step then finds
every config compiled and only times them. The first compilation of each kernel signature also
prepares its launcher (triton 3.6 and earlier build one in C, with gcc, per kernel signature,
at the kernel's first launch: serially, about 0.2 s each), so the first step finds those built
too. last_run says what the latest compile_ahead() compiled and how long each part took.

ALEXSPEC_COMPILE_AHEAD=0 turns it off (the kernels then compile layer by layer, at their
first launch). stand_in_gpu() lets a machine with no GPU compile for one (the kernels take
CPU tensors and launch nothing), which is how a CPU checks what a GPU's cold start compiles
(bench/compile_cost.py, and the tests).
"""
from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from alexspec import settings
from alexspec.kernels.ops import launch
from alexspec.kernels.ops.launch import INTERPRET, triton
from alexspec.kernels.tuning import autotune, conv_choice, pretuned


def can_compile_ahead() -> bool:
    """Whether compiling ahead means anything here: compiled Triton kernels (not the
    interpreter), and ALEXSPEC_COMPILE_AHEAD not 0."""
    return triton is not None and not INTERPRET and settings.current().compile_ahead


def compile_ahead(step: Callable[[], object], threads: int | None = None) -> bool:
    """Run `step` with every alexspec kernel launch replaced by starting the compilation of each
    of its autotune configs, in one pool of `threads` threads (default: one a core, at most 32),
    then wait for them all. The kernels' outputs stay uninitialised: `step` must only shape a
    computation (say a forward and backward) whose values are thrown away. A conv whose
    implementation is known (chosen, stored or shipped: conv_choice.planning) runs it; the
    others' Triton kernels are compiled, since "auto" will time them against cuDNN. Returns False,
    without calling `step`, where there is nothing to compile (the interpreter, no triton), and
    False with a warning where `step` fails: the kernels then compile at their first launch."""
    if not can_compile_ahead():
        return False
    threads = threads or autotune.COMPILE_THREADS
    start = stepped = time.perf_counter()
    try:
        # a backward in `step` runs in this thread: on a GPU autograd runs it in a thread of its own,
        # which does not see Triton's async compile mode (a context variable), so its kernels would
        # compile there one by one, as they are reached
        with _CompilingAndLinking(threads) as pool, torch.autograd.set_multithreading_enabled(False), \
                triton.AsyncCompileMode(pool, ignore_errors=True) as mode, conv_choice.planning():
            try:
                with autotune.compiling_ahead.set(mode):
                    step()
            finally:
                stepped = time.perf_counter()
    except Exception as exc:  # a speed-up only
        warnings.warn(f"compiling the kernels ahead failed ({type(exc).__name__}: {exc}); they compile at "
                      "their first launch instead", stacklevel=2)
        return False
    last_run.clear()
    last_run.update({name: round(value, 2) for name, value in pool.tally.items()}, slowest=pool.slowest, threads=threads,
                    step_s=round(stepped - start, 2), waiting_s=round(time.perf_counter() - stepped, 2))
    return True


# What the latest compile_ahead() did: binaries compiled and the seconds that took (summed over
# threads), the slowest binary's seconds and kernel (no number of cores compiles faster than it),
# launchers built and their seconds, the threads, the seconds running the step and then waiting
# for the compilations still going (bench.first_step reports it)
last_run: dict = {}


class _CompilingAndLinking(ThreadPoolExecutor):
    """A pool whose compilations also prepare their kernels' launchers, one per kernel signature
    (the configs of a kernel share one: only the first of them to compile builds it), and which
    adds up the seconds each took (tally)."""

    def __init__(self, threads: int):
        super().__init__(threads)
        self._lock = threading.Lock()
        self._signatures: set = set()
        self.tally = {"binaries": 0, "compile_s": 0.0, "launchers": 0, "launcher_s": 0.0, "slowest_s": 0.0}
        self.slowest = ""

    def submit(self, compile_one, /, *args, **kwargs):
        def compile_and_link():
            start = time.perf_counter()
            kernel = compile_one(*args, **kwargs)
            compiled = time.perf_counter()
            first = self._first_of_its_signature(kernel)
            if first:
                prepare_launcher(kernel)
            with self._lock:
                self.tally["binaries"] += 1
                self.tally["compile_s"] += compiled - start
                self.tally["launchers"] += first
                self.tally["launcher_s"] += (time.perf_counter() - compiled) * first
                if compiled - start > self.tally["slowest_s"]:
                    self.tally["slowest_s"], self.slowest = compiled - start, getattr(kernel, "name", "")
            return kernel

        return super().submit(compile_and_link)

    def _first_of_its_signature(self, kernel) -> bool:
        """Whether no kernel compiled before this one shares its launcher: Triton generates a
        launcher's C source from the kernel's signature (argument types) alone."""
        src = getattr(kernel, "src", None)
        key = (repr(sorted(getattr(src, "signature", {}).items(), key=str)),
               repr(getattr(getattr(kernel, "metadata", None), "tensordesc_meta", None)))
        with self._lock:
            first = key not in self._signatures
            self._signatures.add(key)
        return first


def prepare_launcher(kernel) -> None:
    """Build the launcher of a compiled kernel now, into Triton's cache, where its first launch
    finds it (on triton 3.6 and earlier a C extension compiled by gcc; later versions only
    make a Python object). Nothing where the active driver makes none (stand_in_gpu()), and
    nothing but a warning where it fails: the launch then builds it."""
    make = getattr(triton.runtime.driver.active, "launcher_cls", None)
    if make is None or kernel is None:
        return
    try:
        make(kernel.src, kernel.metadata)
    except Exception as exc:  # a speed-up only
        warnings.warn(f"preparing the launcher of {getattr(kernel, 'name', 'a kernel')} ahead failed ({exc}); "
                      "its first launch prepares it", stacklevel=2)


def compile_module_ahead(module: torch.nn.Module, example: torch.Tensor, autocast_dtype: torch.dtype | None = None,
                         inference: bool = False, threads: int | None = None,
                         also: Callable[[], object] | None = None) -> bool:
    """compile_ahead() of one forward and backward of `module` on `example` (a batch as training
    will pass it: its shape, dtype, device and memory format), under autocast to
    `autocast_dtype` when given; with `inference`, also of a forward without gradients in eval
    mode (what validation runs); then of `also` (say, an optimizer's compile_ahead). Leaves the
    module as it was: its buffers, its parameters' gradients, its training flag and the random
    number generators."""
    if not can_compile_ahead():
        return False
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    grads = {p: p.grad for p in module.parameters()}
    training = module.training
    autocast = lambda: torch.autocast(example.device.type, dtype=autocast_dtype or torch.float32,  # noqa: E731
                                      enabled=autocast_dtype is not None, cache_enabled=False)

    def forward_and_backward():
        with autocast():
            out = module(example)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.requires_grad:
            out.float().sum().backward()
        if inference:
            module.eval()
            with torch.no_grad(), autocast():
                module(example)
        if also is not None:
            also()

    gpus = {t.device for t in [example, *module.parameters()] if t.is_cuda}  # every tower's dropout
    try:
        with torch.random.fork_rng(devices=sorted(gpus, key=str)):
            return compile_ahead(forward_and_backward, threads)
    finally:
        module.train(training)
        with torch.no_grad():
            for name, b in module.named_buffers():
                b.copy_(buffers[name])
        for p, grad in grads.items():
            p.grad = grad


@contextmanager
def stand_in_gpu(arch: int = 90, device_name: str | None = None, multiprocessors: int | None = None) -> Iterator[None]:
    """Within: Triton compiles for a CUDA GPU of compute capability `arch` (90: H100, H200) that
    is not there, and the kernels take CPU tensors. Use with compile_ahead(), which launches
    nothing; a launch outside it fails. With `device_name` (a GPU model, as
    torch.cuda.get_device_name says it) the choices shipped for that model serve
    (kernels.pretuned), and with its `multiprocessors` too, where it has no table, a sibling's.
    Needs compiled Triton (not TRITON_INTERPRET=1)."""
    if triton is None or INTERPRET:
        raise RuntimeError("stand_in_gpu() needs triton, and TRITON_INTERPRET unset")
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class StandInDriver:
        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    if device_name and multiprocessors:
        pretuned.seen(device_name, f"{arch // 10}.{arch % 10}", multiprocessors)
    previous = getattr(driver, "_active", None)  # None: the default, made at its first use (not here)
    driver.set_active(StandInDriver())
    try:
        with launch.stand_in.set(arch), pretuned.stand_in_device.set(device_name):
            yield
    finally:
        driver.set_active(previous)
