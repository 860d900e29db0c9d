"""Benchmark the Triton kernels against torch at AlexNet's shapes, in one process.

    python bench/kernels.py [--batch 128 256] [--out bench/results/kernels-DEVICE-DATE.json]

For each op (LRN, overlapping max-pool, conv + bias + ReLU, ReLU + LRN + max-pool fused into one
kernel against the three torch ops it replaces, and conv1's and conv2's conv + ReLU + per-tower
LRN in one kernel against cuDNN's conv, ReLU and torch's LRN on each tower's half of the
channels), fp32 NCHW and bf16 channels-last,
forward and forward+backward (each call from no gradients): milliseconds, effective GB/s (LRN,
pool) or TFLOP/s (conv), each as a fraction of what this device does in the same run (a large
copy's bandwidth, a large matmul's TFLOP/s), and the ratio to torch's own op
(nn.LocalResponseNorm, F.max_pool2d, cuDNN conv + ReLU with cudnn.benchmark on) timed the same
way, in the same process; on a GPU also ours replayed as a CUDA graph (its GPU time without
the host's launch overhead).
Writes JSON with the device, versions and date.
`--smoke` runs tiny shapes on CPU under TRITON_INTERPRET=1 (checks the script, times nothing
meaningful, and so writes JSON only where --out says: bench/results/ keeps GPU runs).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from alexspec.bench import results as bench_results  # noqa: E402
from alexspec.kernels import conv2d_bias_relu, conv2d_bias_relu_lrn, lrn, lrn_max_pool2d, max_pool2d  # noqa: E402

LRN_SHAPES = {"norm1": (96, 55, 55), "norm2": (256, 27, 27)}
POOL_SHAPES = {"pool1": (96, 55, 55), "pool2": (256, 27, 27), "pool5": (256, 13, 13)}
CONV_SHAPES = {  # name: (input C, H, out, kernel, stride, padding, groups)
    "conv1": (3, 227, 96, 11, 4, 0, 1), "conv2": (96, 27, 256, 5, 1, 2, 2), "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2), "conv5": (384, 13, 256, 3, 1, 1, 2),
}
CONV_LRN_LAYERS = ("conv1", "conv2")  # each followed by an LRN within each of the two towers' channels
SMOKE = {"lrn": {"norm": (8, 9, 9)}, "pool": {"pool": (8, 9, 9)}, "conv": {"conv": (3, 19, 8, 5, 2, 0, 1)}}
SETTINGS = [(torch.bfloat16, torch.channels_last, "nhwc"), (torch.float32, torch.contiguous_format, "nchw")]


def timer(device: str):
    """Median milliseconds of a callable: triton's do_bench on CUDA, perf_counter elsewhere."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=100)

    def cpu_time(fn):
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return cpu_time


def graphed_timer(device: str):
    """Median milliseconds of a callable replayed as a CUDA graph: its GPU time without the host's
    launch overhead (None on CPU, or where it cannot be captured)."""
    if device != "cuda":
        return lambda fn: None
    from triton.testing import do_bench_cudagraph

    def graphed(fn):
        try:
            return do_bench_cudagraph(fn, rep=100, return_mode="median")
        except Exception as exc:  # a diagnostic column: the run goes on without it
            print(f"(not timed as a CUDA graph: {exc})", file=sys.stderr)
            return None
    return graphed


def forward_backward(fn, *inputs):
    """A callable running fn forward and backward (gradients of the inputs that require them). Each
    call starts with no gradients, so no call also pays for adding into the last one's."""
    def run():
        for tensor in inputs:
            tensor.grad = None
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run


def ceilings(device: str, measure, smoke: bool) -> dict:
    """What the hardware does in this run, to read each row against: the device's copy bandwidth
    (GB/s read plus written by a large copy) and the matmul peak of each dtype (TFLOP/s of a
    large square matmul; fp32 with TF32 on)."""
    n = 1 << (16 if smoke else 28)
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    ms = measure(lambda: b.copy_(a))
    found = {"copy_GB/s": _figures(2 * a.numel() * a.element_size() / (ms * 1e-3) / 1e9)}
    m = 256 if smoke else 8192
    for dtype, _, _ in (SETTINGS[1:] if smoke else SETTINGS):
        x = torch.randn(m, m, device=device, dtype=dtype)
        y = torch.randn_like(x)
        ms = measure(lambda: x @ y)
        found[f"matmul_TFLOP/s_{str(dtype).replace('torch.', '')}"] = _figures(2 * m ** 3 / (ms * 1e-3) / 1e12)
    return found


