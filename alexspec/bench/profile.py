"""Where a training step spends its time: the torch profiler's most expensive ops, per step."""
from __future__ import annotations

import os


def quiet_profiler_log() -> None:
    """Keep the profiler's own log lines (Kineto's) off the console, unless KINETO_LOG_LEVEL says
    otherwise: level 6 is past every level it logs at (torch 2.14 prints its start and stop at 5)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def profile_step(step, device: str, top: int = 12) -> list[dict]:
    """The most expensive ops of two calls of a training step (torch profiler): on CUDA each op
    with the device time of the kernels it launched itself, as a share of all kernel time; on
    CPU each op's own CPU time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    import torch

    quiet_profiler_log()
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
