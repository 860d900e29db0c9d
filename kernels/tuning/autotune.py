"""triton.autotune as the kernels use it: each new key's configs compiled in parallel before they
are timed, a choice timed by an earlier process (Triton's disk cache) or shipped for this GPU
model (pretuned) taken untimed, and only compilation, no launch, within ahead.compile_ahead()."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

from alexspec import settings
from alexspec.kernels.ops.launch import INTERPRET, on_device_of, triton
from alexspec.kernels.scoped import Scoped
from alexspec.kernels.tuning import pretuned
from alexspec.kernels.tuning.stopwatch import Stopwatch


def autotune(configs: list, key: list[str], prune=None, reset_to_zero=None):
    """triton.autotune over `configs` on a GPU, its choices kept in Triton's disk cache: a later
    process compiles (loads) only the config chosen for each key and times nothing. A new
    key's configs are compiled all at once in threads before they are timed one by one, each
    for about 10 ms (about 130 configs in an AlexNet step).
    Only the first config (nothing compiled or timed but it) under the interpreter and with
    ALEXSPEC_AUTOTUNE=quick, which trades some speed for a faster first step. `prune(configs,
    named_args, **constants)` may drop configs for a launch before any is compiled. Within
    ahead.compile_ahead() a launch compiles its configs and runs nothing. The tensors named in
    `reset_to_zero` (ones a kernel adds into) are zeroed before each config is timed."""
    quick = INTERPRET or settings.current().autotune == "quick"
    tuner = triton.autotune(configs=configs[:1] if quick else configs, key=key, cache_results=not INTERPRET,
                            reset_to_zero=reset_to_zero, do_bench=_short_bench,
                            prune_configs_by={"early_config_prune": prune} if prune else None)
    return lambda fn: _offering(configs, _compiled_ahead_when_asked(tuner(fn) if quick else
                                                                   compiling_in_parallel(tuner(fn))))


def _offering(configs: list, tuner):
    """`tuner` with every config its kernel offers as `offered_configs` (`tuner.configs` holds
    only the first with ALEXSPEC_AUTOTUNE=quick)."""
    tuner.offered_configs = configs
    return tuner


timing = Stopwatch()  # this process's time spent timing autotune configs (bench.first_step reports it)


def _short_bench(fn, quantiles):
    from triton.testing import do_bench

    return timing.run(do_bench, fn, warmup=2, rep=10, quantiles=quantiles)


COMPILE_THREADS = min(32, os.cpu_count() or 1)
compiling_ahead: Scoped = Scoped()  # the AsyncCompileMode of ahead.compile_ahead(), while it lasts


def compiling_in_parallel(tuner):
    """`tuner` (a triton Autotuner) made to compile the configs of each new key in parallel
    (triton.AsyncCompileMode, COMPILE_THREADS threads) before it times them; a config that fails
    to compile is left to the autotuner, which times it as infinitely slow."""
    prune = tuner.prune_configs

    def prune_and_compile(kwargs: dict) -> list:
        configs = prune(kwargs)
        known = _cached_choice(tuner, configs, kwargs)
        if known is not None:  # timed by an earlier process: compile only the fastest, time nothing
            return [known]
        try:
            with ThreadPoolExecutor(COMPILE_THREADS) as pool, triton.AsyncCompileMode(pool, ignore_errors=True):
                _submit_compilations(tuner, configs, kwargs)
        except Exception as exc:  # a speed-up only: the autotuner compiles what is missing one by one
            warnings.warn(f"compiling {tuner.fn.__name__}'s configs in parallel failed ({exc}); "
                          "the autotuner compiles them one by one", stacklevel=2)
            tuner.prune_configs = prune
        return configs

    tuner.prune_configs = prune_and_compile
    tuner.plain_prune_configs = prune
    return tuner


def _submit_compilations(tuner, configs: list, kwargs: dict) -> None:
    """Start compiling `tuner`'s kernel with each of `configs` for the launch being made (its
    positional arguments in tuner.nargs, the rest in kwargs), in the active AsyncCompileMode."""
    args = list(tuner.nargs.values())
    meta = {name: value for name, value in kwargs.items() if name not in ("grid", "warmup")}
    for config in configs:
        tuner.fn.warmup(*args, grid=(1,), **meta, **config.all_kwargs())


class _NotCached(Exception):
    pass


def _not_cached():
    raise _NotCached


def _cached_choice(tuner, configs: list, kwargs: dict):
    """The config Triton's disk cache holds as the fastest of `configs` for this launch (timed by
    an earlier process: a warm start), else the one this GPU model's shipped table names
    (kernels.pretuned), or None where neither has one. It is also made the
    tuner's choice for the launch, so only it is compiled and nothing is timed. The tuning key
    is formed as triton's Autotuner.run forms it (the key arguments, then each tensor's dtype)."""
    if len(configs) < 2 or not tuner.cache_results:
        return None
    args = {name: value for name, value in {**tuner.nargs, **kwargs}.items() if name in tuner.arg_names}
    key = tuple([args[name] for name in tuner.keys if name in args]
                + [str(value.dtype) for value in args.values() if hasattr(value, "dtype")])
    try:
        tuner.check_disk_cache(key, configs, _not_cached)  # reads the timings, or calls _not_cached
    except _NotCached:
        tensor = next((value for value in args.values() if hasattr(value, "dtype")), None)
        known = pretuned.autotune_config(getattr(tuner, "base_fn", tuner.fn).__name__, tuner.keys, key, configs,
                                         pretuned.device_name(tensor))
        if known is not None:
            tuner.cache[key] = known
        return known
    return tuner.cache.get(key)


def _compiled_ahead_when_asked(tuner):
    """`tuner` made to launch on its first argument's GPU (on_device_of), and to only start
    compiling every config of a launch, and run nothing, while ahead.compile_ahead() lasts."""
    launch = tuner.run

    def run(*args, **kwargs):
        if not compiling_ahead:
            with on_device_of(args[0] if args else None):
                return launch(*args, **kwargs)
        tuner.nargs = dict(zip(tuner.arg_names, args))
        prune = getattr(tuner, "plain_prune_configs", tuner.prune_configs)
        configs = prune(kwargs)
        known = _cached_choice(tuner, configs, kwargs)
        _submit_compilations(tuner, configs if known is None else [known], kwargs)
        return None

    tuner.run = run
    return tuner