def _figures(value: float) -> float:
    """`value` to four significant figures (a CPU's TFLOP/s are small numbers)."""
    return float(f"{value:.4g}")


def of_hardware(row: dict, hardware: dict) -> dict:
    """A row with its rate as a fraction of the hardware's (copy bandwidth or the dtype's matmul peak)."""
    if "GB/s" in row:
        return {**row, "of_copy_bandwidth": round(row["GB/s"] / hardware["copy_GB/s"], 3)}
    return {**row, "of_matmul_peak": round(row["TFLOP/s"] / hardware[f"matmul_TFLOP/s_{row['dtype']}"], 3)}


UNITS = {"GB/s": 1e9, "TFLOP/s": 1e12}


def bench_op(name, kind, ours, theirs, inputs, work, measure, unit, graphed):
    """Rows for the forward and forward+backward passes; `work(mode)` is bytes or FLOPs of a pass.
    `ms_graphed`: ours replayed as a CUDA graph, so ms well above it means launch-bound."""
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        if mode == "fwd":
            with torch.no_grad():
                ms, base = measure(lambda: ours(*inputs)), measure(lambda: theirs(*inputs))
                alone = graphed(lambda: ours(*inputs))
        else:
            ms, base = measure(forward_backward(ours, *inputs)), measure(forward_backward(theirs, *inputs))
            alone = graphed(forward_backward(ours, *inputs))
        amount = work(mode)
        rows.append({"op": kind, "layer": name, "pass": mode, "ms": round(ms, 4), "torch_ms": round(base, 4),
                     "speedup_vs_torch": round(base / ms, 3), unit: round(amount / (ms * 1e-3) / UNITS[unit], 2),
                     "ms_graphed": None if alone is None else round(alone, 4)})
    return rows


def run(batches, device, smoke, results: list, hardware: dict):
    """Append a row to `results` for each op, layer, setting and pass, printing each as it comes;
    `hardware` gets the ceilings they are read against, measured first."""
    measure, graphed = timer(device), graphed_timer(device)
    hardware.update(ceilings(device, measure, smoke))
    print("this device: " + ", ".join(f"{key} {value:,}" for key, value in hardware.items()), flush=True)

    def record(rows: list) -> None:
        for row in rows:
            row = of_hardware(row, hardware)
            results.append(row)
            print_row(row)
    lrn_shapes = SMOKE["lrn"] if smoke else LRN_SHAPES
    pool_shapes = SMOKE["pool"] if smoke else POOL_SHAPES
    conv_shapes = SMOKE["conv"] if smoke else CONV_SHAPES
    for batch in batches:
        for dtype, fmt, layout in (SETTINGS[1:] if smoke else SETTINGS):  # CPU torch has no bf16 LRN
            size = torch.tensor([], dtype=dtype).element_size()
            tag = {"batch": batch, "dtype": str(dtype).replace("torch.", ""), "layout": layout}

            def image(c, h, w=None):
                return torch.randn(batch, c, h, w or h, device=device, dtype=dtype).contiguous(
                    memory_format=fmt).requires_grad_()

            for name, (c, h, w) in lrn_shapes.items():
                x = image(c, h, w)
                torch_lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)  # = paper alpha 1e-4
                nbytes = x.numel() * size
                record([{**tag, **r} for r in bench_op(
                    name, "lrn", lambda t: lrn(t, 5, 1e-4, 0.75, 2.0), torch_lrn, [x],
                    lambda mode: nbytes * (2 if mode == "fwd" else 5), measure, "GB/s", graphed)])
            for name, (c, h, w) in lrn_shapes.items():
                x = image(c, h, w)
                torch_lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
                nbytes, out = x.numel() * size, x.numel() // 4
                record([{**tag, **r} for r in bench_op(
                    f"{name}+pool", "relu+lrn+maxpool", lambda t: lrn_max_pool2d(t, 5, 1e-4, 0.75, 2.0, relu=True),
                    lambda t: F.max_pool2d(torch_lrn(F.relu(t)), 3, 2), [x],
                    # forward: read x, write the scale, the output and its argmax; backward: read dy, argmax,
                    # x and scale, write dx
                    lambda mode: (2 * nbytes + out * (size + 1)) * (1 if mode == "fwd" else 2) + nbytes * (mode != "fwd"),
                    measure, "GB/s", graphed)])
            for name, (c, h, w) in pool_shapes.items():
                x = image(c, h, w)
                out = x.numel() // 4
                record([{**tag, **r} for r in bench_op(
                    name, "maxpool", lambda t: max_pool2d(t, 3, 2), lambda t: F.max_pool2d(t, 3, 2), [x],
                    lambda mode: (x.numel() + out) * size * (1 if mode == "fwd" else 2), measure, "GB/s", graphed)])
            for name, (c, h, out, k, s, p, g) in conv_shapes.items():
                x = image(c, h)
                weight = (torch.randn(out, c // g, k, k, device=device, dtype=dtype) * 0.01).requires_grad_()
                bias = torch.zeros(out, device=device, dtype=dtype, requires_grad=True)
                oh = (h + 2 * p - k) // s + 1
                flops = 2 * batch * out * oh * oh * (c // g) * k * k
                record([{**tag, **r} for r in bench_op(
                    name, "conv+bias+relu", lambda t, w, b: conv2d_bias_relu(t, w, b, s, p, g),
                    lambda t, w, b: F.relu(F.conv2d(t, w, b, s, p, 1, g)), [x, weight, bias],
                    lambda mode: flops * (1 if mode == "fwd" else 3), measure, "TFLOP/s", graphed)])
                if smoke or name in CONV_LRN_LAYERS:
                    record([{**tag, **r} for r in bench_op(
                        f"{name}+norm", "conv+relu+lrn",
                        lambda t, w, b: conv2d_bias_relu_lrn(t, w, b, s, p, g, 5, 1e-4, 0.75, 2.0, lrn_groups=2),
                        lambda t, w, b: towers_lrn(F.relu(F.conv2d(t, w, b, s, p, 1, g))), [x, weight, bias],
                        lambda mode: flops * (1 if mode == "fwd" else 3), measure, "TFLOP/s", graphed)])


def towers_lrn(y: torch.Tensor) -> torch.Tensor:
    """torch's LRN (paper alpha 1e-4) within each half of y's channels: the towers' LRN as a user
    writes it in torch, which has no grouped LRN."""
    torch_lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    return torch.cat([torch_lrn(half) for half in y.chunk(2, dim=1)], dim=1)


def print_row(row: dict) -> None:
    rate = f"{row['GB/s']:8.1f} GB/s ({row['of_copy_bandwidth']:.0%} of a copy)" if "GB/s" in row else \
        f"{row['TFLOP/s']:8.2f} TFLOP/s ({row['of_matmul_peak']:.0%} of a matmul)"
    print(f"{row['op']:16} {row['layer']:10} b{row['batch']:<4} {row['dtype']:9} {row['layout']} "
          f"{row['pass']:8} {row['ms']:9.3f} ms  {rate}  x{row['speedup_vs_torch']:.2f} vs torch"
          + (f"  ({row['ms_graphed']:.3f} ms as a CUDA graph)" if row["ms_graphed"] is not None else ""), flush=True)


def environment(device: str) -> dict:
    import triton

    return {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": datetime.date.today().isoformat(), "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--out", help="JSON file to write (default: bench/results/kernels-<device>-<date>.json; "
                                      "with --smoke, none)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("no CUDA device: the kernel benchmark needs a GPU (use --smoke to check the script on CPU)",
              file=sys.stderr)
        return 2
    if device == "cuda":  # torch's ops as a user runs them: TF32 and cuDNN's own autotuning on
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    results, hardware, complete = [], {}, False
    try:
        run([1] if args.smoke else args.batch, device, args.smoke, results, hardware)
        complete = True
    except KeyboardInterrupt:  # stopped (say, at a time limit): keep the rows timed so far
        print(f"interrupted after {len(results)} rows", file=sys.stderr)
    report = {**environment(device), "smoke": args.smoke, "complete": complete, "hardware": hardware,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "results": results}
    out = output_file(args.out, report)
    if out is not None:
        bench_results.write(report, out)
        print(f"wrote {out}")
    return 0 if complete else 1


def output_file(out: str | None, report: dict) -> Path | None:
    """Where the report goes: --out, else bench/results/ for a GPU run; a smoke run's timings are
    not results, so without --out it writes none."""
    if out or report["smoke"]:
        return Path(out) if out else None
    return Path(f"bench/results/kernels-{report['device'].replace(' ', '_')}-{report['date']}.json")


if __name__ == "__main__":
    sys.exit(main())
